"""The ``asd`` command: thin Typer commands over the pure functions of the package.

Each command builds the settings, calls one function, and renders its result with rich.
Heavy imports (torch, h5py, matplotlib) happen inside the commands so ``asd --help`` is instant.
"""

from __future__ import annotations

import logging
import re
import traceback
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from asdcli.errors import UserError


class _Group(TyperGroup):
    """Turns errors into exit codes: user errors 2 with a short message, faults 1 with a trace."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own: usage, exit codes
            raise
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None
        except UserError as exc:
            if state.log_level == "DEBUG":
                traceback.print_exc()
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except Exception:
            traceback.print_exc()
            err.print(
                "[red]This is a bug in asd[/]: please report it with the traceback above "
                "and the command you ran.",
                highlight=False,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="asd",
    help="Unsupervised anomalous sound detection for machine condition monitoring (DCASE Task 2).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)
log = logging.getLogger("asdcli")


class _State:
    config: Path | None = None
    log_level: str = "WARNING"


state = _State()


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Settings YAML file (default: $ASD_CONFIG, else conf/config.yaml if present).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            help="DEBUG, INFO, WARNING or ERROR. DEBUG also shows tracebacks of user errors."
        ),
    ] = "WARNING",
) -> None:
    state.config = config
    state.log_level = log_level.upper()
    # Library warnings (e.g. a store with unmerged batches) as one plain line each.
    warnings.showwarning = lambda message, *args, **kwargs: err.print(
        f"[yellow]warning:[/] {message}", highlight=False
    )
    logging.basicConfig(
        level=getattr(logging, state.log_level, logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )


def _settings(**flags: Any) -> Any:
    """Resolve settings with the given flag overrides (dotted keys; None = not given)."""
    from asdcli.settings import load_settings

    settings, _ = load_settings(state.config, flags)
    return settings


# --------------------------------------------------------------------------- synth


_SYNTH_FLAGS = {
    "n_train": "--train",
    "n_test": "--test",
    "target_train": "--target-train",
    "sample_rate": "--sample-rate",
    "machines": "--machines",
    "seconds": "--seconds",
    "difficulty": "--difficulty",
    "seed": "--seed",
}


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the dataset to.")],
    machines: Annotated[
        str, typer.Option(help="Comma-separated machine types.")
    ] = "bearing,fan,gearbox,valve,slider",
    train: Annotated[int, typer.Option(help="Training clips per machine (source + target).")] = 100,
    target_train: Annotated[
        int | None,
        typer.Option(help="Target-domain training clips per machine (default: 1 %, at least 1)."),
    ] = None,
    test: Annotated[int, typer.Option(help="Test clips per machine, balanced 4 ways.")] = 40,
    seconds: Annotated[float, typer.Option(help="Clip length in seconds.")] = 10.0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate in Hz.")] = 16000,
    difficulty: Annotated[
        float, typer.Option(help="0 = obvious anomalies ... 1 = subtle ones.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
) -> None:
    """Generate synthetic machine sounds in the DCASE 2023 layout and naming.

    Writes OUT/<machine>/train/section_00_source_train_normal_0000_<attr>_<val>.wav,
    OUT/<machine>/test/... (normal/anomaly x source/target) and attributes_00.csv per machine.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from asdcli.synth import synthesize

    names = [m.strip() for m in machines.split(",") if m.strip()]
    with Progress(
        TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    ) as bar:
        task = bar.add_task("synth", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = synthesize(
                out_dir,
                machines=names,
                n_train=train,
                n_test=test,
                seconds=seconds,
                sample_rate=sample_rate,
                difficulty=difficulty,
                seed=seed,
                target_train=target_train,
                progress=progress,
            )
        except ValueError as exc:
            # The library names its arguments; a CLI user knows them as flags.
            message = str(exc)
            for arg, flag in _SYNTH_FLAGS.items():
                message = re.sub(rf"\b{arg}\b", flag, message)
            raise UserError(message) from None
    table = Table(title=f"Synthetic dataset in {out_dir}")
    for col in ("machine", "train source", "train target", "test source n/a", "test target n/a"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for machine, c in summary.counts.items():
        table.add_row(
            machine,
            str(c["train_source"]),
            str(c["train_target"]),
            f"{c['test_source_normal']}/{c['test_source_anomaly']}",
            f"{c['test_target_normal']}/{c['test_target_anomaly']}",
        )
    out.print(table)
    out.print(f"Wrote in {summary.seconds:.1f} s. Next: asd featurize {out_dir}")


# --------------------------------------------------------------------------- featurize


@app.command()
def featurize(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Machine folders (with train/ and test/), folders of them, or WAV files.",
        ),
    ],
    store: Annotated[
        Path | None, typer.Option(help="Feature store file [default: paths.store, features.h5].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes; 0 = one per CPU core [default: 1].")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute cached clips.")] = False,
    strict: Annotated[
        bool | None,
        typer.Option("--strict/--no-strict", help="Stop at the first unreadable file."),
    ] = None,
) -> None:
    """Compute log-mel features of every WAV file and cache them in an HDF5 store.

    Clips already in the store with the same feature settings (and unchanged files) are not
    recomputed. Unreadable files are skipped with a warning (--strict makes them an error).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from asdcli.featurize import featurize as run_featurize

    settings = _settings(
        **{"paths.store": store, "featurize.workers": workers, "featurize.strict": strict}
    )
    store_path = settings.paths.store
    with Progress(
        TextColumn("featurize"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("featurize", total=None, rate="")

        def progress(done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(
                task, completed=done, total=total, rate=f"{speed:.0f} clips/s" if speed else ""
            )

        summary = run_featurize(
            paths,
            settings.features,
            store_path,
            workers=settings.featurize.workers,
            force=force,
            strict=settings.featurize.strict,
            batch_clips=settings.featurize.batch_clips,
            progress=progress,
        )

    for note in summary.warnings:
        err.print(f"[yellow]warning:[/] {note}")
    for rate, n in sorted(summary.resampled.items()):
        err.print(
            f"[yellow]warning:[/] resampled {n} file(s) from {rate} Hz to "
            f"{settings.features.sample_rate} Hz"
        )
    if summary.multichannel:
        err.print(f"[yellow]note:[/] mixed {summary.multichannel} multi-channel file(s) to mono")
    for path, reason in summary.skipped:
        err.print(f"[yellow]skipped:[/] {path} {reason}")

    table = Table(title=f"{store_path} · feature set {summary.key}")
    for col in ("machine", "clips", "new", "cached", "skipped"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for machine, c in sorted(summary.machines.items()):
        table.add_row(machine, str(c.clips), str(c.new), str(c.cached), str(c.skipped))
    out.print(table)
    if summary.interrupted:
        err.print(
            f"Interrupted: {summary.new} new clip(s) were saved. Run the same command to finish."
        )
        raise typer.Exit(130)
    if summary.new == 0 and not summary.skipped:
        out.print(f"All {summary.cached} clips were cached: nothing to compute.")
    else:
        speed = summary.new / summary.seconds if summary.seconds else 0.0
        out.print(
            f"{summary.new} computed, {summary.cached} cached, {len(summary.skipped)} skipped "
            f"in {summary.seconds:.1f} s ({speed:.0f} clips/s)."
        )


# --------------------------------------------------------------------------- config


@app.command("config")
def config_cmd(
    show_all: Annotated[
        bool, typer.Option("--all/--changed", help="Show every setting, or only non-defaults.")
    ] = True,
) -> None:
    """Print the resolved settings and where each non-default value came from."""
    from asdcli.settings import _flatten, config_path, load_settings

    settings, sources = load_settings(state.config, {})
    path = config_path(state.config)
    out.print(f"config file: {path if path else '(none)'}")
    table = Table()
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from")
    for key, value in _flatten(settings.model_dump(mode="json")).items():
        if show_all or key in sources:
            table.add_row(key, repr(value), sources.get(key, "default"))
    out.print(table)


# --------------------------------------------------------------------------- train


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["n_neighbors=10", "hidden=[64, 32]"]`` -> values parsed as YAML scalars/lists."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--param {item!r}: expected KEY=VALUE, e.g. --param n_neighbors=10.")
        try:
            parsed[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--param {item!r}: {value!r} is not a valid value.") from None
    return parsed


def _train_progress() -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from asdcli.train import JOINT

    bar = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        console=err,
    )
    tasks: dict[str, Any] = {}

    def progress(machine: str, event: dict[str, Any]) -> None:
        if event.get("event") == "start":
            tasks[machine] = bar.add_task(machine, total=event["epochs"] or None, losses="")
        elif event.get("event") == "done":
            # A joint detector (emb-knn) trains once, as "all", then reports each machine done.
            task = tasks[machine] if machine in tasks else tasks[JOINT]
            bar.update(task, total=max(event["epochs"], 1), completed=max(event["epochs"], 1))
        else:
            val = event.get("val_loss")
            losses = f"loss {event['loss']:.4f}" + (f"  val {val:.4f}" if val is not None else "")
            bar.update(tasks[machine], completed=event["epoch"], losses=losses)

    return bar, progress


@app.command()
def train(
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
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs [default: 30].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Mini-batch size [default: 64].")] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="Adam learning rate [default: 1e-3].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [default: 0].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [default: auto].")] = None,
    score_kind: Annotated[
        str | None,
        typer.Option("--score", help="dcase-ae clip score: mse or mahalanobis [default: mse]."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="Detector hyper-parameter KEY=VALUE (repeatable), see asd config."
        ),
    ] = None,
    members: Annotated[
        str | None,
        typer.Option(
            help="ensemble only: comma-separated runs (folders or names under the runs folder) "
            "or detector names, e.g. RUN1,RUN2 or lof,gmm."
        ),
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="Feature store [default: features.h5].")
    ] = None,
    runs: Annotated[Path | None, typer.Option(help="Runs folder [default: runs].")] = None,
    do_evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Then score the test clips and evaluate.")
    ] = False,
) -> None:
    """Train one detector per machine type on the feature store; writes a run folder."""
    from asdcli.detectors import canonical_name, list_detectors, params_key

    if list_:
        table = Table(title="Detectors")
        table.add_column("name")
        table.add_column("description")
        for name, description in list_detectors():
            table.add_row(name, description)
        out.print(table)
        return
    if detector is None:
        raise UserError("Name a detector, e.g. `asd train conv-ae`; `asd train --list` lists them.")
    from asdcli.train import resolve_detector
    from asdcli.train import train as run_train

    resolve_detector(detector)
    section = params_key(canonical_name(detector))
    flags: dict[str, Any] = {
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.learning_rate": learning_rate,
        "train.seed": seed,
        "train.device": device,
        "paths.store": store,
        "paths.runs": runs,
    }
    if score_kind is not None:
        if section != "dcase_ae":
            raise UserError("--score applies to dcase-ae only; other detectors have one score.")
        flags["detectors.dcase_ae.score"] = score_kind
    if members is not None:
        if section != "ensemble":
            raise UserError(
                "--members applies to ensemble only: `asd train ensemble --members A,B`."
            )
        flags["detectors.ensemble.members"] = [m.strip() for m in members.split(",") if m.strip()]
    for name, value in _parse_params(param).items():
        flags[f"detectors.{section}.{name}"] = value
    settings = _settings(**flags)

    bar, progress = _train_progress()
    with bar:
        result = run_train(settings, detector, machine, progress=progress)
    table = Table(title=f"{result.run.detector} · {result.run.path}")
    for col in ("machine", "epochs", "seconds", "parameters", "threshold"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for name, m in result.machines.items():
        table.add_row(
            name,
            str(m["epochs"]),
            f"{m['seconds']:.1f}",
            f"{m['n_params']:,}",
            f"{m['threshold']:.4g}",
        )
    out.print(table)
    if result.interrupted:
        err.print(
            f"Interrupted: run {result.run.path} is marked incomplete; the best weights so far "
            "are saved."
        )
        raise typer.Exit(130)
    out.print(f"Run written to {result.run.path}")
    if do_evaluate:
        _score_and_evaluate(result.run.path, settings.paths.store, settings.evaluation.max_fpr)


# --------------------------------------------------------------------------- score / evaluate


def _resolve_run(run: Path | None, latest: bool, runs_root: Path) -> Path:
    from asdcli.runs import latest_run

    if run is not None and latest:
        raise UserError("Give a run folder or --latest, not both.")
    if run is None:
        if not latest:
            raise UserError("Give a run folder (see `asd report`) or --latest.")
        return latest_run(runs_root)
    return run


def _print_score(result: Any) -> None:
    for m, n in result.skipped_machines.items():
        err.print(f"[yellow]warning:[/] {n} clip(s) of {m} not scored: the run has no {m} model")
    if result.replaced:
        err.print(
            f"[yellow]note:[/] removed {len(result.replaced)} submission file(s) of an earlier "
            f"scoring from {result.out}"
        )
    if result.metrics_set_aside:
        err.print(
            f"[yellow]note:[/] the earlier metrics of this run were moved to "
            f"{result.metrics_set_aside[0].name}; run `asd evaluate` for the new scores"
        )
    total = sum(result.counts.values())
    out.print(
        f"Scored {total} clip(s) of {len(result.counts)} machine type(s); "
        f"{len(result.files)} submission file(s) in {result.out}"
    )


def _print_evaluation(result: Any) -> None:
    from asdcli.evaluate import rich_table

    out.print(rich_table(result))
    out.print(
        f"Metrics in {result.metrics_json}; figures in {result.metrics_json.parent / 'figures'}"
    )


def _score_and_evaluate(run: Path, store: Path, max_fpr: float) -> None:
    from asdcli.evaluate import evaluate_run
    from asdcli.score import score_run

    _print_score(score_run(run, store))
    _print_evaluation(evaluate_run(run, max_fpr=max_fpr))


@app.command()
def score(
    run: Annotated[Path | None, typer.Argument(help="Run folder (from asd train).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest complete run.")] = False,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Files or folders to score (featurized first, cached)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the CSVs [default: RUN/scores].")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="Feature store [default: features.h5].")
    ] = None,
    runs: Annotated[Path | None, typer.Option(help="Runs folder for --latest.")] = None,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Score with an interrupted run's weights.")
    ] = False,
) -> None:
    """Score test clips with a run's models; writes the DCASE submission CSV files."""
    from asdcli.score import score_run

    settings = _settings(**{"paths.store": store, "paths.runs": runs})
    path = _resolve_run(run, latest, settings.paths.runs)
    _print_score(
        score_run(
            path,
            settings.paths.store,
            data=data,
            out=out_dir,
            allow_incomplete=allow_incomplete,
            workers=settings.featurize.workers,
        )
    )


@app.command()
def evaluate(
    run: Annotated[Path | None, typer.Argument(help="Run folder (scored with asd score).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest complete run.")] = False,
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            help="Folder with the evaluator's ground_truth_data/ and ground_truth_domain/ CSVs.",
        ),
    ] = None,
    runs: Annotated[Path | None, typer.Option(help="Runs folder for --latest.")] = None,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw figures.")] = True,
) -> None:
    """Compute AUC, pAUC and the DCASE official score of a scored run, with figures."""
    from asdcli.evaluate import evaluate_run

    settings = _settings(**{"paths.runs": runs})
    path = _resolve_run(run, latest, settings.paths.runs)
    _print_evaluation(
        evaluate_run(
            path, ground_truth=ground_truth, max_fpr=settings.evaluation.max_fpr, figures=figures
        )
    )


@app.command()
def report(
    compare: Annotated[
        bool, typer.Option("--compare", help="Rank evaluated runs; write report.md and a figure.")
    ] = False,
    runs: Annotated[Path | None, typer.Option(help="Runs folder [default: runs].")] = None,
) -> None:
    """List runs (status, scores, training time); --compare ranks them side by side."""
    from asdcli import report as rep

    settings = _settings(**{"paths.runs": runs})
    root = settings.paths.runs
    if not compare:
        rows = rep.list_report(root)
        if not rows:
            raise UserError(f"No runs under {root}; train one with `asd train DETECTOR`.")
        out.print(rep.rich_table(rows))
        return
    comparison = rep.compare(root, out_md=root / "report.md", figure=root / "comparison.png")
    out.print(rep.comparison_table(comparison))
    out.print(f"Wrote {root / 'report.md'} and {root / 'comparison.png'}")


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the demo's data, store and runs.")
    ] = Path("asd-demo"),
) -> None:
    """Run the whole pipeline on built-in synthetic data: synth, featurize, train, evaluate."""
    from asdcli.demo import run_demo

    run_demo(out_dir, out, err)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="asd")
