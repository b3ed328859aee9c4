"""``asd report``: every run with its status and scores; ``--compare`` ranks them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asdcli.cli import render
from asdcli.cli.common import help_default, out, resolve_settings
from asdcli.errors import UserError


def report(
    ctx: typer.Context,
    compare: Annotated[
        bool, typer.Option("--compare", help="Rank evaluated runs; write report.md and a figure.")
    ] = False,
    runs: Annotated[
        Path | None, typer.Option(help=help_default("Runs folder.", "paths.runs"))
    ] = None,
) -> None:
    """List runs (status, scores, training time); --compare ranks them side by side."""
    from asdcli import report as rep

    root = resolve_settings(ctx, {"paths.runs": "runs"}).paths.runs
    if not compare:
        rows = rep.list_report(root)
        if not rows:
            raise UserError(f"No runs under {root}; train one with `asd train DETECTOR`.")
        out.print(render.runs_table(rows))
        return
    comparison = rep.compare(root, out_md=root / "report.md", figure=root / "comparison.png")
    out.print(render.comparison_table(comparison))
    out.print(f"Wrote {root / 'report.md'} and {root / 'comparison.png'}")
