"""The feature store: the one module that knows HDF5.

Layout of ``features.h5`` (layout version 1), readable with plain h5py::

    /                              attrs: format="asdcli-features", layout_version=1
    /features/<key>/               one feature set; <key> hashes its feature settings
        attrs: settings (JSON of the feature settings), n_mels
        frames                     float32 (total_frames, n_mels): every clip's log-mel, transposed,
                                   clips one after another; chunked, uncompressed
        clips/<column>             1-D, one row per clip: path, name, machine, section, domain,
                                   split, label, pattern, attributes (JSON), index, offset,
                                   n_frames, duration, sample_rate (of the file), channels,
                                   size, mtime_ns

Clip ``i``'s features are ``frames[offset[i] : offset[i] + n_frames[i]].T`` (n_mels, frames).

Safety. The live file is never modified in place: a writer appends finished clips to a journal
folder (``features.h5.journal/``), and commits by writing a new file beside the store and
renaming it over the old one. A journal batch is ``NAME.npy`` (float32 frames, which any worker
process may write) and ``NAME.json`` (its clips), renamed into place last: a batch exists once
its JSON does. A writer killed at any moment therefore leaves the old store intact and its
finished batches in the journal; the next writer merges them first. While clips arrive, each
batch is also appended to the new file ("staging"), so a commit only adds the old store's clips
and the clip table instead of copying every frame again. Ctrl-C during a commit is held until
the commit is done. One writer at a time holds ``features.h5.lock`` (an advisory lock the OS
drops when the process dies); a second one fails at once with a clear message.

A full disk (ENOSPC, or a quota: EDQUOT) is the same as a kill, plus a message: the writer
commits what it can, leaves the old store or the journal as they are, and raises
:class:`StoreFull`, a user error that says a re-run after freeing space finishes the rest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import stat
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import h5py
import numpy as np

from asdcli.errors import StoreError
from asdcli.files import DiskFullError, is_disk_full
from asdcli.interrupts import ctrl_c_held
from asdcli.naming import ClipInfo
from asdcli.settings import FeatureSettings

if TYPE_CHECKING:  # a thread pool only where frames are streamed (featurize's helpers)
    from concurrent.futures import Future, ThreadPoolExecutor

FORMAT = "asdcli-features"
LAYOUT_VERSION = 1
# Frames per HDF5 chunk: 1024 x 128 mels x 4 B = 512 KiB, a few clips of 10 s.
CHUNK_FRAMES = 1024
# No compression, measured (400 10-s synthetic clips, 2-core EPYC): log-mel float32 has noisy
# mantissas, so lzf+shuffle saves 19 % of the bytes (gzip-1+shuffle 24 %) but costs 1.7 ms
# (gzip 4 ms) per clip to write, more than computing the clip, and makes reading one clip 20x
# slower (it decompresses up to two 512 KiB chunks). Uncompressed, writing is a copy.
COMPRESSION: str | None = None
JOURNAL_BATCH_CLIPS = 256
JOURNAL_BATCH_SECONDS = 5.0
JOURNAL_BATCH_BYTES = 64 * 2**20  # also bounds memory: a batch is held whole until written
SYNC_BYTES = 64 * 2**20  # staged between two background fsyncs of the next store file


@dataclass(frozen=True)
class ClipRecord(ClipInfo):
    """A stored clip: what its name says (:class:`ClipInfo`) plus where it came from."""

    path: str = ""
    duration: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    size: int = 0
    mtime_ns: int = 0
    n_frames: int = 0
    offset: int = 0

    @property
    def info(self) -> ClipInfo:
        return ClipInfo(**{f.name: getattr(self, f.name) for f in fields(ClipInfo)})


_STR = ("path", "name", "machine", "section", "domain", "split", "label", "pattern", "attributes")
_INT = ("index", "offset", "n_frames", "sample_rate", "channels", "size", "mtime_ns")
_FLOAT = ("duration",)
COLUMNS = _STR + _INT + _FLOAT


_FIELDS = tuple(f.name for f in fields(ClipRecord))


def _record_row(rec: ClipRecord) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value, a tenth of featurize's main process.
    row = {name: getattr(rec, name) for name in _FIELDS}
    row["attributes"] = json.dumps(rec.attributes, sort_keys=True)
    return row


def _row_record(row: dict[str, Any]) -> ClipRecord:
    row = dict(row)
    row["attributes"] = json.loads(row["attributes"] or "{}")
    return ClipRecord(**row)


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> h5py.File:
    """Open for reading, turning every way a file can be wrong into a StoreError."""
    if not path.exists():
        raise StoreError(f"Feature store {path} does not exist; run `asd featurize DATA` first.")
    if path.is_dir():
        raise StoreError(f"Feature store {path} is a folder; give the path of an .h5 file.")
    try:
        is_h5 = h5py.is_hdf5(str(path))
    except OSError:
        is_h5 = False
    if not is_h5:
        raise StoreError(
            f"{path} is not an HDF5 feature store (not HDF5, or truncated). "
            "Move it away or choose another file with --store."
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(
            f"{path} cannot be opened as HDF5 ({exc}); it may be truncated. "
            "Move it away or choose another file with --store."
        ) from None
    fmt = f.attrs.get("format")
    version = f.attrs.get("layout_version")
    if fmt != FORMAT:
        f.close()
        raise StoreError(
            f"{path} is an HDF5 file but not an asd feature store; choose another --store."
        )
    if version != LAYOUT_VERSION:
        f.close()
        raise StoreError(
            f"{path} was written with store layout version {version}; this asd reads version "
            f"{LAYOUT_VERSION}. Featurize again into a new --store."
        )
    return f


def _read_table(group: h5py.Group) -> list[ClipRecord]:
    cols = {}
    for name in COLUMNS:
        data = group[name][()]
        if name in _STR:
            data = [s.decode() if isinstance(s, bytes) else str(s) for s in data]
        else:
            data = data.tolist()
        cols[name] = data
    n = len(cols["path"])
    return [_row_record({c: cols[c][i] for c in COLUMNS}) for i in range(n)]


@dataclass(frozen=True)
class FeatureSetInfo:
    key: str
    settings: dict[str, Any]
    n_clips: int
    machines: dict[str, int]


class FeatureStore:
    """Read access to a store. Each call opens the file briefly (safe across processes)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        with _open(self.path) as f:
            # Each commit writes a new file with a new generation; records (with their frame
            # offsets) read from one generation must not index the frames of another.
            self._generation = f.attrs.get("generation")
        pending = _journal_batches(self.path)
        if pending:
            warnings.warn(
                f"{self.path} has {len(pending)} batch(es) of clips from an interrupted "
                "featurize that are not merged yet; run `asd featurize` again to finish.",
                stacklevel=2,
            )

    def feature_sets(self) -> list[FeatureSetInfo]:
        out = []
        with _open(self.path) as f:
            for key, grp in f.get("features", {}).items():
                machines = grp["clips/machine"][()]
                names, counts = np.unique([m.decode() for m in machines], return_counts=True)
                out.append(
                    FeatureSetInfo(
                        key=key,
                        settings=json.loads(grp.attrs["settings"]),
                        n_clips=len(machines),
                        machines=dict(zip(names.tolist(), counts.tolist(), strict=True)),
                    )
                )
        return out

    def has(self, key: str) -> bool:
        with _open(self.path) as f:
            return f"features/{key}" in f

    def resolve(self, features: FeatureSettings) -> FeatureSettings:
        """The feature settings of the stored set that ``features`` stands for.

        Settings with a rate in Hz are returned as they are. ``sample_rate: native`` stands
        for the one stored set whose other settings are equal, at that set's rate (so a run
        records the real rate, and scoring new files resamples them to it).

        Raises
        ------
        StoreError
            No such set, or sets at several rates (the user must choose one).
        """
        if not features.native:
            return features
        wanted = features.model_dump(mode="json")
        del wanted["sample_rate"]
        found: list[FeatureSettings] = []
        for s in self.feature_sets():
            try:
                fs = FeatureSettings.model_validate(s.settings)
            except ValueError:  # written by another version: not these settings
                continue
            other = fs.model_dump(mode="json")
            del other["sample_rate"]
            if other == wanted:
                found.append(fs)
        if not found:
            raise StoreError(
                f"{self.path} has no features for the current feature settings at any sample "
                "rate (features.sample_rate: native); run `asd featurize DATA` with them first."
            )
        if len(found) > 1:
            rates = " and ".join(f"{fs.rate} Hz" for fs in sorted(found, key=lambda f: f.rate))
            raise StoreError(
                f"{self.path} holds features of the current settings at {rates}; "
                f"features.sample_rate: native cannot choose: set it to one of them, e.g. "
                f"ASD_FEATURES__SAMPLE_RATE={found[0].rate}."
            )
        return found[0]

    def _check_generation(self, f: h5py.File) -> None:
        if f.attrs.get("generation") != self._generation:
            raise StoreError(
                f"{self.path} was rewritten by another featurize while this command read it; "
                "run the command again."
            )

    def clips(self, key: str) -> list[ClipRecord]:
        """Every clip of feature set ``key``, in storage order."""
        with _open(self.path) as f:
            self._check_generation(f)
            if f"features/{key}" not in f:
                return []
            return _read_table(f[f"features/{key}/clips"])

    def load(self, key: str, records: Sequence[ClipRecord]) -> list[np.ndarray]:
        """Features of ``records`` (from :meth:`clips`): a list of float32 (n_mels, frames)."""
        out: list[np.ndarray] = []
        if not records:
            return out
        with _open(self.path) as f:
            self._check_generation(f)
            frames = f[f"features/{key}/frames"]
            for start, stop, group in _runs(records):
                block = frames[start:stop]
                for rec in group:
                    lo = rec.offset - start
                    out.append(np.ascontiguousarray(block[lo : lo + rec.n_frames].T))
        return out

    def lazy(self, key: str, records: Sequence[ClipRecord]) -> StoredClips:
        """Features of ``records`` read on access, not all at once (see :class:`StoredClips`):
        for a model that learns from more clips than fit in memory."""
        return StoredClips(self, key, records)

    def select(
        self,
        key: str,
        machine: str | None = None,
        split: str | None = None,
    ) -> list[ClipRecord]:
        """Clips of one machine and/or split, in storage order."""
        return [
            r
            for r in self.clips(key)
            if (machine is None or r.machine == machine) and (split is None or r.split == split)
        ]


