"""Run folders: one folder per training run, and the only module that knows its files.

Layout of ``runs/<UTC time>_<detector>/``::

    manifest.json        what was trained, on what, with which versions; status; the SHA-256
                         of every model file and of thresholds.json (``files``)
    settings.yaml        the resolved settings of the run
    models/<machine>/    one trained detector per machine type (detector.json + its files)
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

**Verified files.** Each time training completes a machine type, the manifest records the
SHA-256 of every file under ``models/<machine>/`` and of ``thresholds.json``
(:meth:`Run.complete_machine`); :meth:`Run.verify` checks them before a run is scored, so a
model file changed, removed or added after training is named and refused. The hashes detect
changes; they do not say who made the run (whoever can edit a model can edit the manifest).
Run layout 1 (before the hashes) is still listed and evaluated, but not scored unverified.
"""

from __future__ import annotations

import contextlib
import csv
import math
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
from asdcli.files import read_json, sha256_of, write_csv, write_json, write_text

RUN_LAYOUT_VERSION = 2
"""2: the manifest records file hashes (``files``). 1: the same without them."""
_UNHASHED_LAYOUT = 1
_READABLE_LAYOUTS = (_UNHASHED_LAYOUT, RUN_LAYOUT_VERSION)

MANIFEST = "manifest.json"
SETTINGS = "settings.yaml"
MODELS = "models"
THRESHOLDS = "thresholds.json"
HISTORY = "history.csv"
TRAIN_SCORES = "train_scores.csv"
SCORES = "scores"
FIGURES = "figures"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
# Where `asd score` moves the metrics of the previous scoring (they no longer describe it).
_METRICS_ASIDE = {METRICS_JSON: "metrics.previous.json", METRICS_CSV: "metrics.previous.csv"}

HISTORY_HEADER = ("machine", "epoch", "loss", "val_loss", "seconds")
TRAIN_SCORES_HEADER = ("machine", "section", "domain", "file", "score")
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


def _number(text: str | None) -> float | None:
    """A CSV cell as a float; an empty cell is ``None``."""
    if text is None or not text.strip():
        return None
    return float(text)


