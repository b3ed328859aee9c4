"""``asd config``: the resolved settings and where each value came from."""

from __future__ import annotations

from typing import Annotated

import typer

from asdcli.cli import render
from asdcli.cli.common import out, state


def config(
    show_all: Annotated[
        bool, typer.Option("--all/--changed", help="Show every setting, or only non-defaults.")
    ] = True,
) -> None:
    """Print the resolved settings and where each non-default value came from."""
    from asdcli.settings import config_path, flat_settings, load_settings

    settings, sources = load_settings(state.config, {})
    path = config_path(state.config)
    out.print(f"config file: {path if path else '(none)'}")
    rows = [
        (key, value, sources.get(key, "default"))
        for key, value in flat_settings(settings).items()
        if show_all or key in sources
    ]
    out.print(render.settings_table(rows))
