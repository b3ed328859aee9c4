"""``asd score`` (the DCASE submission files) and ``asd evaluate`` (AUC, pAUC, official score)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asdcli.cli import render
from asdcli.cli.common import err, help_default, out, resolve_run, resolve_settings


def score(
    ctx: typer.Context,
    run: Annotated[Path | None, typer.Argument(help="Run folder (from asd train).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest complete run.")] = False,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Files or folders to score (featurized first, cached)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the CSVs \\[default: RUN/scores].")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help=help_default("Feature store.", "paths.store"))
    ] = None,
    runs: Annotated[
        Path | None, typer.Option(help=help_default("Runs folder for --latest.", "paths.runs"))
    ] = None,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Score with an interrupted run's weights.")
    ] = False,
    trust_modified: Annotated[
        bool,
        typer.Option(
            "--trust-modified",
            help="Score a run whose model files changed after training (you changed them on "
            "purpose); without it such a run is refused.",
        ),
    ] = False,
) -> None:
    """Score test clips with a run's models; writes the DCASE submission CSV files.

    The run's model files are checked against the hashes its manifest recorded at training.
    """
    from asdcli.score import score_run

    settings = resolve_settings(ctx, {"paths.store": "store", "paths.runs": "runs"})
    path = resolve_run(run, latest, settings.paths.runs)
    result = score_run(
        path,
        settings.paths.store,
        data=data,
        out=out_dir,
        allow_incomplete=allow_incomplete,
        trust_modified=trust_modified,
        workers=settings.featurize.workers,
    )
    render.print_score(result, out, err)


def evaluate(
    ctx: typer.Context,
    run: Annotated[Path | None, typer.Argument(help="Run folder (scored with asd score).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest complete run.")] = False,
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            help="Folder with the evaluator's ground_truth_data/ and ground_truth_domain/ CSVs.",
        ),
    ] = None,
    runs: Annotated[
        Path | None, typer.Option(help=help_default("Runs folder for --latest.", "paths.runs"))
    ] = None,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw figures.")] = True,
) -> None:
    """Compute AUC, pAUC and the DCASE official score of a scored run, with figures."""
    from asdcli.evaluate import evaluate_run

    settings = resolve_settings(ctx, {"paths.runs": "runs"})
    path = resolve_run(run, latest, settings.paths.runs)
    result = evaluate_run(
        path, ground_truth=ground_truth, max_fpr=settings.evaluation.max_fpr, figures=figures
    )
    render.print_evaluation(result, out)
