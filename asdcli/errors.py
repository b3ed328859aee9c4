"""Errors the user can fix. The CLI prints their message (one or two lines) and exits with 2.

Anything else that escapes a command is a fault of the tool: exit 1 with the traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the input, the settings or the environment that the user can fix.

    The message says what is wrong and, where possible, how to fix it.
    """

    exit_code = 2


class SettingsError(UserError):
    """Invalid settings: YAML syntax, unknown keys, impossible values, bad ASD_ variables."""


class DataError(UserError):
    """Missing paths, folders without audio, unreadable files in --strict mode."""


class StoreError(UserError):
    """A feature store that cannot be used: not HDF5, another layout version, locked."""


class RunError(UserError):
    """A run folder that cannot be used: incomplete, another version, missing a machine."""
