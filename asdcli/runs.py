"""Run folders: one folder per training run, described by ``manifest.json``.

Layout of ``runs/<UTC time>_<detector>/``::

    manifest.json        what was trained, on what, with which versions; status
    settings.yaml        the resolved settings of the run
    models/<machine>/    one trained detector per machine type (detector.json + weights)
    thresholds.json      per machine: decision threshold and how it was fitted
    history.csv          machine, epoch, loss, val_loss, seconds
    train_scores.csv     machine, section, domain, file, score (training clips)
    training_curve_<machine>.png
    scores/              written by `asd score`: the DCASE submission files and scores.csv
    metrics.json, metrics.csv, figures/    written by `asd evaluate`

``manifest["status"]`` is ``running`` while training, ``complete`` at the end, ``incomplete``
after Ctrl-C or a failure (the best weights so far are kept). Only a complete run is scored
unless the user insists. A process killed outright (kill -9, power loss) cannot update its
manifest: :func:`load_run` reports a ``running`` run as ``incomplete`` when the manifest's
``hostname`` is this host and its ``pid`` (with its start time, against pid reuse) is gone.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asdcli.errors import RunError
from asdcli.files import read_json, write_json

RUN_LAYOUT_VERSION = 1
MANIFEST = "manifest.json"
DEAD_PROCESS_REASON = "training process ended without finishing"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asdcli")
    except PackageNotFoundError:
        return "0+unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a saved model depends on (imported lazily, present or not)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "asdcli": package_version()}
    for dist in ("torch", "torchaudio", "numpy", "scikit-learn", "h5py", "scipy"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def git_commit() -> str | None:
    """The commit of the source tree asd runs from, if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def new_run_dir(root: Path, detector: str) -> Path:
    """Create ``root/<UTC time>_<detector>`` exclusively; a second run in the same second gets
    ``_2``, ``_3``... (mkdir is atomic, so two processes never share a folder)."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S")
    base = f"{stamp}_{detector}"
    for n in range(1, 1000):
        path = root / (base if n == 1 else f"{base}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"Could not create a new run folder under {root}.")


@dataclass
class Run:
    """A run folder and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def detector(self) -> str:
        return str(self.manifest.get("detector", "?"))

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "?"))

    @property
    def machines(self) -> list[str]:
        return list(self.manifest.get("machines", []))

    def model_dir(self, machine: str) -> Path:
        return self.path / "models" / machine

    def save_manifest(self) -> None:
        self.manifest["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(self.path / MANIFEST, self.manifest)


def start_run(root: Path, detector: str, manifest: dict[str, Any]) -> Run:
    """A new run folder with a manifest in status ``running``."""
    path = new_run_dir(root, detector)
    run = Run(
        path,
        {
            "run_layout_version": RUN_LAYOUT_VERSION,
            "detector": detector,
            "status": "running",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),
            "hostname": socket.gethostname(),
            "versions": library_versions(),
            "git_commit": git_commit(),
            **manifest,
        },
    )
    run.save_manifest()
    return run


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc); None where unknown.

    With the pid it names one process: a pid reused by a later process has another start.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


def _process_gone(pid: int, started: str | None) -> bool:
    """True when no live process is ``pid`` (started at ``started``, when known) on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        pass
    except OSError:
        return False  # cannot tell: keep the manifest's word
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:  # a zombie: ended, not yet reaped
        return True
    return started is not None and process_start(pid) not in (None, started)


def _check_still_running(run: Run) -> None:
    """A ``running`` run whose training process is gone is reported ``incomplete``.

    Judged only for a manifest written on this host (same hostname): a pid means nothing
    elsewhere. The manifest on disk is not changed; the run reads as incomplete each time.
    """
    m = run.manifest
    pid = m.get("pid")
    if m.get("status") != "running" or m.get("hostname") != socket.gethostname():
        return
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        started = m.get("pid_start")
        if _process_gone(pid, started if isinstance(started, str) else None):
            m["status"] = "incomplete"
            m["reason"] = DEAD_PROCESS_REASON


def load_run(path: Path, *, require_complete: bool = True) -> Run:
    """Open a run folder, refusing ones that cannot be used (with a message saying why)."""
    if not path.exists():
        raise RunError(f"Run folder {path} does not exist; `asd report` lists the runs.")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise RunError(f"{path} is not a run folder (no {MANIFEST}).")
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{manifest_path} cannot be read ({exc}).") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{manifest_path} is not a run manifest.")
    version = manifest.get("run_layout_version")
    if version != RUN_LAYOUT_VERSION:
        raise RunError(
            f"{path} was written by another asd version (run layout {version}, this asd reads "
            f"{RUN_LAYOUT_VERSION}); train it again with this version."
        )
    run = Run(path, manifest)
    _check_still_running(run)
    if require_complete and run.status == "running":
        raise RunError(
            f"Run {path.name} is still running (pid {manifest.get('pid')} on "
            f"{manifest.get('hostname', '?')}): wait for it to finish, or pass "
            "--allow-incomplete to use the weights it has saved so far."
        )
    if require_complete and run.status != "complete":
        reason = manifest.get("reason")
        why = f" ({reason})" if isinstance(reason, str) and reason else ""
        raise RunError(
            f"Run {path.name} is {run.status}{why}: its training did not finish. Train again, "
            "or pass --allow-incomplete to use the best weights it saved."
        )
    return run


def list_runs(root: Path) -> list[tuple[Path, Run | str]]:
    """Every folder under ``root`` with a manifest: the Run, or the reason it cannot be read."""
    if not root.is_dir():
        return []
    out: list[tuple[Path, Run | str]] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            out.append((path, load_run(path, require_complete=False)))
        except RunError as exc:
            out.append((path, str(exc)))
    return out


def latest_run(root: Path) -> Path:
    """The most recently started complete run under ``root``."""
    runs = [r for _, r in list_runs(root) if isinstance(r, Run) and r.status == "complete"]
    if not runs:
        raise RunError(f"No complete run under {root}; train one with `asd train DETECTOR`.")
    return max(runs, key=lambda r: (r.manifest.get("started", ""), r.name)).path


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)
