"""`asd watch DIR`: score every new WAV file under a folder, once, also across restarts.

Files are noticed with file-system events (the ``watchfiles`` library); where events are not
available (an inotify limit, a network drive) it polls instead (``watch.force_polling`` asks for
it). A file is scored only once its size and modification time have stayed the same for
``watch.stable_seconds``, so a recording still being written is waited for.

The history database is the record of what was done: each file's result and its ledger row
(run, path, size, mtime) are committed together (:meth:`History.record_watched`), so a
watcher killed at any moment scores nothing twice and forgets nothing it committed. A file
that could not be scored (not audio, an unknown machine) is recorded with its error and tried
again only if it changes; a scored file is never scored again by the same run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asdcli.errors import DataError
from asdcli.monitor.history import History, WatchedFile
from asdcli.monitor.service import ClipRejected, ScoredClip, ScoringService
from asdcli.monitor.settings import WatchSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handled:
    """What happened to one file: its ``result``, or the ``error`` that kept it from one."""

    path: Path
    result: ScoredClip | None = None
    error: str | None = None


@dataclass
class WatchSummary:
    scored: int = 0
    failed: int = 0
    already: int = 0  # found at start, handled by an earlier watch of the same run
    handled: list[Handled] = field(default_factory=list)
    mode: str = "events"  # events, polling


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # clock time at which (size, mtime_ns) was first seen


def _is_wav(path: Path) -> bool:
    return path.suffix.lower() == ".wav" and not path.name.startswith(".")


class FolderWatcher:
    """The state of one watched folder: what is pending, what is ready, what is done.

    Parameters
    ----------
    root : the folder.
    service, history : the run to score with, the database to record in.
    machine : the machine of every file (default: from each file's folders, as featurize).
    stable_seconds : how long size and mtime must stay unchanged before a file is scored.
    clock : monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        root: Path,
        service: ScoringService,
        history: History,
        *,
        machine: str | None = None,
        stable_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not root.is_dir():
            raise DataError(f"{root} is not a folder; asd watch watches a folder of WAV files.")
        self.root = root.resolve()
        self.service, self.history, self.machine = service, history, machine
        self.stable_seconds, self.clock = stable_seconds, clock
        self.ledger: dict[str, WatchedFile] = history.watched(service.name)
        self.pending: dict[Path, _Seen] = {}

    def _done(self, path: Path, size: int, mtime_ns: int) -> bool:
        row = self.ledger.get(str(path))
        if row is None:
            return False
        # Scored: never again. Refused: again once the file has changed.
        return row.result_id is not None or (row.size, row.mtime_ns) == (size, mtime_ns)

    def note(self, path: Path) -> bool:
        """Look at ``path`` (new or changed); True if it is (still) waiting to be scored."""
        path = path.resolve()
        try:
            st = path.stat()
        except OSError:  # gone again (a temporary file, a move)
            self.pending.pop(path, None)
            return False
        if not path.is_file() or not _is_wav(path) or self._done(path, st.st_size, st.st_mtime_ns):
            self.pending.pop(path, None)
            return False
        seen = self.pending.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.pending[path] = _Seen(st.st_size, st.st_mtime_ns, self.clock())
        return True

    def scan(self) -> int:
        """Note every WAV file under the folder; the number already handled earlier."""
        already = 0
        for path in sorted(self.root.rglob("*")):
            if _is_wav(path) and not self.note(path) and str(path.resolve()) in self.ledger:
                already += 1
        return already

    def ready(self) -> list[Path]:
        """Pending files unchanged for ``stable_seconds`` (checked again now), oldest first."""
        now = self.clock()
        out = []
        for path, seen in sorted(self.pending.items(), key=lambda kv: (kv[1].since, kv[0])):
            # note() looks again: a file that changed meanwhile gets a new `since`.
            stable = now - seen.since >= self.stable_seconds
            if stable and self.note(path) and self.pending[path].since == seen.since:
                out.append(path)
        return out

    def handle(self, path: Path) -> Handled:
        """Score ``path`` and commit its result and ledger row together."""
        seen = self.pending.pop(path)
        rel = path.relative_to(self.root)
        result: ScoredClip | None = None
        error: str | None = None
        try:
            result = self.service.score_path(path, file=str(rel), machine=self.machine)
        except ClipRejected as exc:
            error = str(exc)
        # The history names the file by its path under the folder: names repeat across machines.
        entry = result.entry("watch", str(rel)) if result is not None else None
        result_id = self.history.record_watched(
            self.service.name, str(path), seen.size, seen.mtime_ns, entry, error
        )
        self.ledger[str(path)] = WatchedFile(str(path), seen.size, seen.mtime_ns, result_id, error)
        return Handled(path, result, error)


def _changes(
    root: Path, settings: WatchSettings, stop: threading.Event, summary: WatchSummary
) -> Iterator[set[Path]]:
    """Paths that changed, and an empty set at least every ``poll_seconds`` (a tick to check
    pending files). File-system events, or polling when they are unavailable or asked for."""
    import watchfiles

    tick_ms = max(int(settings.poll_seconds * 1000), 50)
    for polling in (settings.force_polling, True):
        summary.mode = "polling" if polling else "events"
        try:
            for changes in watchfiles.watch(
                root,
                stop_event=stop,
                debounce=tick_ms,
                step=50,
                rust_timeout=tick_ms,
                yield_on_timeout=True,
                force_polling=polling,
                poll_delay_ms=tick_ms,
                watch_filter=None,
            ):
                yield {Path(p) for _, p in changes}
            return
        except (OSError, RuntimeError) as exc:  # e.g. the inotify watch limit
            if polling:
                raise
            log.warning("file-system events unavailable (%s); polling %s instead", exc, root)


def watch_folder(
    root: Path,
    service: ScoringService,
    history: History,
    settings: WatchSettings,
    *,
    machine: str | None = None,
    once: bool = False,
    on_handled: Callable[[Handled], None] | None = None,
    stop: threading.Event | None = None,
) -> WatchSummary:
    """Score the WAV files under ``root`` that the run has not handled yet, then (unless
    ``once``) every new one, until ``stop`` is set or Ctrl-C.

    ``once``: score what is there (waiting for files still being written) and return.

    Raises
    ------
    DataError
        ``root`` is not a folder.
    """
    stop = stop or threading.Event()
    watcher = FolderWatcher(
        root, service, history, machine=machine, stable_seconds=settings.stable_seconds
    )
    summary = WatchSummary()
    summary.already = watcher.scan()

    def drain() -> None:
        for path in watcher.ready():
            if stop.is_set():
                return
            done = watcher.handle(path)
            summary.handled.append(done)
            if done.result is not None:
                summary.scored += 1
            else:
                summary.failed += 1
            if on_handled:
                on_handled(done)

    if once:
        summary.mode = "once"
        while watcher.pending and not stop.is_set():
            drain()
            if watcher.pending:
                stop.wait(min(settings.poll_seconds, max(settings.stable_seconds, 0.05)))
        return summary
    for changed in _changes(watcher.root, settings, stop, summary):
        for path in changed:
            if path == watcher.root or path.is_dir():
                watcher.scan()  # a folder moved in
            else:
                watcher.note(path)
        drain()
    return summary
