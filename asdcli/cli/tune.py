"""``asd tune DETECTOR``: the command.

Thin: the flags in, :func:`asdcli.tune.study.run_study`, its result drawn by
:func:`asdcli.cli.render.trials_table`. The study listing of `asd report` is
:func:`asdcli.tune.study.list_studies` (rows), drawn by :func:`asdcli.cli.render.studies_table`;
:func:`default_storage` is the storage it reads by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from asdcli.cli import render
from asdcli.cli.common import err, help_default, out, resolve_settings
from asdcli.display import fmt

if TYPE_CHECKING:
    from asdcli.settings import Settings
    from asdcli.tune.objective import TrialRow
    from asdcli.tune.study import TuneResult

FLAGS = {"paths.store": "store", "paths.runs": "runs"}


def tune(
    ctx: typer.Context,
    detector: Annotated[str, typer.Argument(help="Detector to tune (see `asd train --list`).")],
    trials: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=help_default(
                "Trials the study should have (complete or pruned); running the command "
                "again with a larger number adds the difference.",
                "tune.trials",
            ),
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.001, help="Start no new trial after this many seconds."),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(
            help="Study name; the same name continues the study. \\[default: the detector's name]"
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage: a database URL (postgresql://USER:PASSWORD@HOST/DB) that "
            "workers on several machines share, or a journal file. \\[default: "
            "studies/optuna-journal.log beside the runs folder]",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Worker processes on this machine, sharing the storage.")
    ] = 1,
    holdout: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=0.99,
            help=help_default(
                "Share of the labelled test clips the search never sees; the best trial is "
                "scored on them at the end.",
                "tune.holdout",
            ),
        ),
    ] = None,
    machine: Annotated[
        list[str] | None,
        typer.Option("--machine", "-m", help="Tune on this machine type only (repeatable)."),
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help=help_default("Feature store.", "paths.store"))
    ] = None,
    runs: Annotated[
        Path | None, typer.Option(help=help_default("Runs folder.", "paths.runs"))
    ] = None,
) -> None:
    """Search a detector's hyper-parameters with Optuna (TPE); every trial is a run folder.

    The objective is the DCASE official score on the store's labelled test clips, less a
    holdout. Run the same command again to continue the study; --jobs K runs K workers, and
    several machines share one study through --storage postgresql://... Each detector's
    default search space sits beside its parameters (asdcli/detectors/params.py); `tune.spaces`
    in the settings YAML overrides it.
    """
    from asdcli.environment import preflight

    preflight("h5py", "torch", "torchaudio", "optuna")
    from asdcli.tune.study import run_study

    settings = resolve_settings(ctx, FLAGS)
    bar, count = render.count_bar("tune", err)

    def progress(done: int, total: int, row: TrialRow | None) -> None:
        count(done, total)

    with bar:
        result = run_study(
            settings,
            detector,
            trials=trials,
            study=study,
            storage=storage,
            jobs=jobs,
            holdout=holdout,
            timeout=timeout,
            machines=machine,
            progress=progress,
        )
    print_result(result)
    if result.interrupted:
        err.print(
            f"Interrupted: the running trial is marked failed; {result.finished} of "
            f"{result.wanted} trials are finished. Run the same command to continue.",
            soft_wrap=True,
        )
        raise typer.Exit(130)


def print_result(result: TuneResult) -> None:
    """The study's outcome on the two consoles."""
    for note in result.notes:
        render.warn(err, note, "note")
    out.print(result.objective, highlight=False, soft_wrap=True)
    if result.trials:
        out.print(render.trials_table(result))
    states = [t.state for t in result.trials if not t.surplus]
    lines = [
        f"Study {result.study} ({result.storage}): {states.count('complete')} complete, "
        f"{states.count('pruned')} pruned, {states.count('fail')} failed; "
        f"{result.added} finished in this call."
    ]
    if result.best is not None and result.search is not None:
        line = (
            f"Best trial {result.best.number}: official score {fmt(result.search.official_score)}"
            f" on the {result.search.n_clips} search clips"
        )
        if result.holdout is not None:
            line += (
                f", {fmt(result.holdout.official_score)} on the {result.holdout.n_clips} "
                "held-out clips"
            )
            if result.search.official_score is not None and result.holdout.official_score:
                gap = result.search.official_score - result.holdout.official_score
                line += f" (search minus holdout: {gap:+.4f}; above 0, the search flatters it)"
        lines.append(line + ".")
    if result.best_yaml is not None:
        lines.append(f"Best settings: {result.best_yaml} (asd --config {result.best_yaml} ...)")
    lines.extend(f"Figure: {path}" for path in result.figures)
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)
    if not result.interrupted and result.finished < result.wanted:
        render.warn(
            err,
            f"The study has {result.finished} of its {result.wanted} trials (failed trials do "
            "not count); run the same command to finish it.",
        )


def default_storage(settings: Settings) -> str:
    """The storage `asd tune` uses with these settings and no --storage (for `asd report`)."""
    from asdcli.tune.storage import storage_string

    return storage_string(settings, settings.tune)
