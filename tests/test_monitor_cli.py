"""The commands `serve` and `history`, registered on a throwaway Typer app (the CLI registers
them for real); `asd serve` end to end in its own process."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from monitor_support import command_app, free_socket, trained_run, wait_for
from typer.testing import CliRunner

from asdcli.cli.monitor import history, serve
from asdcli.errors import SettingsError
from asdcli.monitor.history import Entry, History, HistoryError
from asdcli.monitor.server import BindRefused

APP = command_app(serve, history)


def fill(db: Path, now: float) -> None:
    rows = [
        ("fan", now - 3 * 86400, 1.0, 0),
        ("fan", now - 3600, 3.5, 1),
        ("valve", now - 60, 0.5, 0),
    ]
    with History(db) as h:
        h.append(
            [
                Entry(
                    time=t,
                    source="watch",
                    file=f"{m}/{i}.wav",
                    machine=m,
                    section="00",
                    score=s,
                    threshold=2.0,
                    decision=d,
                    run="run1",
                    detector="gmm",
                )
                for i, (m, t, s, d) in enumerate(rows)
            ]
        )


def test_history_prints_filters_and_exports_csv(tmp_path):
    db = tmp_path / "monitor.db"
    fill(db, time.time())
    runner = CliRunner()
    r = runner.invoke(APP, ["history", "--db", str(db)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "3 result(s)" in r.output and "fan/1.wav" in r.output and "anomaly" in r.output
    r = runner.invoke(APP, ["history", "--db", str(db), "--csv"])
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert [row["file"] for row in rows] == ["fan/0.wav", "fan/1.wav", "valve/2.wav"]
    assert list(rows[0]) == [
        "id",
        "iso_time",
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
    ]
    assert (float(rows[1]["score"]), int(rows[1]["decision"])) == (3.5, 1)
    r = runner.invoke(APP, ["history", "--db", str(db), "--csv", "--since", "1d"])
    assert [row["file"] for row in csv.DictReader(io.StringIO(r.output))] == [
        "fan/1.wav",
        "valve/2.wav",
    ]
    r = runner.invoke(
        APP, ["history", "--db", str(db), "--csv", "--machine", "fan", "--since", "2h"]
    )
    assert [row["file"] for row in csv.DictReader(io.StringIO(r.output))] == ["fan/1.wav"]
    r = runner.invoke(APP, ["history", "--db", str(db), "--csv", "--limit", "1"])
    assert [row["file"] for row in csv.DictReader(io.StringIO(r.output))] == ["valve/2.wav"]


def test_history_errors_are_user_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(APP, ["history", "--db", str(tmp_path / "none.db")])
    assert isinstance(r.exception, HistoryError) and "does not exist" in str(r.exception)
    fill(tmp_path / "m.db", time.time())
    r = runner.invoke(APP, ["history", "--db", str(tmp_path / "m.db"), "--since", "lately"])
    assert isinstance(r.exception, HistoryError) and "30m, 12h, 1d" in str(r.exception)


def test_serve_refuses_a_public_address_without_a_token_and_bad_flags(tmp_path):
    run = trained_run("knn").run
    runner = CliRunner()
    r = runner.invoke(APP, ["serve", str(run), "--host", "0.0.0.0", "--db", str(tmp_path / "d")])
    assert isinstance(r.exception, BindRefused)
    assert "without a token" in str(r.exception) and "--token" in str(r.exception)
    assert not (tmp_path / "d").exists()  # refused before anything was opened
    r = runner.invoke(APP, ["serve", str(run), "--port", "70000"])
    assert isinstance(r.exception, SettingsError)
    assert "serve.port = 70000" in str(r.exception) and "--port" in str(r.exception)


SERVER = textwrap.dedent(
    """
    import typer
    from asdcli.cli.monitor import serve
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(lambda: None)
    app.command()(serve)
    app()
    """
)


@pytest.mark.slow
def test_asd_serve_answers_with_the_scores_of_asd_score(tmp_path):
    """Acceptance: the serve command in its own process (uvicorn on a loopback port) answers
    /v1/score for every test clip with `asd score`'s score (to 1e-5) and decision; Ctrl-C
    stops it cleanly, with every result in the history."""
    knn = trained_run("knn")
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # the server binds it again at once
    db = tmp_path / "monitor.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ASD_SERVE__TOKEN": "tok"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, "serve", str(knn.run), "--port", str(port), "--db", str(db)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, "asd serve to start")
        auth = {"authorization": "Bearer tok"}  # from ASD_SERVE__TOKEN
        assert httpx.get(f"{url}/v1/models").status_code == 401
        for row in knn.scores:
            r = httpx.post(
                f"{url}/v1/score",
                headers=auth,
                timeout=30,
                files={
                    "file": (f"{row['machine']}/test/{row['file']}", Path(row["path"]).read_bytes())
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()["score"] == pytest.approx(float(row["score"]), abs=1e-5)
            assert r.json()["decision"] == int(row["decision"])
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    # uvicorn shuts down, then passes the Ctrl-C on: 130 as for any interrupted asd command.
    assert proc.returncode in (0, 130), stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert f"Serving {knn.run}" in stderr.decode().replace("\n", "")
    with History(db, readonly=True) as h:
        assert h.count() == len(knn.scores)