@dataclass
class Run:
    """A run folder and its manifest: every file of the folder is named and read here.

    Attributes
    ----------
    path : Path
        The run folder.
    manifest : dict
        The parsed ``manifest.json`` (changed in memory, written by :meth:`save_manifest`).
    """

    path: Path
    manifest: dict[str, Any]

    # --- what the manifest says ----------------------------------------------------------------

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
        """The machine types the run was started for."""
        return list(self.manifest.get("machines", []))

    @property
    def completed_machines(self) -> list[str]:
        """The machine types whose model was saved (all of :attr:`machines` in runs written
        before the manifest listed them)."""
        return list(self.manifest.get("completed_machines", self.machines))

    @property
    def feature_key(self) -> str | None:
        key = self.manifest.get("feature_key")
        return key if isinstance(key, str) else None

    # --- paths ---------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def settings_path(self) -> Path:
        return self.path / SETTINGS

    @property
    def thresholds_path(self) -> Path:
        return self.path / THRESHOLDS

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def train_scores_path(self) -> Path:
        return self.path / TRAIN_SCORES

    @property
    def scores_dir(self) -> Path:
        """Where `asd score` writes the submission files by default."""
        return self.path / SCORES

    @property
    def figures_dir(self) -> Path:
        """Where `asd evaluate` draws its figures."""
        return self.path / FIGURES

    @property
    def metrics_json(self) -> Path:
        return self.path / METRICS_JSON

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_CSV

    def model_dir(self, machine: str) -> Path:
        return self.path / MODELS / machine

    def training_curve_path(self, machine: str) -> Path:
        return self.path / f"training_curve_{machine}.png"

    # --- writing -------------------------------------------------------------------------------

    def save_manifest(self) -> None:
        self.manifest["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(self.manifest_path, self.manifest)

    def write_settings(self, text: str) -> None:
        write_text(self.settings_path, text)

    def write_training_outputs(
        self,
        thresholds: dict[str, dict[str, Any]],
        history: list[list[Any]],
        train_scores: list[list[Any]],
    ) -> None:
        """Write ``thresholds.json`` (machine -> ``{"threshold", ...how it was fitted}``),
        ``history.csv`` (rows of :data:`HISTORY_HEADER`) and ``train_scores.csv`` (rows of
        :data:`TRAIN_SCORES_HEADER`), each whole, replacing the previous version."""
        write_json(self.thresholds_path, thresholds)
        write_csv(self.history_path, history, header=HISTORY_HEADER)
        write_csv(self.train_scores_path, train_scores, header=TRAIN_SCORES_HEADER)

    def complete_machine(self, machine: str, n_params: int) -> None:
        """Mark ``machine`` trained: its model and the thresholds are on disk. Records their
        hashes and saves the manifest."""
        self.manifest.setdefault("n_params", {})[machine] = int(n_params)
        done = self.manifest.setdefault("completed_machines", [])
        if machine not in done:
            done.append(machine)
        files: dict[str, str] = self.manifest.setdefault("files", {})
        prefix = f"{MODELS}/{machine}/"
        for rel in [r for r in files if r.startswith(prefix)]:
            del files[rel]
        for path in self._model_files(machine):
            files[self._rel(path)] = sha256_of(path)
        if self.thresholds_path.is_file():
            files[THRESHOLDS] = sha256_of(self.thresholds_path)
        self.save_manifest()

    def set_metrics_aside(self) -> list[Path]:
        """Move the metrics of an earlier scoring to ``metrics.previous.*``; the moved paths."""
        moved = []
        for path in (self.metrics_json, self.metrics_csv):
            if path.is_file():
                aside = path.with_name(_METRICS_ASIDE[path.name])
                os.replace(path, aside)
                moved.append(aside)
        return moved

    # --- reading -------------------------------------------------------------------------------

    def thresholds(self) -> dict[str, float]:
        """Machine -> decision threshold (decided anomalous when ``score > threshold``).

        A run without ``thresholds.json`` has none (``{}``).

        Raises
        ------
        RunError
            The file is not JSON, or a machine's entry has no finite number as threshold.
        """
        path = self.thresholds_path
        if not path.is_file():
            return {}
        try:
            raw = read_json(path)
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} cannot be read ({exc}); train the run again.") from None
        if not isinstance(raw, dict):
            raise RunError(f"{path} is not a thresholds file; train the run again.")
        out: dict[str, float] = {}
        for machine, entry in raw.items():
            value = entry.get("threshold") if isinstance(entry, dict) else None
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise RunError(
                    f"{path}: the threshold of {machine} is {value!r}, not a finite number; "
                    "train the run again."
                )
            out[str(machine)] = float(value)
        return out

    def history(self) -> dict[str, list[dict[str, Any]]]:
        """Machine -> ``[{"epoch", "loss", "val_loss", "seconds"}, ...]`` from ``history.csv``.

        Empty values (no validation loss) are ``None``; no file, or a header only (as
        scikit-learn detectors leave it), gives ``{}``.

        Raises
        ------
        RunError
            A row that does not parse.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for lineno, row in self._csv_rows(self.history_path, HISTORY_HEADER):
            try:
                entry = {
                    "epoch": int(row["epoch"]),
                    "loss": _number(row["loss"]),
                    "val_loss": _number(row["val_loss"]),
                    "seconds": _number(row["seconds"]),
                }
            except (TypeError, ValueError):
                raise RunError(
                    f"{self.history_path}, line {lineno}: {row!r} is not a history row."
                ) from None
            out.setdefault(row["machine"], []).append(entry)
        return out

    def train_scores(self) -> dict[str, list[dict[str, Any]]]:
        """Machine -> ``[{"section", "domain", "file", "score"}, ...]`` from
        ``train_scores.csv`` (``{}`` without the file).

        Raises
        ------
        RunError
            A row that does not parse.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for lineno, row in self._csv_rows(self.train_scores_path, TRAIN_SCORES_HEADER):
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                raise RunError(
                    f"{self.train_scores_path}, line {lineno}: score {row['score']!r} is not "
                    "a number."
                ) from None
            out.setdefault(row["machine"], []).append(
                {
                    "section": row["section"],
                    "domain": row["domain"],
                    "file": row["file"],
                    "score": score,
                }
            )
        return out

    def _csv_rows(self, path: Path, header: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
        if not path.is_file():
            return []
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if tuple(reader.fieldnames or ()) != header:
                    raise RunError(
                        f"{path} has columns {reader.fieldnames}, expected {list(header)}."
                    )
                return [(i, row) for i, row in enumerate(reader, start=2)]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise RunError(f"{path} cannot be read ({exc}).") from None

    # --- verification ------------------------------------------------------------------------

    def verify(self, machines: list[str], override: str | None = "--trust-modified") -> None:
        """Check the models of ``machines`` and ``thresholds.json`` against the manifest's hashes.

        Parameters
        ----------
        machines : the machine types about to be used.
        override : the option that skips the check, named in the messages (``None``: none).

        Raises
        ------
        RunError
            Naming the first file that changed, is missing or was added after training, or
            saying how to retrain a run written before the hashes were recorded.
        """
        bypass = f" {override} uses it as it is." if override else ""
        version = self.manifest.get("run_layout_version")
        if version == _UNHASHED_LAYOUT:
            raise RunError(
                f"Run {self.name} was written by an earlier asd (run layout {version}) that did "
                "not record file hashes, so its models cannot be verified.\nTo score it, train "
                f"it again with `asd train DETECTOR` (this run's detector: {self.detector})."
                f"{bypass}"
            )
        files = self.manifest.get("files")
        recorded: dict[str, str] = files if isinstance(files, dict) else {}
        fix = f"Restore the file, or train the run again.{bypass}"
        expected = [THRESHOLDS] if THRESHOLDS in recorded else []
        for machine in machines:
            prefix = f"{MODELS}/{machine}/"
            mine = sorted(r for r in recorded if r.startswith(prefix))
            if not mine:
                raise RunError(
                    f"Run {self.name}: the manifest records no file hashes for {machine}, so "
                    f"its model cannot be verified.\n{fix}"
                )
            expected += mine
            for path in self._model_files(machine):
                if self._rel(path) not in recorded:
                    raise RunError(
                        f"Run {self.name}: {self._rel(path)} was added after training (the "
                        f"manifest does not record it).\n{fix}"
                    )
        if THRESHOLDS not in recorded and self.thresholds_path.is_file():
            raise RunError(
                f"Run {self.name}: {THRESHOLDS} was added after training (the manifest does "
                f"not record it).\n{fix}"
            )
        for rel in expected:
            path = self.path / rel
            if not path.is_file():
                raise RunError(
                    f"Run {self.name}: {rel} is missing (the manifest records it).\n{fix}"
                )
            if sha256_of(path) != recorded[rel]:
                raise RunError(
                    f"Run {self.name}: {rel} was changed after training (its SHA-256 differs "
                    f"from the manifest's).\n{fix}"
                )

    def _model_files(self, machine: str) -> list[Path]:
        folder = self.model_dir(machine)
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()


def is_run_folder(path: Path) -> bool:
    """A folder with a run manifest (readable or not)."""
    return (Path(path) / MANIFEST).is_file()


def find_run(name: str, runs_root: Path) -> Path | None:
    """The run folder ``name`` names: a path to one, or a run name under ``runs_root``."""
    return next((p for p in (Path(name), runs_root / name) if is_run_folder(p)), None)


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
    try:
        run.save_manifest()
    except BaseException:
        with contextlib.suppress(OSError):
            path.rmdir()  # still empty: no folder without a manifest is left behind
        raise
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


def process_gone(pid: int, started: str | None) -> bool:
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
        if process_gone(pid, started if isinstance(started, str) else None):
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
    if isinstance(version, bool) or version not in _READABLE_LAYOUTS:
        raise RunError(
            f"{path} was written by another asd version (run layout {version}, this asd reads "
            f"up to {RUN_LAYOUT_VERSION}); train it again with this version."
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
