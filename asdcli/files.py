"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every file of a run (settings, manifest, metrics, CSVs, figures) goes through these: written to
a temporary name in the same folder, flushed, then renamed over the target. :func:`write_files`
does the same for a set of files that belong together: all of them are written before any
replaces its target, so a full disk leaves the old set as it was.

A full disk (``ENOSPC``, or a full quota) is the user's to fix, not a fault of the tool: it
raises :class:`DiskFullError`, a :class:`~asdcli.errors.UserError`, naming the file, and the
target keeps its old content.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdcli.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(UserError):
    """The disk (or the user's quota) filled up while a file was written."""


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from, is ENOSPC or EDQUOT."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(path: Path) -> DiskFullError:
    """The message a user gets when ``path`` could not be written for lack of space."""
    return DiskFullError(
        f"The disk is full: {path} could not be written (files written before are intact).\n"
        "Free some space and run the command again."
    )


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in a flushed temporary file beside ``path``; the caller renames it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the file the mode a plain open() would (umask-based).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path.

    Raises
    ------
    DiskFullError
        The disk is full; ``path`` is as it was.
    """
    try:
        tmp = _write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise
    return path


def write_files(files: Mapping[Path, bytes]) -> list[Path]:
    """Write a set of files all or nothing on an error: every temporary is written first.

    Only once all of them are on disk are they renamed over their targets, so running out of
    space part way (or any other write error) leaves every target as it was. Returns the paths
    in the order given.

    Raises
    ------
    DiskFullError
        The disk is full; no target was changed.
    """
    written: list[tuple[Path, Path]] = []
    current = Path()
    try:
        for current, data in files.items():
            written.append((_write_temp(current, data), current))
    except BaseException as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full_error(current) from exc
        raise
    for tmp, path in written:
        os.replace(tmp, path)
    return [path for _, path in written]


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def csv_text(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """Rows as CSV with ``\\n`` line ends (the DCASE evaluator's files have no header)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(
    path: Path, rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None
) -> Path:
    """Rows as CSV (see :func:`csv_text`), written atomically."""
    return write_text(path, csv_text(rows, header))


def write_png(fig: Figure, path: Path) -> Path:
    """Write a matplotlib figure as a PNG at the figure's own dpi, atomically; return the path.

    Rendered into memory first, so an interrupted write never leaves half a PNG.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure")
    return write_bytes(path, buf.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
