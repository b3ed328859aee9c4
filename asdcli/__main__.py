"""``python -m asdcli`` is the same as the ``asd`` command."""

from asdcli.cli import main

main()