class StoredClips(Sequence[np.ndarray]):
    """A read-only sequence of stored clips, each float32 ``(n_mels, frames)`` read from the
    file when indexed; ``lengths`` (frames per clip) needs no read.

    The file is opened on first access and stays open until :meth:`close` (or the ``with``
    block ends); a store rewritten meanwhile by a featurize is noticed at opening
    (:class:`StoreError`), while an open handle keeps reading the file it opened.
    """

    def __init__(self, store: FeatureStore, key: str, records: Sequence[ClipRecord]):
        self._store = store
        self._key = key
        self._records = list(records)
        self.lengths = np.array([r.n_frames for r in self._records], dtype=np.int64)
        self._file: h5py.File | None = None
        self._frames: Any = None

    def _dataset(self) -> Any:
        if self._file is None:
            f = _open(self._store.path)
            try:
                self._store._check_generation(f)
                self._frames = f[f"features/{self._key}/frames"]
            except BaseException:
                f.close()
                raise
            self._file = f
        return self._frames

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not isinstance(i, int | np.integer):
            raise TypeError("StoredClips takes one integer index")
        rec = self._records[i]
        return np.ascontiguousarray(self._dataset()[rec.offset : rec.offset + rec.n_frames].T)

    def window(self, i: int, start: int, length: int) -> np.ndarray:
        """Frames ``start : start + length`` of clip ``i``, float32 ``(n_mels, length)``,
        reading only those frames."""
        rec = self._records[i]
        if start < 0 or length < 0 or start + length > rec.n_frames:
            raise IndexError(f"frames {start}:{start + length} of a {rec.n_frames}-frame clip")
        lo = rec.offset + start
        return np.ascontiguousarray(self._dataset()[lo : lo + length].T)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._frames = None, None

    def __enter__(self) -> StoredClips:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _runs(
    records: Sequence[ClipRecord], max_frames: int = 16 * CHUNK_FRAMES
) -> Iterator[tuple[int, int, list[ClipRecord]]]:
    """Group records into contiguous frame ranges so reads are few and sequential."""
    group: list[ClipRecord] = []
    start = stop = 0
    for rec in records:
        end = rec.offset + rec.n_frames
        if group and rec.offset == stop and end - start <= max_frames:
            group.append(rec)
            stop = end
            continue
        if group:
            yield start, stop, group
        group, start, stop = [rec], rec.offset, end
    if group:
        yield start, stop, group


