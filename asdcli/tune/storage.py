"""Where studies are kept: one Optuna storage, named by one string.

The storage string is the only thing that changes between one process, several processes on
one machine and several machines:

* a file path (the default, ``studies/optuna-journal.log`` beside the runs folder): Optuna's
  journal file, an append-only log that several processes on one machine share through a lock
  file (also over NFS);
* a database URL (``postgresql://user:password@host/db``, ``sqlite:///studies.db``): Optuna's
  RDB storage, which workers on several machines share. Its trials send a heartbeat, so a
  trial whose machine died is marked failed once its heartbeat is a few minutes old.

A trial records which process runs it (host, pid, process start time). A running trial whose
process has gone on this host (kill -9, a crash, power loss) is marked failed by the next
worker that looks (:func:`fail_dead_trials`): only that trial is lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdcli.errors import UserError
from asdcli.runs import process_gone, process_start

if TYPE_CHECKING:
    import optuna

    from asdcli.settings import Settings
    from asdcli.tune.settings import TuneSettings

JOURNAL_NAME = "optuna-journal.log"
STUDIES_DIR = "studies"
HEARTBEAT_SECONDS = 60
"""RDB storages: each running trial records a heartbeat this often..."""
GRACE_SECONDS = 300
"""...and is marked failed by another worker once its last heartbeat is this old."""
LOCK_GRACE_SECONDS = 10
"""Journal files: a lock file older than this was left by a writer that died (a write takes
milliseconds), and is removed."""
UNCLAIMED_SECONDS = 120.0
"""A running trial that never recorded its process (killed between creation and its first
line) is taken for dead after this long."""


class StorageError(UserError):
    """A storage that cannot be opened or reached."""


def studies_dir(settings: Settings, tune: TuneSettings) -> Path:
    """``tune.dir``, else ``studies/`` beside the runs folder (not in it: every folder there is
    listed as a run)."""
    return tune.dir if tune.dir is not None else settings.paths.runs.parent / STUDIES_DIR


def storage_string(settings: Settings, tune: TuneSettings, explicit: str | None = None) -> str:
    """The storage in force: ``--storage``, else ``tune.storage``, else the journal file."""
    return explicit or tune.storage or str(studies_dir(settings, tune) / JOURNAL_NAME)


def is_database(storage: str) -> bool:
    """A database URL (``scheme://...``) rather than a journal file path."""
    return "://" in storage


def redact(storage: str) -> str:
    """The storage string fit to print or record: a URL's password replaced by ``***``."""
    if not is_database(storage):
        return storage
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:
        return storage.split("://", 1)[0] + "://..."


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """The Optuna storage ``storage`` names (a journal file is created if missing).

    Raises
    ------
    StorageError
        The database cannot be reached, or its driver is missing, or the file cannot be made.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if not is_database(storage):
        # Absolute: Optuna's symlink lock points at the path as given, and a relative one
        # dangles, so a lock left by a killed writer would never be seen as stale.
        path = Path(storage).resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_SECONDS)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
        except OSError as exc:
            raise StorageError(
                f"The study journal {path} cannot be opened ({exc}); pass another --storage."
            ) from None
    from sqlalchemy.exc import SQLAlchemyError

    last: Exception | None = None
    for attempt in range(3):  # two workers creating the tables at once: one of them retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    engine_kwargs={"pool_pre_ping": True},
                )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            last = exc
            time.sleep(0.5 * (attempt + 1))
    first = str(last).strip().splitlines()[0] if last is not None else "unknown error"
    raise StorageError(
        f"The study storage {redact(storage)} cannot be opened: {first}.\n"
        "Check the URL, and that the server runs and accepts this user; PostgreSQL needs its "
        "driver: pip install 'psycopg[binary]'."
    )


def worker_identity() -> dict[str, Any]:
    """What a trial records about the process running it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def _dead(trial: optuna.trial.FrozenTrial, now: float) -> bool:
    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, dict):
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > UNCLAIMED_SECONDS
    pid, start = worker.get("pid"), worker.get("pid_start")
    if worker.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False  # another machine's process: only its heartbeat can tell
    return process_gone(pid, start if isinstance(start, str) else None)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark failed the running trials whose process has gone; their numbers.

    Trials of other hosts are left to the RDB heartbeat (``fail_stale_trials``).
    """
    import optuna
    from optuna.trial import TrialState

    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _dead(trial, now):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                failed.append(trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return failed
