"""``asd report``: every run with its status and scores; ``--compare`` ranks them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from asdcli.cli import render
from asdcli.cli.common import help_default, out, resolve_settings
from asdcli.errors import UserError

if TYPE_CHECKING:
    from rich.table import Table

    from asdcli.settings import Settings


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

    settings = resolve_settings(ctx, {"paths.runs": "runs"})
    root = settings.paths.runs
    if not compare:
        rows = rep.list_report(root)
        if not rows:
            raise UserError(f"No runs under {root}; train one with `asd train DETECTOR`.")
        out.print(render.runs_table(rows))
        studies = _studies(settings)
        if studies is not None:
            out.print(studies)
        return
    comparison = rep.compare(root, out_md=root / "report.md", figure=root / "comparison.png")
    out.print(render.comparison_table(comparison))
    out.print(f"Wrote {root / 'report.md'} and {root / 'comparison.png'}")


def _studies(settings: Settings) -> Table | None:
    """The `asd tune` studies beside the runs, when there are any (optuna loads only then)."""
    from asdcli.cli.tune import default_storage

    storage = default_storage(settings)
    if "://" not in storage and not Path(storage).is_file():
        return None
    from asdcli.tune.study import list_studies

    rows = list_studies(storage)
    return render.studies_table(rows) if rows else None
