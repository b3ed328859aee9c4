"""Featurize: find WAV files, compute log-mels for the ones not cached, write them to the store.

Accepted inputs: a machine folder (``data/bearing`` with ``train/`` and ``test/``), a folder of
machine folders (``data``, or DCASE's ``dev_data``), single WAV files, or any mix of these.
Folder conventions and names are interpreted by :mod:`asdcli.naming`; the folder decides the
split, and clips whose name says otherwise are counted in one warning.

With ``features.sample_rate: native`` the files' own rate is used: every file of one call must
have the same rate, which then names the feature set like any rate in Hz.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from asdcli.audio import AudioError, file_rate, read_audio
from asdcli.errors import DataError
from asdcli.features import logmel, min_samples, n_frames
from asdcli.interrupts import ctrl_c_held
from asdcli.naming import SPLITS, ClipInfo, name_split, parse_path
from asdcli.settings import FeatureSettings
from asdcli.store import ClipRecord, StoreWriter, StreamedFrames, load_frames, save_frames

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

# Files per task: tens of milliseconds of work, so a task's fixed cost (a future, a message to a
# helper) is small, while the processes stay balanced and little is in flight.
TASK_FILES = 32
# Tasks handed out ahead per helper (enough that it does not run dry while this process computes
# a task of its own or writes; more would leave this process idle at the end, waiting for the
# helpers' queues), and tasks this process may compute ahead of a helper's late one: results
# waiting to be written stay bounded (featurize streams: its memory does not grow with the
# number of clips).
TASKS_AHEAD = 2
OWN_AHEAD = 4
# Equal-length clips are batched into one log-mel call up to this many samples. Measured on the
# benchmark machine (2-core EPYC, 1 MiB L2 per core): one 10-s clip per call is fastest (its
# frames already fill the L2 cache; 16 per call cost 2.9x per clip), while 1-s clips gain 1.3x
# from batches of 8 (the per-call overhead is shared).
BATCH_SAMPLES = 2**17


@dataclass
class MachineCounts:
    clips: int = 0
    new: int = 0
    cached: int = 0
    skipped: int = 0


@dataclass
class FeaturizeSummary:
    """What one featurize call did."""

    store: Path
    key: str
    sample_rate: int = 0  # of the feature set (a native rate resolved to the files' rate)
    machines: dict[str, MachineCounts] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    resampled: dict[int, int] = field(default_factory=dict)  # original rate -> files
    multichannel: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def new(self) -> int:
        return sum(m.new for m in self.machines.values())

    @property
    def cached(self) -> int:
        return sum(m.cached for m in self.machines.values())

    def resample_notes(self) -> list[str]:
        """One line per original rate: how many files were resampled and what that loses."""
        return [
            resample_note(n, rate, self.sample_rate) for rate, n in sorted(self.resampled.items())
        ]


def _khz(hz: float) -> str:
    return f"{hz / 1000:g} kHz"


def resample_note(files: int, orig: int, new: int) -> str:
    """``"resampled 12 file(s) 48 kHz -> 16 kHz: content above 8 kHz is dropped"``."""
    head = f"resampled {files} file(s) {_khz(orig)} -> {_khz(new)}"
    if orig > new:
        return (
            f"{head}: content above {_khz(new / 2)} is dropped "
            "(features.sample_rate: native keeps it)"
        )
    return f"{head}: upsampled, the files hold nothing above {_khz(orig / 2)}"


def discover(paths: Sequence[Path]) -> list[Path]:
    """Every ``.wav`` file under ``paths`` (files or folders), absolute, sorted, unique.

    Raises
    ------
    DataError
        A path that does not exist, or no WAV file at all.
    """
    found: set[Path] = set()
    for p in paths:
        if not p.exists():
            raise DataError(f"{p} does not exist.")
        if p.is_file():
            if p.suffix.lower() != ".wav":
                raise DataError(f"{p} is not a .wav file.")
            found.add(p.resolve())
            continue
        found.update(_wavs_under(p.resolve()))
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise DataError(
            f"No .wav files found under {shown}. Expected <machine>/train/*.wav and "
            "<machine>/test/*.wav (or run `asd synth data` for a synthetic set)."
        )
    return sorted(found)


def _wavs_under(folder: Path) -> Iterator[Path]:
    """``.wav`` files under ``folder`` (resolved), symlinked files resolved to their targets;
    symlinked folders are not followed (as ``Path.rglob``). With ``os.scandir`` the file
    types come with the listing: no system call per file (``Path.resolve`` makes one per
    folder level, which cost more than reading the file)."""
    stack = [str(folder)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except PermissionError:  # skipped, as rglob does
            continue
        with it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.lower().endswith(".wav") and entry.is_file():
                    yield Path(entry.path).resolve() if entry.is_symlink() else Path(entry.path)


def duplicate_warnings(
    paths: Iterable[str], parse: Callable[[PurePath], ClipInfo] = parse_path
) -> list[str]:
    """Notes on clips of one machine type and split that share a file name across folders.

    DCASE submission files name clips by file name only, so ``asd score`` refuses to write two
    such clips into one file; featurize only warns (one note per pair of folders).
    """
    folders: dict[tuple[str, str, str], list[str]] = {}
    for p in sorted(paths):
        pure = PurePath(p)
        info = parse(pure)
        folders.setdefault((info.machine, info.split, info.name), []).append(str(pure.parent))
    by_pair: dict[tuple[str, str, str, str], list[str]] = {}
    for (machine, split, name), dirs in folders.items():
        if len(dirs) > 1:
            by_pair.setdefault((machine, split, dirs[0], dirs[1]), []).append(name)
    notes = []
    for (machine, split, a, b), names in sorted(by_pair.items()):
        names.sort()
        more = f" (and {len(names) - 1} more name(s))" if len(names) > 1 else ""
        notes.append(
            f"{machine} {split}: {names[0]}{more} is in both {a} and {b}; `asd score` will not "
            "put both in one submission file: score one folder with --data FOLDER."
        )
    return notes


def split_warnings(
    files: Sequence[Path], parse: Callable[[PurePath], ClipInfo] = parse_path
) -> list[str]:
    """One note per kind of clip whose name and folder disagree: the folder wins.

    Also a note for clips named ``_anomaly_`` in ``train/``: kept, but never trained on.
    """
    crossed: dict[tuple[str, str], list[str]] = {}  # (name's split, folder's) -> machines
    anomalous: list[str] = []
    for f in files:
        info = parse(f)
        said = name_split(f.name)
        if said in SPLITS and info.split in SPLITS and said != info.split:
            crossed.setdefault((said, info.split), []).append(info.machine)
        if info.split == "train" and info.is_anomaly:
            anomalous.append(info.machine)
    use = {"train": "used for training", "test": "used as test clips"}
    notes = [
        f"{len(machines)} clip(s) named `_{said}_` are in {folder}/ ({_machines(machines)}): "
        f"{use[folder]} (the folder decides the split)."
        for (said, folder), machines in sorted(crossed.items())
    ]
    if anomalous:
        notes.append(
            f"{len(anomalous)} clip(s) named `_anomaly_` are in train/ ({_machines(anomalous)}): "
            "kept, but not used for training."
        )
    return notes


def _machines(machines: list[str]) -> str:
    names = sorted(set(machines))
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def resolve_rate(files: Sequence[Path], features: FeatureSettings) -> FeatureSettings:
    """``features`` with a native rate replaced by the files' one rate (others: unchanged).

    Files whose header cannot be read are left to featurize, which skips and lists them.

    Raises
    ------
    DataError
        The files have different rates (one feature set has one rate), or none is readable.
    SettingsError
        The other settings do not fit the files' rate (f_max above its Nyquist frequency).
    """
    if not features.native:
        return features
    by_rate: dict[int, list[Path]] = {}
    for f in files:
        try:
            by_rate.setdefault(file_rate(f), []).append(f)
        except AudioError:
            continue
    if not by_rate:
        raise DataError(
            f"None of the {len(files)} file(s) is readable audio, so features.sample_rate: "
            f"native has no rate to use (first: {files[0]})."
        )
    if len(by_rate) > 1:
        shown = "; ".join(
            f"{_khz(rate)}: {len(fs)} file(s), e.g. {fs[0]}" for rate, fs in sorted(by_rate.items())
        )
        raise DataError(
            f"features.sample_rate is native but the files have {len(by_rate)} rates ({shown}).\n"
            "Featurize each rate on its own (one feature set each), or set "
            "features.sample_rate in Hz to resample them all to it."
        )
    return features.at_rate(next(iter(by_rate)))


def layout_warnings(
    files: Sequence[Path], parse: Callable[[PurePath], ClipInfo] = parse_path
) -> list[str]:
    """Notes on the folder layout that do not stop featurize (e.g. a machine without test/)."""
    splits: dict[str, set[str]] = {}
    for f in files:
        info = parse(f)
        splits.setdefault(info.machine, set()).add(info.split)
    notes = []
    for machine, seen in sorted(splits.items()):
        if "train" in seen and "test" not in seen:
            notes.append(f"{machine}: train/ but no test/ clips; it can be trained, not evaluated.")
        if "test" in seen and "train" not in seen:
            notes.append(f"{machine}: test/ but no train/ clips; it can be scored, not trained.")
    return notes


# --------------------------------------------------------------------------- computing


Result = tuple[str, dict[str, Any] | None, int | str]  # (path, audio facts, frames or error)


@lru_cache(maxsize=4)
def _settings(settings_json: str) -> FeatureSettings:
    """The feature settings a task names, validated once per process, not once per task."""
    return FeatureSettings.model_validate_json(settings_json)


def _compute(files: Sequence[str], settings_json: str, frames_path: str) -> list[Result]:
    """Worker task: read and featurize ``files``, save the frames of those that could be read
    one after another to ``frames_path`` (a journal batch's ``.npy``, in the store's
    ``(frames, n_mels)`` layout); (path, audio facts, number of frames or error), in order.

    Writing the frames here, not returning them, keeps 160 KB per 10-s clip out of the pipe
    between processes and spreads the store's writing over every worker (measured: returning
    them cost this process more in unpickling than reading the file back). They are written
    while the next clips are computed (:class:`~asdcli.store.StreamedFrames`): written after
    them, the wait for the disk idled a helper for a tenth of its time.
    """
    with StreamedFrames(Path(frames_path), _settings(settings_json).n_mels) as out:
        results, _ = _compute_frames(files, settings_json, out.append)
    return results


def _compute_frames(
    files: Sequence[str],
    settings_json: str,
    add_block: Callable[[np.ndarray], None] | None = None,
) -> tuple[list[Result], np.ndarray | None]:
    """:func:`_compute` without the saving: the results, and the frames (None: no readable
    file, or ``add_block`` was given: it was called with each clip's ``(frames, n_mels)``
    instead, in order)."""
    fs = _settings(settings_json)
    out: list[Result] = []
    blocks: list[np.ndarray] = []  # (frames, n_mels) views, in file order
    batch: list[np.ndarray] = []  # samples of equal-length clips, computed in one call

    def run_batch() -> None:
        feats = logmel(batch[0][None] if len(batch) == 1 else np.stack(batch), fs)
        if add_block is None:
            blocks.extend(x.T for x in feats)
        else:
            for x in feats:
                add_block(x.T)
        batch.clear()

    for f in files:
        try:
            clip = read_audio(Path(f), fs.rate, min_samples(fs))
        except AudioError as exc:
            out.append((f, None, str(exc)))
            continue
        n = clip.samples.shape[0]
        if batch and (n != batch[0].shape[0] or (len(batch) + 1) * n > BATCH_SAMPLES):
            run_batch()
        facts = {
            "sample_rate": clip.orig_sample_rate,
            "channels": clip.channels,
            "duration": n / fs.rate,
        }
        out.append((f, facts, n_frames(n, fs)))
        batch.append(clip.samples)
    if batch:
        run_batch()
    if not blocks:
        return out, None
    # Into a C-ordered array: concatenating transposed views would give a Fortran-ordered one.
    frames = np.empty((sum(len(b) for b in blocks), fs.n_mels), dtype=np.float32)
    np.concatenate(blocks, out=frames)
    return out, frames


def _init_worker() -> None:
    import signal

    from asdcli.allocator import keep_freed_memory

    keep_freed_memory()  # a new process: the parent's setting does not carry over
    # Ctrl-C is the parent's to handle: it commits finished clips and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One thread per worker; torch (imported only to resample) reads this when first imported.
    os.environ["OMP_NUM_THREADS"] = "1"


def _ready() -> None:
    """A helper's first task: returns once the helper has imported this module (and with it
    NumPy, SciPy and soundfile), about 0.5 s after it starts."""


@dataclass
class _Task:
    """A task handed out, and where its outcome comes from: a helper (``helper``, its results;
    the helper wrote the frames file, which ``reading`` reads back ahead) or this process
    (``results``, ``frames``, and ``saving``: the journal thread's write of the frames file;
    None when there is nothing to write)."""

    path: Path  # its frames file
    helper: Future[list[Result]] | None = None
    results: list[Result] = field(default_factory=list)
    frames: np.ndarray | None = None
    saving: Future[None] | None = None
    reading: Future[tuple[np.ndarray, np.ndarray]] | None = None  # (frames, their buffer)
    buffer: np.ndarray | None = None  # where ``frames`` were read into, once outcome is taken

    def ready(self) -> bool:
        """Whether :meth:`outcome` would return without waiting."""
        if self.helper is not None:
            return self.helper.done() and (self.reading is None or self.reading.done())
        return self.saving is None or self.saving.done()

    def read_ahead(self, reader: ThreadPoolExecutor, buffers: list[np.ndarray]) -> None:
        """Once a helper has written the frames file, read it back in ``reader``'s thread (the
        read waits for the disk: direct I/O) into one of ``buffers`` (or a new one)."""
        if self.reading is not None or self.helper is None or not self.helper.done():
            return
        if self.helper.exception() is not None:
            return  # raised by outcome
        if all(isinstance(n, str) for _, _, n in self.helper.result()):
            return  # no readable clip: no frames file
        self.reading = reader.submit(load_frames, self.path, buffers.pop() if buffers else None)

    def outcome(self) -> tuple[Path, list[Result], np.ndarray | None]:
        """``(frames file, results, frames)`` once the frames are in the file (frames None:
        no readable clip, or a helper's not read back); a helper's error, or a failed write
        such as a full disk, raises here."""
        if self.helper is not None:
            results = self.helper.result()
            if self.reading is None:
                return self.path, results, None
            frames, self.buffer = self.reading.result()
            return self.path, results, frames
        if self.saving is not None:
            self.saving.result()
        return self.path, self.results, self.frames


def _results(
    tasks: list[list[str]], settings_json: str, workers: int, reserve: Callable[[], Path]
) -> Generator[tuple[Path, list[Result], np.ndarray | None], None, None]:
    """Every task's ``(frames file, results, frames or None)``, in task order, computed
    by ``workers`` processes: this one and ``workers - 1`` helpers; ``reserve()`` names each
    task's frames file when the task is handed out. A task comes once its frames are in the file.

    This process's own tasks are written to the journal by a thread while it computes on (with
    direct I/O the write waits for the disk, see :func:`asdcli.store.save_frames`). Tasks are
    handed out in order, at most ``TASKS_AHEAD`` per helper. Whenever the oldest task is not
    ready yet (also while the helpers are still starting), this process computes the next task
    itself instead of waiting: it is never idle, and a helper's start-up costs nothing. A
    helper's frames file is read back by a thread as soon as the helper is done with it.
    """
    from concurrent.futures import ThreadPoolExecutor

    journal = ThreadPoolExecutor(1, thread_name_prefix="asd-journal")

    def own(task: list[str]) -> _Task:
        path = reserve()
        results, frames = _compute_frames(task, settings_json)
        saving = journal.submit(save_frames, path, frames) if frames is not None else None
        return _Task(path, results=results, frames=frames, saving=saving)

    try:
        if workers <= 1 or len(tasks) <= 1:
            last: _Task | None = None
            for t in tasks:  # the previous task is written while this one is computed
                current = own(t)
                if last is not None:
                    yield last.outcome()
                last = current
            if last is not None:
                yield last.outcome()
            return
        yield own(tasks[0]).outcome()  # before starting helpers: the first clips come at once
        yield from _with_helpers(tasks[1:], settings_json, workers, reserve, own)
    finally:
        journal.shutdown(wait=True, cancel_futures=True)  # no write outlives featurize


def _with_helpers(
    tasks: list[list[str]],
    settings_json: str,
    workers: int,
    reserve: Callable[[], Path],
    own: Callable[[list[str]], _Task],
) -> Generator[tuple[Path, list[Result], np.ndarray | None], None, None]:
    """:func:`_results` of ``tasks`` with ``workers - 1`` helper processes."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from multiprocessing import get_context

    helpers = min(workers, len(tasks) + 1) - 1  # no helper without a task to take
    # forkserver: helpers must not inherit this process's store lock or h5py state.
    ctx = get_context("forkserver")
    pool = ProcessPoolExecutor(helpers, mp_context=ctx, initializer=_init_worker)
    reader = ThreadPoolExecutor(1, thread_name_prefix="asd-reader")
    buffers: list[np.ndarray] = []  # page-aligned, for the read-back; reused task after task
    try:
        starting = [pool.submit(_ready) for _ in range(helpers)]
        queue: deque[_Task] = deque()  # in task order, by a helper or computed here
        following = 0  # the next task to hand out
        while queue or following < len(tasks):
            if starting and all(f.done() for f in starting):
                for f in starting:
                    f.result()  # a helper that failed to start raises here
                starting = []
            # In flight, not merely in the queue: a helper's finished tasks that wait behind this
            # process's own would otherwise leave it without work.
            sent = sum(t.helper is not None and not t.helper.done() for t in queue)
            while not starting and following < len(tasks) and sent < helpers * TASKS_AHEAD:
                path = reserve()
                helper = pool.submit(_compute, tasks[following], settings_json, str(path))
                queue.append(_Task(path, helper=helper))
                following += 1
                sent += 1
            for t in queue:
                t.read_ahead(reader, buffers)
            waiting = not queue or not queue[0].ready()
            room = len(queue) < helpers * TASKS_AHEAD + OWN_AHEAD
            if waiting and room and following < len(tasks):
                queue.append(own(tasks[following]))
                following += 1
                continue
            task = queue.popleft()
            if task.helper is not None:  # the tail: wait for it, then read its frames
                task.helper.exception()  # waits (an error is raised by outcome)
                task.read_ahead(reader, buffers)
            yield task.outcome()
            if task.buffer is not None:  # its frames are in the store now
                buffers.append(task.buffer)
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        # Not waiting: helpers still starting up (a short run) exit on their own. Frames of
        # tasks never adopted have no batch JSON: the next writer removes them.
        pool.shutdown(wait=False, cancel_futures=True)


