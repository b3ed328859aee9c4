"""`asd watch`: new files scored once, also across restarts; files being written waited for."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from monitor_support import command_app, trained_run, wait_for
from typer.testing import CliRunner

from asdcli.cli.monitor import watch
from asdcli.monitor.history import History
from asdcli.monitor.service import ScoringService
from asdcli.monitor.settings import WatchSettings
from asdcli.monitor.watch import FolderWatcher, watch_folder


@pytest.fixture(scope="module")
def knn():
    return trained_run("knn")


@pytest.fixture(scope="module")
def service(knn):
    return ScoringService(knn.run)


def drop(knn, folder: Path, machine: str, i: int) -> Path:
    """Copy test clip ``i`` of ``machine`` to ``folder/machine/`` (the machine's folder)."""
    src = knn.clip(machine, i)
    dst = folder / machine / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def expected(knn, path: Path) -> float:
    machine = path.parent.name
    return next(
        float(r["score"]) for r in knn.scores if r["machine"] == machine and r["file"] == path.name
    )


def results(db: Path) -> list:
    if not db.exists():
        return []
    with History(db, readonly=True) as h:
        return h.query()


def test_once_scores_what_is_there_and_a_restart_scores_only_new_files(knn, service, tmp_path):
    inbox, db = tmp_path / "inbox", tmp_path / "w.db"
    first = [drop(knn, inbox, "bearing", 0), drop(knn, inbox, "fan", 1)]
    settings = WatchSettings(stable_seconds=0.0)
    with History(db) as h:
        s1 = watch_folder(inbox, service, h, settings, once=True)
    assert (s1.scored, s1.failed, s1.already) == (2, 0, 0)
    new = drop(knn, inbox, "fan", 2)
    with History(db) as h:  # a restart: a new process, the same database
        s2 = watch_folder(inbox, service, h, settings, once=True)
    assert (s2.scored, s2.already) == (1, 2)
    assert [d.path for d in s2.handled] == [new.resolve()]
    entries = results(db)
    assert sorted(e.file for e in entries) == sorted(
        str(p.relative_to(inbox)) for p in [*first, new]
    )
    for e in entries:
        path = inbox / e.file
        assert e.score == pytest.approx(expected(knn, path), abs=1e-5)
        assert (e.machine, e.source) == (path.parent.name, "watch")
    with History(db) as h:
        assert watch_folder(inbox, service, h, settings, once=True).scored == 0


def test_a_file_still_being_written_is_scored_once_complete(knn, service, tmp_path):
    inbox = tmp_path / "inbox"
    src = knn.clip("bearing", 1)
    data = src.read_bytes()
    dst = inbox / "bearing" / src.name
    dst.parent.mkdir(parents=True)
    dst.write_bytes(data[: len(data) // 2])
    now = [0.0]
    with History(tmp_path / "w.db") as h:
        w = FolderWatcher(inbox, service, h, stable_seconds=1.0, clock=lambda: now[0])
        w.scan()
        assert list(w.pending) == [dst.resolve()]
        now[0] = 0.9
        assert w.ready() == []  # not yet stable
        with dst.open("ab") as fh:  # the writer goes on
            fh.write(data[len(data) // 2 :])
        now[0] = 1.5  # 1.5 s after the first look, but the file changed meanwhile
        assert w.ready() == []
        now[0] = 2.6
        (ready,) = w.ready()
        done = w.handle(ready)
    assert done.result is not None
    assert done.result.score == pytest.approx(expected(knn, dst), abs=1e-5)


def test_unscorable_files_are_recorded_and_retried_only_when_changed(knn, service, tmp_path):
    inbox, db = tmp_path / "inbox", tmp_path / "w.db"
    junk = inbox / "fan" / "broken.wav"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not audio" * 50)
    stray = inbox / "toaster" / "rec.wav"  # a machine the run does not know
    stray.parent.mkdir()
    shutil.copy(knn.clip("fan", 0), stray)
    (inbox / "fan" / "notes.txt").write_text("ignored")
    settings = WatchSettings(stable_seconds=0.0)
    with History(db) as h:
        s = watch_folder(inbox, service, h, settings, once=True)
        assert (s.scored, s.failed) == (0, 2)
        errors = {d.path.name: d.error for d in s.handled}
        assert "not a readable audio file" in errors["broken.wav"]
        assert "toaster" in errors[stray.name] and "bearing, fan" in errors[stray.name]
    with History(db) as h:  # unchanged: not tried again
        assert watch_folder(inbox, service, h, settings, once=True).handled == []
    shutil.copy(knn.clip("fan", 0), junk)  # replaced by a real recording
    with History(db) as h:
        s = watch_folder(inbox, service, h, settings, once=True)
    assert [(d.path.name, d.result is not None) for d in s.handled] == [("broken.wav", True)]
    assert len(results(db)) == 1


def test_machine_option_applies_to_every_file(knn, service, tmp_path):
    inbox = tmp_path / "flat"
    inbox.mkdir()
    shutil.copy(knn.clip("fan", 3), inbox / "rec.wav")
    with History(tmp_path / "w.db") as h:
        s = watch_folder(
            inbox, service, h, WatchSettings(stable_seconds=0), machine="fan", once=True
        )
    (done,) = s.handled
    assert done.result is not None and done.result.machine == "fan"
    assert done.result.score == pytest.approx(
        float([r for r in knn.scores if r["machine"] == "fan"][3]["score"]), abs=1e-5
    )


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_live_watch_scores_files_as_they_arrive(knn, service, tmp_path, polling):
    inbox, db = tmp_path / "inbox", tmp_path / "w.db"
    inbox.mkdir()
    stop = threading.Event()
    settings = WatchSettings(stable_seconds=0.3, force_polling=polling, poll_seconds=0.2)
    handled = []
    with History(db) as h:
        thread = threading.Thread(
            target=lambda: handled.append(watch_folder(inbox, service, h, settings, stop=stop))
        )
        thread.start()
        try:
            paths = [drop(knn, inbox, "bearing", 2)]
            wait_for(lambda: len(results(db)) == 1, what="the first file")
            paths.append(drop(knn, inbox, "fan", 0))
            wait_for(lambda: len(results(db)) == 2, what="the second file")
        finally:
            stop.set()
            thread.join(30)
    (summary,) = handled
    assert summary.mode == ("polling" if polling else "events")
    assert summary.scored == 2
    for e, p in zip(results(db), paths, strict=True):
        assert e.score == pytest.approx(expected(knn, p), abs=1e-5)


WATCHER = textwrap.dedent(
    """
    import sys, typer
    from asdcli.cli.monitor import watch
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    app.command()(watch)
    app()
    """
)


def start_watcher(knn, inbox: Path, db: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-c",
        WATCHER,
        "watch",
        str(inbox),
        "--run",
        str(knn.run),
        "--db",
        str(db),
        "--stable-seconds",
        "0.3",
    ]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=inbox.parent
    )


@pytest.mark.slow
def test_each_file_is_scored_exactly_once_across_a_killed_and_restarted_watch(knn, tmp_path):
    """The watch command in its own process: files dropped while it runs, while it is down
    (killed with SIGKILL) and after it restarts are each scored exactly once."""
    inbox, db = tmp_path / "inbox", tmp_path / "w.db"
    inbox.mkdir()
    dropped = [drop(knn, inbox, "bearing", 0)]  # before the first start
    proc = start_watcher(knn, inbox, db)
    try:
        wait_for(lambda: len(results(db)) == 1, 60, "the file present at start")
        dropped.append(drop(knn, inbox, "fan", 0))  # while running
        wait_for(lambda: len(results(db)) == 2, 60, "a file dropped while running")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    dropped += [drop(knn, inbox, "fan", 1), drop(knn, inbox, "bearing", 1)]  # while down
    proc = start_watcher(knn, inbox, db)
    try:
        wait_for(lambda: len(results(db)) == 4, 60, "the files dropped while it was down")
        dropped.append(drop(knn, inbox, "fan", 2))  # after the restart
        wait_for(lambda: len(results(db)) == 5, 60, "a file dropped after the restart")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = proc.communicate(timeout=30)
    entries = results(db)
    files = [e.file for e in entries]
    assert sorted(files) == sorted(str(p.relative_to(inbox)) for p in dropped)
    assert len(set(files)) == len(files) == 5
    for e in entries:
        assert e.score == pytest.approx(expected(knn, inbox / e.file), abs=1e-5)
    assert "Traceback" not in stderr.decode()


def test_watch_command_once_prints_the_table(knn, tmp_path):
    inbox = tmp_path / "inbox"
    drop(knn, inbox, "bearing", 3)
    app = command_app(watch)
    r = CliRunner().invoke(
        app,
        [
            "watch",
            str(inbox),
            "--run",
            str(knn.run),
            "--once",
            "--db",
            str(tmp_path / "w.db"),
            "--stable-seconds",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "bearing" in r.output and "1 file(s) scored" in r.output
    r = CliRunner().invoke(
        app,
        [
            "watch",
            str(inbox),
            "--run",
            str(knn.run),
            "--once",
            "--db",
            str(tmp_path / "w.db"),
            "--stable-seconds",
            "-1",
        ],
    )
    assert r.exit_code != 0
    assert "watch.stable_seconds" in str(r.exception) and "--stable-seconds" in str(r.exception)
