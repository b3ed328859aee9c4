"""The monitoring history: one SQLite file (``monitor.db``), and the only module that knows it.

`asd serve` and `asd watch` append every result; `asd history` and the dashboard read them.

Schema (version 1, in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as
ours, so another program's database is refused, never changed)::

    results   id, time (Unix seconds, UTC), source (serve, stream, watch), file, machine,
              section, score, threshold (NULL: the run has none), decision (0/1), run,
              detector, latency_ms, warning
    watched   run, path, size, mtime_ns, time, result_id (NULL when the file could not be
              scored), error: `asd watch`'s ledger, one row per file and run

Durability and concurrency: WAL journal, so readers never block the writer nor the writer
readers; ``synchronous=NORMAL``, so a committed row survives the process being killed (the
WAL is in the OS's hands once ``COMMIT`` returns; only a power loss may take the last ones);
``busy_timeout``, so two writing processes (a server and a watcher) wait for each other
instead of failing. Each process has one writer connection, shared by its threads under a
lock; a result and its ledger row are committed in one transaction, so a watched file is
either scored and recorded, or neither.

Migrations are numbered SQL scripts (:data:`MIGRATIONS`), each applied in its own transaction
together with the new ``user_version``: a file from a newer asd is refused, an older one is
brought up to date, a crash mid-way leaves the previous version.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asdcli.errors import UserError

APPLICATION_ID = 0x41534431  # "ASD1"
BUSY_TIMEOUT_MS = 10_000

MIGRATIONS: tuple[str, ...] = (
    # 1: results and the watcher's ledger.
    """
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        source TEXT NOT NULL,
        file TEXT NOT NULL,
        machine TEXT NOT NULL,
        section TEXT NOT NULL,
        score REAL NOT NULL,
        threshold REAL,
        decision INTEGER NOT NULL CHECK (decision IN (0, 1)),
        run TEXT NOT NULL,
        detector TEXT NOT NULL,
        latency_ms REAL,
        warning TEXT
    );
    CREATE INDEX results_machine_time ON results (machine, time);
    CREATE INDEX results_time ON results (time);
    CREATE TABLE watched (
        run TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        time REAL NOT NULL,
        result_id INTEGER REFERENCES results (id),
        error TEXT,
        PRIMARY KEY (run, path)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

COLUMNS = (
    "time",
    "source",
    "file",
    "machine",
    "section",
    "score",
    "threshold",
    "decision",
    "run",
    "detector",
    "latency_ms",
    "warning",
)


class HistoryError(UserError):
    """A history database that cannot be used: not SQLite, not ours, from a newer asd."""


@dataclass(frozen=True)
class Entry:
    """One scored clip as the history keeps it. ``time``: Unix seconds (UTC)."""

    time: float
    source: str
    file: str
    machine: str
    section: str
    score: float
    threshold: float | None
    decision: int
    run: str
    detector: str
    latency_ms: float | None = None
    warning: str | None = None
    id: int | None = None

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)

    @property
    def iso_time(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class WatchedFile:
    """A ledger row: ``path`` was handled by ``run`` (scored, or refused with ``error``)."""

    path: str
    size: int
    mtime_ns: int
    result_id: int | None
    error: str | None


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``"1d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"`` or an ISO date/time -> Unix seconds.

    An ISO time without a zone is UTC.

    Raises
    ------
    HistoryError
        Neither form, with examples of both.
    """
    now = time.time() if now is None else now
    m = _SINCE.match(text)
    if m:
        return now - float(m[1]) * _UNIT_SECONDS[m[2]]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HistoryError(
            f"--since {text!r} is neither a duration (30m, 12h, 1d, 2w) nor a date "
            "(2024-05-01 or 2024-05-01T08:00)."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE itself.
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class History:
    """The history database of this process: one writer connection, readers per thread.

    Parameters
    ----------
    path : the SQLite file; created (with its folder) when missing.
    readonly : open for reading only (`asd history`): a missing file is an error, nothing is
        created or migrated.

    Raises
    ------
    HistoryError
        The file is not SQLite, is another program's database, or has a newer schema.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._blank = False
        if readonly:
            if not self.path.is_file():
                raise HistoryError(
                    f"{self.path} does not exist: nothing was recorded yet (asd serve and "
                    "asd watch write it; serve.db sets where)."
                )
            version = self._check(self._reader())
            # 0: a writer is creating the file this moment; it holds nothing yet.
            self._blank = version == 0
            if 0 < version < SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path} has history schema version {version}; open it once with "
                    "asd serve or asd watch of this version to bring it up to date."
                )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = _connect(self.path)
            self._writer = conn
            self._check(conn)  # before anything is written: another program's file stays as is
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except HistoryError:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            raise HistoryError(f"{self.path} is not a usable SQLite database ({exc}).") from None

    # --- schema ---------------------------------------------------------------------------------

    def _versions(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return int(app_id), int(version), int(tables)

    def _check(self, conn: sqlite3.Connection) -> int:
        """The file's schema version; refuses files that are not ours or are newer."""
        try:
            app_id, version, tables = self._versions(conn)
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path} is not a usable SQLite database ({exc}).") from None
        if app_id != APPLICATION_ID and (app_id != 0 or tables > 0):
            raise HistoryError(
                f"{self.path} is an SQLite database of another program; it is left as it is. "
                "Point serve.db at another file."
            )
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{self.path} has history schema version {version}, this asd knows up to "
                f"{SCHEMA_VERSION}: upgrade asd, or use another serve.db."
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = self._check(conn)
        while version < SCHEMA_VERSION:
            # BEGIN IMMEDIATE takes the write lock, so two processes opening a new file do not
            # both apply a migration: the second re-reads the version inside the transaction.
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = self._check(conn)
                if current != version:
                    conn.execute("ROLLBACK")
                    version = current
                    continue
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            version += 1

    # --- connections ------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + ("?mode=ro" if self.readonly else "")
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._writer is None:
            raise RuntimeError("this History is read-only (or closed)")
        with self._lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise HistoryError(
                        f"{self.path}: the result could not be recorded ({exc}); nothing "
                        "recorded before is lost. Free disk space, or point serve.db elsewhere."
                    ) from None
                raise

    def close(self) -> None:
        with self._lock:
            for conn in [*self._readers, *([self._writer] if self._writer else [])]:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
            self._writer = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> list[int]:
        """Commit ``entries`` in one transaction; their new ids. Returns once they are durable
        against a crash of this process."""
        with self._transaction() as conn:
            return [_insert(conn, e) for e in entries]

    def record_watched(
        self, run: str, path: str, size: int, mtime_ns: int, entry: Entry | None, error: str | None
    ) -> int | None:
        """Commit one watched file: its result (``entry``, or ``None`` with the ``error`` that
        kept it from being scored) and its ledger row, together. The result's id or ``None``."""
        with self._transaction() as conn:
            result_id = _insert(conn, entry) if entry is not None else None
            conn.execute(
                "INSERT OR REPLACE INTO watched (run, path, size, mtime_ns, time, result_id, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run, path, size, mtime_ns, time.time(), result_id, error),
            )
            return result_id

    # --- reading ------------------------------------------------------------------------------

    def watched(self, run: str) -> dict[str, WatchedFile]:
        """Path -> ledger row of every file ``run`` handled."""
        rows = self._rows(
            "SELECT path, size, mtime_ns, result_id, error FROM watched WHERE run = ?", [run]
        )
        return {r[0]: WatchedFile(*r) for r in rows}

    def query(
        self,
        machine: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Results, oldest first; ``limit`` keeps the newest ``limit`` of them."""
        where, args = _where(machine, since)
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM results{where} ORDER BY time DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = self._rows(sql, args)
        return [_entry(r) for r in reversed(rows)]

    def latest_per_machine(self, per_machine: int) -> dict[str, list[Entry]]:
        """Machine -> its newest ``per_machine`` results, oldest first."""
        machines = [r[0] for r in self._rows("SELECT DISTINCT machine FROM results", [])]
        return {m: self.query(machine=m, limit=per_machine) for m in sorted(machines)}

    def anomaly_counts(self, since: float) -> dict[str, tuple[int, int]]:
        """Machine -> (anomalies, results) since ``since`` (Unix seconds)."""
        rows = self._reader().execute(
            "SELECT machine, sum(decision), count(*) FROM results WHERE time >= ? GROUP BY machine",
            (since,),
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def count(self) -> int:
        rows = self._rows("SELECT count(*) FROM results", [])
        return int(rows[0][0]) if rows else 0

    def _rows(self, sql: str, args: list[Any]) -> list[Any]:
        if self._blank:
            return []
        try:
            return self._reader().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path} cannot be read ({exc}).") from None


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _insert(conn: sqlite3.Connection, e: Entry) -> int:
    cur = conn.execute(
        f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        e.row(),
    )
    assert cur.lastrowid is not None
    return int(cur.lastrowid)


def _where(machine: str | None, since: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if machine is not None:
        clauses.append("machine = ?")
        args.append(machine)
    if since is not None:
        clauses.append("time >= ?")
        args.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(id=row[0], **dict(zip(COLUMNS, row[1:], strict=True)))
