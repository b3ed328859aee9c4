"""What every command shares: the two consoles, the global options, settings from flags.

Commands name the settings their flags override as ``{dotted key: parameter name}``;
:func:`resolve_settings` reads the values and the flags' spelling from the command's own
option table, so an error message names the flag the user typed (``--lr``, not a guess).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from asdcli.errors import UserError

if TYPE_CHECKING:
    from asdcli.settings import Settings

out = Console()
err = Console(stderr=True)


class State:
    """The root callback's options, for the command that runs after it."""

    config: Path | None = None
    log_level: str = "WARNING"


state = State()


def help_default(text: str, dotted: str) -> str:
    """Help text ending in the setting's default, taken from the settings model (never retyped).

    The flag's own default stays None ("not given"), so YAML and ASD_ variables still apply.
    """
    from asdcli.settings import default_value

    value = default_value(dotted)
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{text} \\[default: {shown}]"  # \[ : a literal bracket, not rich markup


def flag_of(ctx: typer.Context, param: str) -> str:
    """The longest spelling of the command's option ``param`` (``learning_rate`` -> ``--lr``)."""
    for p in ctx.command.params:
        if p.name == param and p.opts:
            return max(p.opts, key=len)
    raise KeyError(param)  # a command naming a parameter it does not have: a bug


def resolve_settings(
    ctx: typer.Context,
    flags: dict[str, str],
    extra: dict[str, tuple[Any, str]] | None = None,
) -> Settings:
    """The settings with this command's flags on top.

    Parameters
    ----------
    flags : dotted key -> the command's parameter that overrides it (None = not given).
    extra : dotted key -> (value, how to name it), for overrides that are not one flag each
        (``-p n_neighbors=10`` is named ``-p n_neighbors``).
    """
    from asdcli.settings import load_settings

    overrides = {key: ctx.params.get(param) for key, param in flags.items()}
    names = {key: flag_of(ctx, param) for key, param in flags.items()}
    for key, (value, name) in (extra or {}).items():
        overrides[key], names[key] = value, name
    settings, _ = load_settings(state.config, overrides, names)
    return settings


def parse_params(items: list[str] | None) -> dict[str, Any]:
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


def resolve_run(run: Path | None, latest: bool, runs_root: Path) -> Path:
    """The run folder a command works on: the one given, or the newest complete one."""
    from asdcli.runs import latest_run

    if run is not None and latest:
        raise UserError("Give a run folder or --latest, not both.")
    if run is None:
        if not latest:
            raise UserError("Give a run folder (see `asd report`) or --latest.")
        return latest_run(runs_root)
    return run


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises no BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
