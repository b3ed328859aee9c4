"""Shared by the tests of asdcli.monitor: a tiny trained run, and a real uvicorn server."""

from __future__ import annotations

import atexit
import contextlib
import csv
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import typer
from conftest import make_dataset
from typer.testing import CliRunner

from asdcli.monitor.server import WS_PROTOCOL


@dataclass(frozen=True)
class TrainedRun:
    """A run trained on conftest's make_dataset and scored with `asd score`."""

    root: Path
    run: Path
    data: Path
    store: Path
    scores: list[dict[str, str]]  # rows of RUN/scores/scores.csv

    def clip(self, machine: str = "bearing", i: int = 0) -> Path:
        return Path([r for r in self.scores if r["machine"] == machine][i]["path"])


def _invoke(*args: str) -> str:
    from asdcli.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@cache
def trained_run(detector: str = "knn") -> TrainedRun:
    """`asd featurize`, `asd train DETECTOR` and `asd score` on a tiny data set, once per test
    session (in a folder removed at exit; tests must not change it)."""
    root = Path(tempfile.mkdtemp(prefix=f"asd-monitor-{detector}-"))
    atexit.register(shutil.rmtree, root, True)
    data = make_dataset(root / "data")
    store = root / "features.h5"
    here = os.getcwd()
    os.chdir(root)  # the run goes to root/runs
    try:
        _invoke("featurize", str(data), "--store", str(store))
        extra = ["--epochs", "1"] if detector not in ("knn", "lof", "gmm", "iforest") else []
        _invoke("train", detector, "--store", str(store), *extra)
        run = next((root / "runs").iterdir())
        _invoke("score", str(run), "--store", str(store))
    finally:
        os.chdir(here)
    with (run / "scores" / "scores.csv").open(newline="") as fh:
        scores = list(csv.DictReader(fh))
    return TrainedRun(root, run, data, store, scores)


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening-ready TCP socket bound to a free port (handed to uvicorn: no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.contextmanager
def live_server(app: object) -> Iterator[str]:
    """Run ``app`` with a real uvicorn server on a free loopback port in a thread; yields its
    base URL, stops it on exit."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws=WS_PROTOCOL)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serving(run: Path, db: Path, **settings: object) -> Iterator[tuple[str, object]]:
    """The app of ``run`` (ServeSettings ``settings``) on a live server: (base URL, app)."""
    from asdcli.monitor.api import create_app
    from asdcli.monitor.history import History
    from asdcli.monitor.service import ScoringService
    from asdcli.monitor.settings import ServeSettings

    cfg = ServeSettings(db=db, **settings)  # type: ignore[arg-type]
    service = ScoringService(run, max_seconds=cfg.max_seconds)
    with History(db) as history:
        app = create_app(service, history, cfg)
        with live_server(app) as url:
            yield url, app


def command_app(*commands: object) -> typer.Typer:
    """A throwaway Typer app with the monitor's commands (the real CLI registers them)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(lambda: None)  # always `APP COMMAND ...`, even with one command
    for command in commands:
        app.command()(command)  # type: ignore[arg-type]
    return app


def wait_for(predicate: object, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
