"""``asd train DETECTOR``: one model per machine type, written as a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from asdcli.cli import render
from asdcli.cli.common import err, help_default, out, parse_params, resolve_settings
from asdcli.errors import UserError

# Settings this command's flags override: dotted key -> parameter.
FLAGS = {
    "train.epochs": "epochs",
    "train.batch_size": "batch_size",
    "train.learning_rate": "learning_rate",
    "train.seed": "seed",
    "train.device": "device",
    "paths.store": "store",
    "paths.runs": "runs",
}


def train(
    ctx: typer.Context,
    detector: Annotated[
        str | None,
        typer.Argument(
            help="Detector name (see --list); seed names such as conv_autoencoder work."
        ),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the detectors and exit.")] = False,
    machine: Annotated[
        list[str] | None,
        typer.Option("--machine", "-m", help="Train only this machine type (repeatable)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help=help_default("Maximum epochs.", "train.epochs"))
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=help_default("Mini-batch size.", "train.batch_size"))
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option("--lr", help=help_default("Adam learning rate.", "train.learning_rate")),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=help_default("Random seed.", "train.seed"))
    ] = None,
    device: Annotated[
        str | None, typer.Option(help=help_default("auto, cpu or cuda.", "train.device"))
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Detector hyper-parameter KEY=VALUE (repeatable), e.g. -p n_neighbors=10 or "
            "-p score=mahalanobis (dcase-ae); `asd config` lists each detector's.",
        ),
    ] = None,
    members: Annotated[
        str | None,
        typer.Option(
            help="Shorthand for -p members=A,B (ensemble): runs (folders or names under the "
            "runs folder) or detector names, e.g. RUN1,RUN2 or knn,gmm."
        ),
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help=help_default("Feature store.", "paths.store"))
    ] = None,
    runs: Annotated[
        Path | None, typer.Option(help=help_default("Runs folder.", "paths.runs"))
    ] = None,
    do_evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Then score the test clips and evaluate.")
    ] = False,
) -> None:
    """Train one detector per machine type on the feature store; writes a run folder."""
    from asdcli.detectors import list_detectors

    if list_:
        out.print(render.detectors_table(list_detectors()))
        return
    if detector is None:
        raise UserError("Name a detector, e.g. `asd train knn`; `asd train --list` lists them.")
    from asdcli.environment import preflight
    from asdcli.train import JOINT, resolve_detector
    from asdcli.train import train as run_train

    preflight("h5py", "torch", "torchaudio")
    cls = resolve_detector(detector)
    params = parse_params(param)
    named = {name: f"-p {name}" for name in params}
    if members is not None:
        params["members"], named["members"] = members, "--members"
    section = f"detectors.{cls.name.replace('-', '_')}"
    known = cls.params_cls.model_fields
    for name, flag in named.items():
        if name not in known:
            raise UserError(
                f"{flag}: {cls.name} has no parameter {name!r}; its parameters: "
                f"{', '.join(known) or 'none'} (`asd config` shows their values)."
            )
    extra: dict[str, tuple[Any, str]] = {
        f"{section}.{name}": (value, named[name]) for name, value in params.items()
    }
    settings = resolve_settings(ctx, FLAGS, extra)

    bar, progress = render.train_bar(err, JOINT)
    with bar:
        result = run_train(settings, detector, machine, progress=progress)
    out.print(render.train_table(result))
    if result.interrupted:
        err.print(
            f"Interrupted: run {result.run.path} is marked incomplete; the best weights so far "
            "are saved."
        )
        raise typer.Exit(130)
    out.print(f"Run written to {result.run.path}")
    if do_evaluate:
        from asdcli.evaluate import evaluate_run
        from asdcli.score import score_run

        render.print_score(score_run(result.run.path, settings.paths.store), out, err)
        render.print_evaluation(
            evaluate_run(result.run.path, max_fpr=settings.evaluation.max_fpr), out
        )
