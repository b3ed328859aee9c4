"""``asd demo``: the whole pipeline on built-in synthetic machine sounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asdcli.cli.common import err, out


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the demo's data, store and runs.")
    ] = Path("asd-demo"),
) -> None:
    """Run the whole pipeline on built-in synthetic data: synth, featurize, train, evaluate."""
    from asdcli.demo import run_demo
    from asdcli.environment import preflight

    preflight("soundfile", "h5py", "torch", "torchaudio")
    run_demo(out_dir, out, err)
