"""The ``asd`` command: thin Typer commands over the pure functions of the package.

Each command builds the settings, calls one function, and renders its result with
:mod:`asdcli.cli.render`. Commands live in one module per group and are registered here, in one
place (a command never registers itself as a side effect of an import). Heavy imports (torch,
h5py, matplotlib) happen inside the commands so that ``asd --help`` is instant.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from asdcli.cli import config, data, demo, monitor, report, scoring, train, tune
from asdcli.cli.common import err, quiet_stdout, state
from asdcli.errors import UserError

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """Turns errors into exit codes: user errors 2 with a short message, a broken install 1
    with the fix, faults of the tool 1 with a trace."""

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
        except BrokenPipeError:
            quiet_stdout()  # `asd ... | head`: the reader left; nothing more to say
            raise typer.Exit(0) from None
        except Exception as exc:
            from asdcli.environment import diagnose

            problem = diagnose(exc)
            if problem is not None:
                if state.log_level == "DEBUG":
                    traceback.print_exc()
                err.print(f"[red]error:[/] {problem}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
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


@app.callback()
def _root(
    config_file: Annotated[
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
    state.config = config_file
    state.log_level = log_level.upper()
    # Library warnings (e.g. a store with unmerged batches) as one plain line each.
    warnings.showwarning = lambda message, *args, **kwargs: err.print(
        f"[yellow]warning:[/] {message}", highlight=False
    )
    logging.basicConfig(
        level=getattr(logging, state.log_level, logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )


# Every command, in the order `asd --help` lists them.
app.command("synth")(data.synth)
app.command("featurize")(data.featurize)
app.command("train")(train.train)
app.command("score")(scoring.score)
app.command("evaluate")(scoring.evaluate)
app.command("report")(report.report)
app.command("tune")(tune.tune)
app.command("serve")(monitor.serve)
app.command("watch")(monitor.watch)
app.command("history")(monitor.history)
app.command("demo")(demo.demo)
app.command("config")(config.config)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="asd")
    except BrokenPipeError:  # raised outside a command, e.g. by `asd --help | head -1`
        quiet_stdout()
        raise SystemExit(0) from None
