"""The history database: schema and versions, queries, durability against kill -9."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from asdcli.monitor.history import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Entry,
    History,
    HistoryError,
    parse_since,
)


def entry(t: float, machine: str = "fan", score: float = 1.0, decision: int = 0) -> Entry:
    return Entry(
        time=t,
        source="serve",
        file=f"{machine}_{t}.wav",
        machine=machine,
        section="00",
        score=score,
        threshold=2.0,
        decision=decision,
        run="r",
        detector="knn",
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_database_is_wal_versioned_and_marked_as_ours(tmp_path):
    db = tmp_path / "sub" / "monitor.db"
    with History(db) as h:
        h.append([entry(1.0)])
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()
    with History(db) as h:  # reopening migrates nothing and keeps the rows
        assert h.count() == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not a database, just text" * 100), "not a usable SQLite"),
        (lambda p: _sqlite(p, "CREATE TABLE mine (x)"), "another program"),
        (
            lambda p: _sqlite(
                p, f"PRAGMA application_id = {APPLICATION_ID}", "PRAGMA user_version = 99"
            ),
            "schema version 99",
        ),
    ],
    ids=["not sqlite", "another program's", "newer schema"],
)
def test_unusable_files_are_refused_and_left_as_they_were(tmp_path, make, message):
    db = tmp_path / "monitor.db"
    make(db)
    before = digest(db)
    for readonly in (False, True):
        with pytest.raises(HistoryError, match=message):
            History(db, readonly=readonly)
    assert digest(db) == before


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def test_readonly_needs_an_existing_file(tmp_path):
    with pytest.raises(HistoryError, match="does not exist"):
        History(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


def test_queries_filter_by_machine_and_time_and_keep_the_newest(tmp_path):
    with History(tmp_path / "m.db") as h:
        h.append(
            [
                entry(t, m, score=t, decision=int(t % 3 == 0))
                for t in range(1, 11)
                for m in ("fan", "valve")
            ]
        )
        fan = h.query(machine="fan")
        assert [e.time for e in fan] == list(range(1, 11))  # oldest first
        assert [e.time for e in h.query(machine="fan", limit=3)] == [8, 9, 10]
        assert [e.time for e in h.query(machine="valve", since=7.5)] == [8, 9, 10]
        assert len(h.query()) == 20
        latest = h.latest_per_machine(2)
        assert {m: [e.time for e in es] for m, es in latest.items()} == {
            "fan": [9, 10],
            "valve": [9, 10],
        }
        # decisions at t = 3, 6, 9; since 5: 6 and 9 among 6..10
        assert h.anomaly_counts(5.5) == {"fan": (2, 5), "valve": (2, 5)}
        assert fan[0].id is not None
        assert dataclasses.replace(fan[0], id=None) == entry(1, "fan", score=1, decision=0)
        assert (fan[2].score, fan[2].decision, fan[2].threshold) == (3.0, 1, 2.0)


def test_parse_since():
    now = 1_000_000.0
    assert parse_since("1d", now) == now - 86400
    assert parse_since("12h", now) == now - 12 * 3600
    assert parse_since("30m", now) == now - 1800
    assert parse_since("90s", now) == now - 90
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert parse_since("2024-05-01T08:00+02:00") == datetime(2024, 5, 1, 6, tzinfo=UTC).timestamp()
    for bad in ("yesterday", "1y", "-1d", ""):
        with pytest.raises(HistoryError, match="neither a duration"):
            parse_since(bad, now)


def test_a_failed_write_commits_nothing(tmp_path):
    """A result and its ledger row go in together: a result the schema refuses (decision 2)
    leaves no ledger row either, and the error is a HistoryError."""
    with History(tmp_path / "w.db") as h:
        bad = entry(1.0, decision=2)
        with pytest.raises(HistoryError, match="could not be recorded"):
            h.record_watched("r", "/x.wav", 10, 20, bad, None)
        assert h.watched("r") == {} and h.count() == 0
        h.record_watched("r", "/x.wav", 10, 20, entry(2.0), None)
        assert h.count() == 1 and h.watched("r")["/x.wav"].result_id is not None


def test_readers_are_not_blocked_by_a_writer(tmp_path):
    db = tmp_path / "c.db"
    with History(db) as h:
        h.append([entry(1.0)])
        other = sqlite3.connect(db, isolation_level=None, timeout=0.1)
        other.execute("BEGIN IMMEDIATE")  # another process mid-write
        other.execute(
            "INSERT INTO results (time, source, file, machine, section, score, "
            "decision, run, detector) VALUES (2, 's', 'f', 'fan', '00', 1, 0, 'r', 'k')"
        )
        with History(db, readonly=True) as reader:
            assert reader.count() == 1  # the committed state, at once
        other.execute("COMMIT")
        other.close()
        assert h.count() == 2


WRITER = textwrap.dedent(
    """
    import sys
    from asdcli.monitor.history import Entry, History
    h = History(sys.argv[1])
    i = 0
    while True:
        i += 1
        e = Entry(time=float(i), source="serve", file=f"f{i}.wav", machine="fan",
                  section="00", score=float(i), threshold=None, decision=0, run="r",
                  detector="knn")
        (rid,) = h.append([e])
        print(rid, flush=True)  # after COMMIT returned
    """
)


def test_kill_9_loses_no_committed_row(tmp_path):
    db = tmp_path / "k.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        committed = []
        assert proc.stdout is not None
        while len(committed) < 300:
            line = proc.stdout.readline()
            assert line, "the writer died"
            committed.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with History(db) as h:  # opens (recovers the WAL), and holds every row it said it wrote
        ids = {e.id for e in h.query()}
        assert set(committed) <= ids
        assert ids == set(range(1, max(ids) + 1))  # nothing half-written in between
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_history_and_watch_tables_show_a_decision_alike():
    """`asd history` and `asd watch` colour "normal" and "anomaly" the same way."""
    from rich.console import Console

    from asdcli.cli.render import history_table, watch_table
    from asdcli.monitor.history import Entry
    from asdcli.monitor.service import ScoredClip
    from asdcli.monitor.watch import Handled

    def styled(table) -> list[tuple[str, str]]:
        """(escape code, word) of each decision shown, top to bottom."""
        console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
        console.print(table)
        return re.findall(r"\x1b\[([0-9;]*)m(normal|anomaly)", console.export_text(styles=True))

    common = dict(machine="fan", section="00", score=0.5, threshold=0.4, run="r", detector="knn")
    entries = [Entry(time=0.0, source="cli", file=f"{d}.wav", decision=d, **common) for d in (0, 1)]
    results = [
        Handled(
            Path(f"{d}.wav"),
            ScoredClip(
                file=f"{d}.wav",
                decision=d,
                latency_ms=1.0,
                duration=1.0,
                sample_rate=16000,
                **common,
            ),
        )
        for d in (0, 1)
    ]
    history, watch = styled(history_table(entries, "h.db")), styled(watch_table(results, "w"))
    assert history == watch == [("32", "normal"), ("1;31", "anomaly")]  # green, bold red
