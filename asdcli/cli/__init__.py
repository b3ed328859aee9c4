"""The ``asd`` command: thin Typer commands over the pure functions of the package.

Each command builds the settings, calls one function, and renders its result with
:mod:`asdcli.cli.render`. Commands live in one module per group and are registered here, in one
place (a command never registers itself as a side effect of an import). Heavy imports (torch,
h5py, matplotlib) happen inside the commands so that ``asd --help`` is instant.
"""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from asdcli.cli import config, data, demo, monitor, report, scoring, train, tune
from asdcli.cli.common import err, quiet_stdout, state
from asdcli.errors import UserError
from asdcli.interrupts import keep_ctrl_c

__all__ = ["COMMANDS", "app", "build_app", "invoked_command", "main"]


class _Group(TyperGroup):
    """Turns errors into exit codes: user errors 2 with a short message, a broken install 1
    with the fix, faults of the tool 1 with a trace."""

    def invoke(self, ctx: Any) -> Any:
        keep_ctrl_c()
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
COMMANDS: dict[str, Callable[..., Any]] = {
    "synth": data.synth,
    "featurize": data.featurize,
    "train": train.train,
    "score": scoring.score,
    "evaluate": scoring.evaluate,
    "report": report.report,
    "tune": tune.tune,
    "serve": monitor.serve,
    "watch": monitor.watch,
    "history": monitor.history,
    "demo": demo.demo,
    "config": config.config,
}
# The root options that take a value: what follows them is not a command name.
_ROOT_VALUED = ("--config", "-c", "--log-level")
# The same options with their value attached: ``--name=value``, or ``-cvalue``.
_ROOT_ATTACHED = tuple(o + "=" if o.startswith("--") else o for o in _ROOT_VALUED)


def build_app(only: str | None = None) -> typer.Typer:
    """The ``asd`` app with every command, or with the one command ``only``."""
    built = typer.Typer(
        cls=_Group,
        name="asd",
        help=(
            "Unsupervised anomalous sound detection for machine condition monitoring "
            "(DCASE Task 2)."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",
    )
    built.callback()(_root)
    for name, command in COMMANDS.items():
        if only in (None, name):
            built.command(name)(command)
    return built


app = build_app()


def invoked_command(argv: list[str]) -> str | None:
    """The command that ``argv`` (the arguments after ``asd``) runs; None when that is not
    plain (no command, top-level help, an unknown command or option)."""
    args = iter(argv)
    for arg in args:
        if arg in _ROOT_VALUED:
            next(args, None)
        elif arg.startswith(_ROOT_ATTACHED) and len(arg) > 2:  # --config=F, --log-level=X, -cF
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from asdcli.allocator import keep_freed_memory

    keep_freed_memory()  # first: it applies to the allocations that follow
    args = sys.argv[1:] if argv is None else argv
    # Typer builds every command's options before it runs one (about 30 ms for all of
    # them); an app of the invoked command alone starts faster and parses the same.
    command = invoked_command(args)
    try:
        (app if command is None else build_app(command))(args=args, prog_name="asd")
    except BrokenPipeError:  # raised outside a command, e.g. by `asd --help | head -1`
        quiet_stdout()
        raise SystemExit(0) from None
