"""Broken installs: tell an environment problem from a bug in asd, and say how to fix it.

torch, torchaudio, h5py and soundfile load compiled libraries. A mismatched pair (torchaudio
built for another torch) or a missing system library fails at import time with an
``ImportError`` or ``OSError`` deep inside that package. :func:`diagnose` recognises such a
failure and returns a short message naming the package, the installed versions and the
command that installs the versions asd is tested with (pinned in ``pyproject.toml``).
"""

from __future__ import annotations

import re
import traceback
from importlib import metadata

# Import name -> distribution name of the packages with compiled parts that asd loads.
PACKAGES = {"torch": "torch", "torchaudio": "torchaudio", "h5py": "h5py", "soundfile": "soundfile"}


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pinned_requirements() -> dict[str, str]:
    """Distribution -> requirement string, as asd's own metadata declares them."""
    try:
        requires = metadata.requires("asdcli") or []
    except metadata.PackageNotFoundError:
        return {}
    out = {}
    for req in requires:
        if ";" in req:  # extras and markers: not part of the base install
            continue
        name = re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].strip().lower()
        out[name] = req.replace(" ", "")
    return out


def _failing_package(exc: BaseException) -> str | None:
    """The package of PACKAGES whose import raised ``exc``, or None if it is not one of them."""
    name = getattr(exc, "name", None)
    if isinstance(name, str) and name.split(".")[0] in PACKAGES:
        return name.split(".")[0]
    # A failure inside the package's own files (a library that would not load).
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = re.split(r"[\\/]", frame.filename)
        for pkg in PACKAGES:
            if pkg in parts and ("site-packages" in parts or "dist-packages" in parts):
                return pkg
    text = str(exc)
    for pkg in sorted(PACKAGES, key=len, reverse=True):  # torchaudio before torch
        if re.search(rf"\blib{pkg}\b|\b{pkg}[\\/]", text):
            return pkg
    return None


def diagnose(exc: BaseException) -> str | None:
    """A one- or two-line message when ``exc`` is a broken or missing install, else None."""
    if not isinstance(exc, ImportError | OSError):
        return None
    pkg = _failing_package(exc)
    if pkg is None:
        return None
    pins = pinned_requirements()
    involved = [pkg, "torch"] if pkg == "torchaudio" else [pkg]
    found = ", ".join(f"{d} {installed_version(d) or 'not installed'}" for d in involved)
    wanted = " ".join(f"'{pins.get(d, d)}'" for d in involved)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"{pkg} cannot be loaded ({found}): {first[:200]}\n"
        f"This is an installation problem, not a bug in asd. Fix: pip install {wanted}"
    )


def preflight(*modules: str) -> None:
    """Import ``modules`` now, so a broken install fails before any work, not halfway through
    (``asd demo`` would otherwise stop at its first detector that uses torchaudio). The import
    error propagates; the CLI turns it into :func:`diagnose`'s message."""
    import importlib

    for name in modules:
        importlib.import_module(name)