def featurize(
    paths: Sequence[Path],
    features: FeatureSettings,
    store: Path,
    *,
    workers: int = 1,
    force: bool = False,
    strict: bool = False,
    batch_clips: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> FeaturizeSummary:
    """Featurize every WAV under ``paths`` into ``store``; cached clips are not recomputed.

    Parameters
    ----------
    workers : processes computing features, this one and ``workers - 1`` helpers (0 = one per
        core); only this process writes the store.
    force : recompute clips that are already cached.
    strict : an unreadable file stops featurize (DataError) instead of being skipped.
    batch_clips : clips per journal batch (see :mod:`asdcli.store`).
    progress : called as ``progress(done, total)`` after each clip.

    A KeyboardInterrupt commits the clips finished so far, sets ``interrupted`` and returns.
    Clips of one machine type and split with the same file name in different folders (in this
    call or already in the store), and clips whose name says another split than their folder,
    are noted in ``warnings``. A full disk raises :class:`~asdcli.store.StoreFull` (a user
    error) after committing what it can; running again finishes the rest.
    """
    t0 = time.perf_counter()
    files = discover(paths)
    features = resolve_rate(files, features)
    parsed = {str(f): parse_path(f) for f in files}  # names are parsed once, not per use

    def parse(p: PurePath) -> ClipInfo:
        return parsed.get(str(p)) or parse_path(p)

    key = features.key()
    summary = FeaturizeSummary(
        store=store,
        key=key,
        sample_rate=features.rate,
        warnings=split_warnings(files, parse) + layout_warnings(files, parse),
    )
    if workers == 0:
        workers = os.cpu_count() or 1
    names = {f.name for f in files}
    saved: list[str] = []  # stored clips that share a name with one of ``files``
    try:
        with StoreWriter(store, key, features.model_dump(mode="json"), batch_clips) as writer:
            stored = writer.known()
            saved.extend(p for p in stored if PurePath(p).name in names)
            _add_clips(
                writer,
                files,
                {} if force else _still_valid(stored, writer.splits(), files, parse),
                summary,
                saved,
                features=features,
                workers=workers,
                strict=strict,
                batch_clips=batch_clips,
                parse=parse,
                progress=progress,
            )
    except KeyboardInterrupt:  # e.g. during the final commit, which the writer completes first
        summary.interrupted = True
    summary.warnings.extend(duplicate_warnings(set(saved), parse))
    summary.seconds = time.perf_counter() - t0
    return summary


def _still_valid(
    known: dict[str, tuple[int, int]],
    splits: dict[str, str],
    files: Sequence[Path],
    parse: Callable[[PurePath], ClipInfo],
) -> dict[str, tuple[int, int]]:
    """``known`` less the clips stored with another split than their folder gives now.

    Stores written before the folder decided the split hold the name's split; such clips are
    featurized again (once), so training sees the split the folder says.
    """
    now = {str(f): parse(f).split for f in files}
    return {p: v for p, v in known.items() if p not in now or splits.get(p) == now[p]}


def _add_clips(
    writer: StoreWriter,
    files: list[Path],
    known: dict[str, tuple[int, int]],
    summary: FeaturizeSummary,
    saved: list[str],
    *,
    features: FeatureSettings,
    workers: int,
    strict: bool,
    batch_clips: int,
    parse: Callable[[PurePath], ClipInfo],
    progress: Callable[[int, int], None] | None,
) -> None:
    """The loop of :func:`featurize`: clips in ``known`` unchanged are counted as cached, the
    others computed and added to ``writer``; paths cached or added are appended to ``saved``."""
    infos = {str(f): parse(f) for f in files}
    todo: list[str] = []
    stats: dict[str, os.stat_result] = {}
    for f in files:
        path = str(f)
        st = f.stat()
        stats[path] = st
        counts = summary.machines.setdefault(infos[path].machine, MachineCounts())
        if known.get(path) == (st.st_size, st.st_mtime_ns):
            counts.clips += 1
            counts.cached += 1
            saved.append(path)
        else:
            todo.append(path)
    done = len(files) - len(todo)
    if progress:
        progress(done, len(files))
    size = max(1, min(TASK_FILES, batch_clips))  # a task's clips are one journal batch
    tasks = [todo[i : i + size] for i in range(0, len(todo), size)]
    results = _results(tasks, features.model_dump_json(), workers, writer.reserve_batch)
    try:
        for n_done, (frames_path, task, frames) in enumerate(results):
            if n_done == 0:  # the benchmark's start-up: launch to this
                log.debug("first %d clip(s) computed, time.time()=%.3f", len(task), time.time())
            with ctrl_c_held():  # a task's clips are added and counted whole, or not at all
                records, failed = [], []
                for path, facts, result in task:
                    if isinstance(result, str):
                        failed.append((path, result))
                        continue
                    assert facts is not None
                    st = stats[path]
                    records.append(
                        ClipRecord(
                            **vars(infos[path]),  # shallow: to_dict (asdict) deep-copies
                            path=path,
                            size=st.st_size,
                            mtime_ns=st.st_mtime_ns,
                            n_frames=result,
                            **facts,
                        )
                    )
                writer.adopt_batch(frames_path, records, frames)
                for rec in records:
                    counts = summary.machines[rec.machine]
                    counts.clips += 1
                    counts.new += 1
                    saved.append(rec.path)
                    if rec.sample_rate != features.rate:
                        rate = rec.sample_rate
                        summary.resampled[rate] = summary.resampled.get(rate, 0) + 1
                    if rec.channels > 1:
                        summary.multichannel += 1
                for path, reason in failed:
                    if strict:
                        raise DataError(f"{path} {reason} (--strict stops at unreadable files).")
                    summary.skipped.append((path, reason))
                    summary.machines[infos[path].machine].skipped += 1
                done += len(task)
                if progress:
                    progress(done, len(files))
    except KeyboardInterrupt:
        summary.interrupted = True  # the writer commits what is finished on exit
    finally:
        results.close()  # stops the worker pool now, not when garbage-collected
