"""The ``asd`` command: thin Typer commands over the pure functions of the package.

Each command builds the settings, calls one function, and renders its result with rich.
Heavy imports (torch, h5py, matplotlib) happen inside the commands so ``asd --help`` is instant.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from asdcli.errors import UserError


class _Group(TyperGroup):
    """Turns errors into exit codes: user errors 2 with a short message, faults 1 with a trace."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
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
            raise UserError(str(exc)) from None
    table = Table(title=f"Synthetic dataset in {out_dir}")
    table.add_column("machine")
    columns = sorted({c for counts in summary.counts.values() for c in counts})
    for c in columns:
        table.add_column(c, justify="right")
    for machine, counts in summary.counts.items():
        table.add_row(machine, *(str(counts.get(c, 0)) for c in columns))
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
        rate = summary.new / summary.seconds if summary.seconds else 0.0
        out.print(
            f"{summary.new} computed, {summary.cached} cached, {len(summary.skipped)} skipped "
            f"in {summary.seconds:.1f} s ({rate:.0f} clips/s)."
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


# --------------------------------------------------------------------------- later issues


def _not_yet(name: str) -> None:
    raise UserError(f"`asd {name}` is not available yet in this version.")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """Train a detector on the feature store (not available yet)."""
    _not_yet("train")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def score() -> None:
    """Score test clips with a trained run (not available yet)."""
    _not_yet("score")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate() -> None:
    """Compute AUC, pAUC and the DCASE official score of a run (not available yet)."""
    _not_yet("evaluate")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def report() -> None:
    """List and compare runs (not available yet)."""
    _not_yet("report")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def demo() -> None:
    """Run the whole pipeline on built-in synthetic data (not available yet)."""
    _not_yet("demo")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="asd")
