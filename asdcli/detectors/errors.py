"""Errors raised by the detector registry and the device resolution.

Both are :class:`ValueError` (for library callers) and :class:`~asdcli.errors.UserError` (so the
CLI prints the message and exits with 2). This module imports neither torch nor scikit-learn.
"""

from __future__ import annotations

from asdcli.errors import UserError


class UnknownDetectorError(UserError, ValueError):
    """A detector name that is neither registered nor an alias; the message lists known names."""


class DeviceUnavailableError(UserError, ValueError):
    """``--device cuda`` was requested on a machine without a CUDA device."""