# --------------------------------------------------------------------------- writing


def _journal_dir(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def _journal_batches(path: Path) -> list[Path]:
    """The journal's complete batches, oldest first: ``NAME.json`` files (whose frames are in
    ``NAME.npy``), and ``NAME.npz`` ones written by asd 0.2 and earlier."""
    d = _journal_dir(path)
    if not d.is_dir():
        return []
    return sorted([*d.glob("*.json"), *d.glob("*.npz")], key=lambda p: p.stem)


class StoreLocked(StoreError):
    pass


class StoreFull(StoreError, DiskFullError):
    """The disk holding the store filled up while it was written."""


# Free space a commit needs beyond the old store and the journal (HDF5's own bookkeeping).
COMMIT_MARGIN = 2**20


def disk_full(exc: BaseException | None) -> bool:
    """True for the errors of a full disk or an exhausted quota (:func:`is_disk_full`), and
    for h5py's: it raises OSError with ``errno`` set when a write fails, but RuntimeError when
    a flush or a close does, with the errno only in its text."""
    if exc is None:
        return False
    if is_disk_full(exc):
        return True
    return isinstance(exc, OSError | RuntimeError) and any(
        f"errno = {e}," in str(exc) for e in (errno.ENOSPC, errno.EDQUOT)
    )


# A journal batch's ``.npy`` header is padded to this many bytes, so that its frames start on
# a block boundary and can be written and read with direct I/O (O_DIRECT).
FRAMES_HEADER = 4096
_direct_buffer = threading.local()  # per thread: the aligned buffer direct I/O goes through
_DIRECT_KEEP = 64 * 2**20  # a larger buffer (a task of long recordings) is not kept


def _frames_header(shape: tuple[int, int]) -> bytes:
    """A ``.npy`` (version 1.0) header for float32 C-ordered ``shape``, padded with spaces to
    :data:`FRAMES_HEADER` bytes (NumPy's readers accept any padding)."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode("latin1")
    room = FRAMES_HEADER - 10 - len(text) - 1
    magic = b"\x93NUMPY\x01\x00" + (FRAMES_HEADER - 10).to_bytes(2, "little")
    return magic + text + b" " * room + b"\n"


def _whole_blocks(nbytes: int) -> int:
    """``nbytes`` rounded up to whole blocks of :data:`FRAMES_HEADER` bytes (direct I/O reads
    and writes nothing shorter)."""
    return -(-nbytes // FRAMES_HEADER) * FRAMES_HEADER


def _new_aligned(nbytes: int) -> np.ndarray:
    """A new uint8 buffer of ``nbytes`` that starts on a block boundary (as direct I/O needs)."""
    raw = np.empty(nbytes + FRAMES_HEADER, dtype=np.uint8)
    start = -raw.ctypes.data % FRAMES_HEADER
    return raw[start : start + nbytes]


def _aligned(nbytes: int) -> np.ndarray:
    """An aligned uint8 buffer of ``nbytes`` rounded up to whole blocks, reused by the calling
    thread: a fresh one would be paged in at every write, which costs more than it saves."""
    nbytes = _whole_blocks(nbytes)
    buf: np.ndarray | None = getattr(_direct_buffer, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _new_aligned(nbytes)
        if nbytes <= _DIRECT_KEEP:
            _direct_buffer.buf = buf
    return buf[:nbytes]


def _open_direct(path: Path, flags: int) -> int | None:
    """``path`` opened with O_DIRECT, or None where that is not possible: no O_DIRECT on this
    OS, a file system without it (tmpfs before Linux 6.6), or not a regular file (/dev/full)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return None
    try:
        fd = os.open(path, flags | direct, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _read_into(fd: int, buf: np.ndarray, size: int) -> int:
    """Read up to ``size`` bytes of ``fd`` from its start into ``buf``; the bytes read."""
    got = 0
    while got < size:
        n = os.preadv(fd, [buf[got:].data], got)
        if n == 0:
            break
        got += n
    return got


def _write_all(fd: int, data: np.ndarray, offset: int) -> bool:
    """Write ``data`` at ``offset`` with direct I/O; False where the file system refuses it as
    misaligned (EINVAL: the caller writes normally instead)."""
    try:
        return os.pwrite(fd, data.data, offset) == data.nbytes
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # e.g. ENOSPC: the caller's to handle
            raise
        return False


def save_frames(path: Path, frames: np.ndarray) -> None:
    """A journal batch's frames, float32 ``(frames, n_mels)``, as a ``.npy`` file whose header
    is padded to :data:`FRAMES_HEADER` bytes; memory-mapped back when merged.

    Written with direct I/O where the file system allows it: the frames go from this process's
    memory to the disk, not through the page cache. Copying 160 KB per 10-s clip into newly
    allocated page-cache pages was the largest cost featurize added to the log-mel (measured
    on a 2-core EPYC VM, 8,400 clips, 1 worker: 6.6-8.8 s of system time, 2.6-3.8 s with
    direct I/O; what is left is mostly the store file's own writes), and the journal is read
    back once at most. Elsewhere the same bytes are written normally. The write waits for the
    disk: featurize makes it in a thread (see :func:`asdcli.featurize._results`).
    """
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    if frames.ndim != 2:
        raise ValueError(f"expected (frames, n_mels) frames, got {frames.shape}")
    header = _frames_header((int(frames.shape[0]), int(frames.shape[1])))
    size = FRAMES_HEADER + frames.nbytes
    fd = _open_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    if fd is not None:
        buf = _aligned(size)
        buf[:FRAMES_HEADER] = np.frombuffer(header, dtype=np.uint8)
        buf[FRAMES_HEADER:size] = frames.reshape(-1).view(np.uint8)
        try:
            if _write_all(fd, buf, 0):
                os.ftruncate(fd, size)  # the padding of the last block goes
                return
        finally:
            os.close(fd)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(frames.data)


# A streamed frames file is written in pieces of at least this many bytes (a few clips).
STREAM_BYTES = 2**20
_stream_writes: ThreadPoolExecutor | None = None  # this process's thread for streamed writes


class StreamedFrames:
    """A journal batch's frames file (the format of :func:`save_frames`) written while its
    frames are still being computed: the whole blocks appended so far go to the disk in a
    thread, so that the disk's wait (direct I/O) overlaps the computing instead of following
    it. A helper process, which has no other thread to write in, uses this; use as a context
    manager: on a clean exit the file is complete, on an error it is removed.

    No file is made when nothing is appended (a task without a readable clip).
    """

    def __init__(self, path: Path, n_mels: int):
        self.path = path
        self.n_mels = n_mels
        self._buf = _aligned(FRAMES_HEADER + STREAM_BYTES)
        self._filled = 0  # bytes of frames appended
        self._sent = FRAMES_HEADER  # bytes of the file handed to the writing thread
        self._fd: int | None = None  # with direct I/O; None: written normally at the end
        self._opened = False
        self._pending: Future[bool] | None = None

    def __enter__(self) -> StreamedFrames:
        return self

    def append(self, block: np.ndarray) -> None:
        """Add ``block``, float32 ``(frames, n_mels)`` in any memory order."""
        if block.ndim != 2 or block.shape[1] != self.n_mels:
            raise ValueError(f"expected (frames, {self.n_mels}) frames, got {block.shape}")
        if not self._opened:
            self._opened = True
            self._fd = _open_direct(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        start = FRAMES_HEADER + self._filled
        end = start + block.size * 4
        if end > self._buf.nbytes:
            self._wait()  # the thread may be reading the old buffer
            grown = _aligned(max(end, 2 * self._buf.nbytes))
            grown[:start] = self._buf[:start]
            self._buf = grown
        self._buf[start:end].view(np.float32).reshape(block.shape)[...] = block
        self._filled += block.size * 4
        whole = end // FRAMES_HEADER * FRAMES_HEADER
        idle = self._pending is None or self._pending.done()
        if self._fd is not None and idle and whole - self._sent >= STREAM_BYTES:
            self._wait()
            if self._fd is not None:  # still direct
                piece = self._buf[self._sent : whole]
                self._pending = _writer().submit(_write_all, self._fd, piece, self._sent)
                self._sent = whole

    def _wait(self) -> None:
        """Wait for the write in flight; one the file system refused as misaligned turns
        direct I/O off (every byte is still in the buffer: it is written normally at the end)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if not pending.result():
                self._close()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self._wait()
            if exc is None and self._opened:
                self._finish()
        except BaseException:
            self._discard()
            if exc is None:
                raise
            return  # the caller's error is the one to report
        if exc is not None:
            self._discard()

    def _discard(self) -> None:
        """A partial file holds disk space and is of no use: removed."""
        self._close()
        if self._opened:
            self.path.unlink(missing_ok=True)

    def _finish(self) -> None:
        """The header (now that the shape is known) and what is left."""
        shape = (self._filled // (4 * self.n_mels), self.n_mels)
        size = FRAMES_HEADER + self._filled
        self._buf[:FRAMES_HEADER] = np.frombuffer(_frames_header(shape), dtype=np.uint8)
        if self._fd is not None:
            try:
                tail = self._buf[self._sent : _whole_blocks(size)]
                if _write_all(self._fd, tail, self._sent) and _write_all(
                    self._fd, self._buf[:FRAMES_HEADER], 0
                ):
                    os.ftruncate(self._fd, size)  # the padding of the last block goes
                    return
            finally:
                self._close()
        # No direct I/O here, or the file system wants another alignment: written normally.
        with open(self.path, "wb") as fh:
            fh.write(self._buf[:size].data)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _writer() -> ThreadPoolExecutor:
    global _stream_writes
    if _stream_writes is None:
        from concurrent.futures import ThreadPoolExecutor

        _stream_writes = ThreadPoolExecutor(1, thread_name_prefix="asd-frames")
    return _stream_writes


def load_frames(path: Path, buffer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A journal batch's ``.npy`` of frames read whole, with direct I/O where the file system
    allows it (see :func:`save_frames`): ``(frames, the buffer they are in)``.

    ``buffer``: a page-aligned uint8 buffer to read into where it is large enough (the frames
    are then a view of it); else a new one is made.

    Raises
    ------
    ValueError
        Not a float32 ``(frames, n_mels)`` ``.npy``, or truncated.
    """
    fd = _open_direct(path, os.O_RDONLY)
    direct = fd is not None
    if fd is None:
        fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        need = _whole_blocks(size)
        if buffer is None or buffer.nbytes < need:
            buffer = _new_aligned(need)
        buf = buffer[:need]
        try:
            got = _read_into(fd, buf, size)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            os.close(fd)  # the file system wants another alignment: read normally
            fd = os.open(path, os.O_RDONLY)
            got = _read_into(fd, buf, size)
    finally:
        os.close(fd)
    head = io.BytesIO(buf[: min(got, FRAMES_HEADER)].tobytes())
    try:
        version = np.lib.format.read_magic(head)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(head)
    except ValueError as exc:
        raise ValueError(f"{path} is not a .npy file of frames: {exc}") from None
    if dtype != np.float32 or fortran or len(shape) != 2:
        raise ValueError(f"{path} is not float32 (frames, n_mels)")
    offset, nbytes = head.tell(), shape[0] * shape[1] * 4
    if got < offset + nbytes:
        raise ValueError(f"{path} is truncated")
    return buf[offset : offset + nbytes].view(np.float32).reshape(shape), buffer


def _save_meta(path: Path, meta: str) -> None:
    """A batch's JSON (feature set and clip records), renamed into place: a batch is in the
    journal once its ``.json`` is, so frames without one are the leftovers of a kill."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(meta)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a partial file: of no use, and it holds disk space
        raise
    os.replace(tmp, path)


def _save_batch(path: Path, frames: np.ndarray, meta: str) -> None:
    """Write one journal batch: its frames to ``path`` (``NAME.npy``), then its JSON.
    (Frames left by a failure are the caller's to remove: ``path`` may be a device.)"""
    save_frames(path, frames)
    _save_meta(path.with_suffix(".json"), meta)


def _batch_bytes(path: Path) -> int:
    if path.suffix == ".npz":
        return path.stat().st_size
    return path.stat().st_size + path.with_suffix(".npy").stat().st_size


@contextlib.contextmanager
def _load_batch(path: Path) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """``(meta, frames)`` of a journal batch; frames are read lazily (memory-mapped)."""
    if path.suffix == ".npz":  # asd 0.2 and earlier: one archive
        with np.load(path, allow_pickle=False) as npz:
            yield json.loads(str(npz["meta"])), npz["frames"]
        return
    # The mapping ends when the last view of it is dropped (a file unlinked meanwhile stays
    # readable until then).
    yield (
        json.loads(path.read_text()),
        np.load(path.with_suffix(".npy"), mmap_mode="r", allow_pickle=False),
    )


class StoreWriter:
    """Adds clips of one feature set to a store; use as a context manager.

    ``add`` buffers clips and writes them to the journal in batches; leaving the ``with`` block
    (normally, or by an exception such as KeyboardInterrupt) commits everything written so far.
    ``committed`` counts the clips this writer has written to the journal: they survive a crash.
    """

    def __init__(
        self,
        path: Path | str,
        key: str,
        settings: dict[str, Any],
        batch_clips: int = JOURNAL_BATCH_CLIPS,
    ):
        self.path = Path(path)
        self.batch_clips = batch_clips
        self.key = key
        self.settings_json = json.dumps(settings, sort_keys=True)
        self.n_mels = int(settings["n_mels"])
        self._lock_fd: int | None = None
        # The batch being filled: its records, and its frames in one buffer reused batch after
        # batch (one allocation, not one per clip plus a concatenation at each flush).
        self._pending: list[ClipRecord] = []
        self._frames = np.empty((0, self.n_mels), dtype=np.float32)
        self._filled = 0
        self._last_flush = time.monotonic()
        self._seq = 0
        self.committed = 0
        # The next store file, filled as batches arrive (None: not started, False: given up).
        self._staging: _Staging | None | Literal[False] = None
        self._read_buffer = np.empty(0, dtype=np.uint8)  # page-aligned once grown

    # -- lock and lifecycle
    def __enter__(self) -> StoreWriter:
        if self.path.exists():
            with _open(self.path):  # refuse to touch anything that is not a valid store
                pass
        elif not self.path.parent.exists():
            raise StoreError(f"Folder {self.path.parent} for the store does not exist.")
        try:
            self._lock()
            self._cleanup_temp()
            if not self.path.exists():
                self._write_empty()
            if _journal_batches(self.path):
                with ctrl_c_held():
                    self._merge()
        except BaseException as exc:
            self._unlock()
            if disk_full(exc):
                raise self._full(merged=False) from exc
            raise
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        full = exc if disk_full(exc) else None
        merged = False
        try:
            with ctrl_c_held():
                try:
                    self.flush()
                except OSError as err:
                    if not disk_full(err):
                        raise
                    # Finished clips, but no room for them: the next run computes them again.
                    full = err
                    self._pending, self._filled = [], 0
                self._frames = np.empty((0, self.n_mels), dtype=np.float32)  # before merging
                try:
                    self._commit()
                    merged = True
                except (OSError, RuntimeError) as err:
                    if not disk_full(err):
                        raise
                    full = err  # the old store and the journal are intact
        finally:
            self._unlock()
        if full is not None:
            raise self._full(merged) from full

    def _full(self, merged: bool) -> StoreFull:
        if not self.committed:
            saved = "the store is intact"
        elif merged:
            saved = f"the store is intact and holds the {self.committed} clip(s) saved before"
        else:
            saved = f"the store is intact; {self.committed} saved clip(s) wait in its journal"
        return StoreFull(
            f"The disk holding {self.path} is full: {saved}. Free some space and run the same "
            "command again: it finishes the rest."
        )

    def _check_room(self, batches: Sequence[Path]) -> None:
        """Refuse a commit that cannot fit, before HDF5 starts: HDF5 running out of space
        mid-write can leave h5py unable to close the file (seen: RuntimeError, then a crash of
        the process at exit). The new file holds at most the old store plus the journal."""
        st = os.statvfs(self.path.parent)
        if st.f_blocks == 0:  # a file system that reports no size (some FUSE mounts)
            return
        free = st.f_bavail * st.f_frsize
        need = sum(_batch_bytes(b) for b in batches) + COMMIT_MARGIN
        if self.path.exists():
            need += self.path.stat().st_size
        if free < need:
            raise OSError(errno.ENOSPC, f"a commit needs {need} bytes, {free} are free")

    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLocked(
                f"Another asd process (pid {holder}) is writing {self.path}. "
                "Wait for it to finish, or use another --store."
            ) from None
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)  # may fail on a full disk: fd is held

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _cleanup_temp(self) -> None:
        # Left by a writer killed while committing; never the live store.
        for tmp in self.path.parent.glob(self.path.name + ".tmp-*"):
            tmp.unlink(missing_ok=True)
        jdir = _journal_dir(self.path)
        if jdir.is_dir():
            for tmp in jdir.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
            for frames in jdir.glob("*.npy"):  # frames whose batch was never completed
                if not frames.with_suffix(".json").exists():
                    frames.unlink(missing_ok=True)

    def _write_empty(self) -> None:
        """A valid store with no clips yet: from the first moment on, the file opens."""
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["layout_version"] = LAYOUT_VERSION
                f.attrs["generation"] = uuid.uuid4().hex
                f.create_group("features")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)

    # -- what is there already
    def splits(self) -> dict[str, str]:
        """path -> split of every clip of this feature set already stored."""
        if not self.path.exists():
            return {}
        with _open(self.path) as f:
            grp = f.get(f"features/{self.key}/clips")
            if grp is None:
                return {}
            paths, splits = grp["path"][()], grp["split"][()]
            return {p.decode(): s.decode() for p, s in zip(paths, splits, strict=True)}

    def known(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every clip of this feature set already stored."""
        known: dict[str, tuple[int, int]] = {}
        if self.path.exists():
            with _open(self.path) as f:
                grp = f.get(f"features/{self.key}/clips")
                if grp is not None:
                    paths = [p.decode() for p in grp["path"][()]]
                    sizes, mtimes = grp["size"][()], grp["mtime_ns"][()]
                    known = {
                        p: (int(s), int(m)) for p, s, m in zip(paths, sizes, mtimes, strict=True)
                    }
        return known

    # -- adding
    def add(self, record: ClipRecord, features: np.ndarray) -> None:
        """Queue one clip; ``features`` is float32 (n_mels, frames)."""
        if features.ndim != 2 or features.shape[0] != self.n_mels:
            raise ValueError(f"expected ({self.n_mels}, frames) features, got {features.shape}")
        n = features.shape[1]
        most = max(1, JOURNAL_BATCH_BYTES // (4 * self.n_mels))  # frames
        if self._pending and self._filled + n > most:
            self.flush()
        if self._filled + n > len(self._frames):
            # Room for a batch of clips like this one; a longer clip later grows it.
            size = max(self._filled + n, min(int(self.batch_clips * n * 1.05) + 1, most))
            grown = np.empty((size, self.n_mels), dtype=np.float32)
            grown[: self._filled] = self._frames[: self._filled]
            self._frames = grown
        self._frames[self._filled : self._filled + n] = features.T
        self._filled += n
        self._pending.append(record)
        full = len(self._pending) >= self.batch_clips
        if full or time.monotonic() - self._last_flush > JOURNAL_BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write queued clips to the journal as one whole batch."""
        if not self._pending:
            return
        frames_path = self.reserve_batch()
        records = [_record_row(r) for r in self._pending]
        frames = self._frames[: self._filled]
        try:
            _save_batch(frames_path, frames, self._meta(records))
        except BaseException:
            frames_path.unlink(missing_ok=True)  # a partial batch holds disk space
            raise
        self._adopted(frames_path.with_suffix(".json"), records, frames)
        self._pending = []
        self._filled = 0
        self._last_flush = time.monotonic()

    def reserve_batch(self) -> Path:
        """The ``.npy`` path for the frames of this writer's next batch, which any process
        may write (:func:`save_frames`); :meth:`adopt_batch` then adds the batch."""
        jdir = _journal_dir(self.path)
        jdir.mkdir(exist_ok=True)
        self._seq += 1
        return jdir / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.npy"

    def adopt_batch(
        self, frames_path: Path, records: Sequence[ClipRecord], frames: np.ndarray | None = None
    ) -> None:
        """Add the clips whose frames were written to ``frames_path`` (from
        :meth:`reserve_batch`), one after another in the order of ``records``; ``frames``: the
        same frames if the caller still has them (else they are read back).

        The batch is in the journal (it survives a crash) once this returns.
        """
        rows = [_record_row(r) for r in records]
        if not rows:
            frames_path.unlink(missing_ok=True)
            return
        if frames is None:
            frames = self._read_frames(frames_path)
        if frames.shape != (sum(r["n_frames"] for r in rows), self.n_mels):
            raise ValueError(f"{frames_path} holds {frames.shape} frames, not the records'")
        meta_path = frames_path.with_suffix(".json")
        try:
            _save_meta(meta_path, self._meta(rows))
        except BaseException:
            frames_path.unlink(missing_ok=True)  # not a batch without its JSON
            raise
        self._adopted(meta_path, rows, frames)

    def _read_frames(self, path: Path) -> np.ndarray:
        """:func:`load_frames` into a buffer kept from call to call: neither a fresh array nor
        a memory map, whose pages each fault in at first touch (as slow as the read)."""
        frames, self._read_buffer = load_frames(path, self._read_buffer)
        return frames

    def _meta(self, rows: list[dict[str, Any]]) -> str:
        return json.dumps({"key": self.key, "settings": self.settings_json, "records": rows})

    def _adopted(self, batch: Path, rows: list[dict[str, Any]], frames: np.ndarray) -> None:
        """A batch is in the journal: count it, and add it to the next store file now, so the
        commit has little left to do. Staging is only a head start: on any error it is dropped
        and the commit merges the journal as a kill would leave it."""
        self.committed += len(rows)
        if self._staging is False:
            return
        try:
            if not self._room_to_stage(frames.nbytes):
                # Not HDF5 running out of space mid-write (see _check_room): the commit merges.
                self._drop_staging()
                return
            if self._staging is None:
                self._staging = _Staging(self.path, self.key, self.settings_json, self.n_mels)
            self._staging.add(batch, rows, frames)
        except Exception:
            self._drop_staging()

    def _room_to_stage(self, nbytes: int) -> bool:
        st = os.statvfs(self.path.parent)
        if st.f_blocks == 0:  # a file system that reports no size
            return True
        old = self.path.stat().st_size if self.path.exists() else 0
        return bool(st.f_bavail * st.f_frsize >= nbytes + old + COMMIT_MARGIN)

    def _drop_staging(self) -> None:
        if isinstance(self._staging, _Staging):
            self._staging.abandon()
        self._staging = False  # not again in this writer

    # -- committing
    def _commit(self) -> None:
        """Rename the staged file over the store (when every journal batch is in it), or fold
        the journal into a new file."""
        if isinstance(self._staging, _Staging):
            staging, self._staging = self._staging, None
            if set(staging.batches) == set(_journal_batches(self.path)):
                try:
                    self._check_room([])
                    staging.finish()
                    self._replace(staging.tmp, staging.batches)
                except BaseException:
                    staging.abandon()
                    raise
                return
            staging.abandon()
        self._merge()

    def _merge(self) -> None:
        """Fold every journal batch into a new store file and rename it over the old one."""
        batches = _journal_batches(self.path)
        if not batches:
            return
        self._check_room(batches)
        with contextlib.ExitStack() as stack:
            by_key: dict[str, list[tuple[dict[str, Any], np.ndarray]]] = {}
            for b in batches:
                meta, frames = stack.enter_context(_load_batch(b))
                by_key.setdefault(meta["key"], []).append((meta, frames))
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            old = stack.enter_context(_open(self.path)) if self.path.exists() else None
            try:
                with h5py.File(tmp, "w") as new:
                    root = _new_root(new)
                    old_sets = old["features"] if old is not None else {}
                    for key in sorted(set(old_sets) - set(by_key)):
                        root.copy(old_sets[key], root, name=key)  # raw chunks, no recompression
                    for key, items in by_key.items():
                        _write_feature_set(root, key, old_sets.get(key), items)
                    new.flush()
                _fsync(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self._replace(tmp, batches)

    def _replace(self, tmp: Path, batches: Sequence[Path]) -> None:
        """``tmp`` becomes the store; the journal batches it holds are deleted."""
        os.replace(tmp, self.path)
        for b in batches:
            b.unlink(missing_ok=True)
            if b.suffix == ".json":
                b.with_suffix(".npy").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            _journal_dir(self.path).rmdir()


def _new_root(f: h5py.File) -> h5py.Group:
    f.attrs["format"] = FORMAT
    f.attrs["layout_version"] = LAYOUT_VERSION
    f.attrs["generation"] = uuid.uuid4().hex
    return f.create_group("features")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _new_frames(grp: h5py.Group, n_mels: int) -> h5py.Dataset:
    return grp.create_dataset(
        "frames",
        shape=(0, n_mels),
        maxshape=(None, n_mels),
        dtype=np.float32,
        chunks=(CHUNK_FRAMES, n_mels),
        compression=COMPRESSION,
        shuffle=COMPRESSION is not None,
    )


def _append(frames: h5py.Dataset, block: np.ndarray) -> int:
    """Append ``block`` (frames, n_mels) to ``frames``; returns the offset it starts at."""
    base = int(frames.shape[0])
    frames.resize(base + block.shape[0], axis=0)
    frames[base:] = block
    return base


def _kept_rows(frames: h5py.Dataset, old: h5py.Group, superseded: set[str]) -> list[dict[str, Any]]:
    """Append the old set's clips not in ``superseded`` to ``frames``; their rows."""
    rows = []
    kept = [r for r in _read_table(old["clips"]) if r.path not in superseded]
    for start, stop, group in _runs(kept):
        base = _append(frames, old["frames"][start:stop])
        rows += [dict(_record_row(r), offset=base + r.offset - start) for r in group]
    return rows


def _write_table(grp: h5py.Group, rows: list[dict[str, Any]]) -> None:
    table = grp.create_group("clips")
    for name in COLUMNS:
        values = [r[name] for r in rows]
        if name in _STR:
            table.create_dataset(
                name, data=np.array(values, dtype=object), dtype=h5py.string_dtype()
            )
        elif name in _INT:
            table.create_dataset(name, data=np.array(values, dtype=np.int64))
        else:
            table.create_dataset(name, data=np.array(values, dtype=np.float64))


class _Staging:
    """The next store file, filled while featurize runs: each journal batch's frames are
    appended as it arrives, so the commit only adds the old store's clips and the table.

    Written beside the store as ``<store>.tmp-<pid>`` (removed by the next writer if this one
    is killed); the journal stays the record of what is saved until the rename.
    """

    def __init__(self, path: Path, key: str, settings_json: str, n_mels: int):
        self.path = path
        self.key = key
        self.tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        self.file = h5py.File(self.tmp, "w")
        self.root = _new_root(self.file)
        self.group = self.root.create_group(key)
        self.group.attrs["settings"] = settings_json
        self.group.attrs["n_mels"] = n_mels
        self.frames = _new_frames(self.group, n_mels)
        # The frames after the last whole chunk, held until a chunk is full: whole chunks are
        # written as they are (H5Dwrite_chunk), without HDF5's chunk cache and selection code
        # (measured, 6 interleaved runs of 60 batches: 1.7-2.5 ms per 5 MB, against 2.3-3.8).
        self._tail = np.empty((CHUNK_FRAMES, n_mels), dtype=np.float32)
        self._tailed = 0
        self.rows: list[dict[str, Any]] = []
        self.batches: list[Path] = []
        # The commit's fsync, started early: the disk writes what is staged while featurize
        # computes, in a thread (fsync releases the GIL), and the last fsync has little left.
        self._fd = os.open(self.tmp, os.O_RDONLY)
        self._sync: threading.Thread | None = None
        self._unsynced = 0

    def add(self, batch: Path, rows: list[dict[str, Any]], frames: np.ndarray) -> None:
        # Whole chunks are the stored bytes only without compression.
        base = self._append_chunks(frames) if COMPRESSION is None else _append(self.frames, frames)
        offset = base
        for r in rows:
            self.rows.append(dict(r, offset=offset))
            offset += r["n_frames"]
        self.batches.append(batch)
        self._unsynced += frames.nbytes
        if self._unsynced >= SYNC_BYTES and (self._sync is None or not self._sync.is_alive()):
            self._unsynced = 0
            self._sync = threading.Thread(target=os.fsync, args=(self._fd,), daemon=True)
            self._sync.start()

    def _append_chunks(self, block: np.ndarray) -> int:
        """Append ``block`` (frames, n_mels) in whole chunks, the rest held; its offset."""
        base = int(self.frames.shape[0])
        block = np.ascontiguousarray(block, dtype=np.float32)
        self.frames.resize(base + len(block), axis=0)
        start = base - self._tailed  # of the chunk being filled
        used = 0
        if self._tailed:
            used = min(CHUNK_FRAMES - self._tailed, len(block))
            self._tail[self._tailed : self._tailed + used] = block[:used]
            self._tailed += used
            if self._tailed < CHUNK_FRAMES:
                return base
            self.frames.id.write_direct_chunk((start, 0), self._tail)
            start += CHUNK_FRAMES
            self._tailed = 0
        while len(block) - used >= CHUNK_FRAMES:
            self.frames.id.write_direct_chunk((start, 0), block[used : used + CHUNK_FRAMES])
            start += CHUNK_FRAMES
            used += CHUNK_FRAMES
        self._tailed = len(block) - used
        self._tail[: self._tailed] = block[used:]
        return base

    def _flush_tail(self) -> None:
        """The last, partial chunk (its rows past the data are outside the dataset's shape)."""
        if self._tailed:
            self._tail[self._tailed :] = 0
            start = int(self.frames.shape[0]) - self._tailed
            self.frames.id.write_direct_chunk((start, 0), self._tail)
            self._tailed = 0

    def _stop_sync(self) -> None:
        if self._sync is not None:
            self._sync.join()
            self._sync = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def finish(self) -> None:
        """Old clips not superseded, other feature sets, the table, written and synced; the
        writer then renames the file over the store."""
        self._flush_tail()  # before the old clips are appended after it
        old = _open(self.path) if self.path.exists() else None
        try:
            rows = []
            if old is not None:
                old_sets = old["features"]
                for key in sorted(set(old_sets) - {self.key}):
                    self.root.copy(old_sets[key], self.root, name=key)
                if self.key in old_sets:
                    new_paths = {r["path"] for r in self.rows}
                    rows = _kept_rows(self.frames, old_sets[self.key], new_paths)
            _write_table(self.group, rows + self.rows)
            self.file.close()
            self._stop_sync()
            _fsync(self.tmp)
        finally:
            if old is not None:
                old.close()

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(OSError):
            self._stop_sync()
        self.tmp.unlink(missing_ok=True)


def _write_feature_set(
    root: h5py.Group,
    key: str,
    old: h5py.Group | None,
    batches: list[tuple[dict[str, Any], np.ndarray]],
) -> None:
    """Old clips not superseded by a journal clip of the same path, then the journal's clips."""
    settings_json = batches[0][0]["settings"]
    n_mels = int(json.loads(settings_json)["n_mels"])
    newest: dict[str, tuple[int, int]] = {}  # path -> (batch, row) of its latest version
    for b, (meta, _) in enumerate(batches):
        for i, row in enumerate(meta["records"]):
            newest[row["path"]] = (b, i)

    grp = root.create_group(key)
    grp.attrs["settings"] = settings_json
    grp.attrs["n_mels"] = n_mels
    frames = _new_frames(grp, n_mels)
    rows = _kept_rows(frames, old, set(newest)) if old is not None else []
    for b, (meta, data) in enumerate(batches):
        offset = 0
        recs = []
        for i, row in enumerate(meta["records"]):
            row = dict(row, offset=offset)
            offset += row["n_frames"]
            if newest[row["path"]] == (b, i):
                recs.append(row)
        if len(recs) == len(meta["records"]):
            base = _append(frames, data)
            rows += [dict(r, offset=base + r["offset"]) for r in recs]
        else:  # a later batch re-did some clips: copy only the latest versions
            for r in recs:
                base = _append(frames, data[r["offset"] : r["offset"] + r["n_frames"]])
                rows.append(dict(r, offset=base))
    _write_table(grp, rows)
