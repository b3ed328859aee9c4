"""A trained run, loaded once, scoring one WAV at a time: what `asd serve` and `asd watch` share.

A clip goes through the very path `asd featurize` + `asd score` take:
:func:`asdcli.audio.read_audio` at the run's own feature settings (mix-down, resampling),
:func:`asdcli.features.logmel`, the machine's detector, and ``decision = score > threshold``
(the run's threshold for that machine; 0 without one). So a clip scored here gets the score
and decision `asd score` gives it.

Machine and section come from the caller or, when absent, from the file name and folders as
featurize reads them (:func:`asdcli.naming.parse_path`). The scoring functions are safe to call
from several threads at once (the log-mel front end keeps one workspace per thread; detectors
only read their state when scoring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import numpy as np

from asdcli.audio import AudioError, read_audio, resample
from asdcli.errors import RunError, UserError
from asdcli.features import logmel, min_samples
from asdcli.featurize import resample_note
from asdcli.monitor.history import Entry
from asdcli.naming import UNKNOWN, ClipInfo, parse_path
from asdcli.runs import Run, load_run
from asdcli.score import load_model, run_features
from asdcli.settings import FeatureSettings

if TYPE_CHECKING:
    from asdcli.detectors.base import Detector

DEFAULT_CLIP_SECONDS = 10.0  # stream window when the run's training clips cannot be looked up
_SECTION = re.compile(r"^[0-9A-Za-z_-]{1,32}$")


class ClipRejected(UserError):
    """A clip that cannot be scored; ``code`` names the reason for API clients."""

    code = "bad_audio"


class EmptyClip(ClipRejected):
    code = "empty"


class NotAudio(ClipRejected):
    code = "not_audio"


class UnreadableClip(ClipRejected):
    """Decodable header, unusable samples: truncated data, NaN/Inf, shorter than a window."""

    code = "unreadable_audio"


class ClipTooLong(ClipRejected):
    code = "too_long"


class UnknownMachine(ClipRejected):
    """No model for the machine; ``known`` lists the machines the run has models for."""

    code = "unknown_machine"

    def __init__(self, message: str, known: list[str]) -> None:
        super().__init__(message)
        self.known = known


class BadSection(ClipRejected):
    code = "bad_section"


@dataclass(frozen=True)
class ScoredClip:
    """One scored clip. ``decision`` is 1 (anomalous) when ``score > threshold``;
    ``threshold`` is ``None`` for a run without one (then ``decision`` is 0). ``warning``
    says what was done to the clip to score it (resampling), if anything."""

    file: str
    machine: str
    section: str
    score: float
    threshold: float | None
    decision: int
    run: str
    detector: str
    latency_ms: float
    duration: float
    sample_rate: int
    warning: str | None = None

    def entry(self, source: str, file: str | None = None) -> Entry:
        """The history's record of this result, made now; ``file`` replaces the name (a
        watched file is recorded by its path under the folder)."""
        return Entry(
            time=time.time(),
            source=source,
            file=self.file if file is None else file,
            machine=self.machine,
            section=self.section,
            score=self.score,
            threshold=self.threshold,
            decision=self.decision,
            run=self.run,
            detector=self.detector,
            latency_ms=round(self.latency_ms, 3),
            warning=self.warning,
        )


class ScoringService:
    """A run's models, thresholds and feature settings, loaded once.

    Parameters
    ----------
    run_dir : the run folder.
    allow_incomplete : serve an interrupted run with the models it saved.
    trust_modified : skip the check of the model files against the manifest's hashes.
    max_seconds : longest clip accepted (:class:`ClipTooLong` above).
    device : torch device of neural models (``None``: auto).

    Raises
    ------
    RunError
        The run cannot be used (see :func:`asdcli.runs.load_run`), has no model, or a model
        does not load.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        allow_incomplete: bool = False,
        trust_modified: bool = False,
        max_seconds: float = 60.0,
        device: str | None = None,
    ) -> None:
        self.run: Run = load_run(Path(run_dir), require_complete=not allow_incomplete)
        self.features: FeatureSettings = run_features(self.run)
        if self.features.key() != self.run.feature_key:
            raise RunError(
                f"{self.run.path}: manifest feature key does not match its feature settings."
            )
        self.max_seconds = max_seconds
        machines = sorted(self.run.completed_machines)
        if not machines:
            raise RunError(f"Run {self.run.name} has no trained model; train it again.")
        if not trust_modified:
            self.run.verify(machines)
        self.thresholds: dict[str, float] = self.run.thresholds()
        self.models: dict[str, Detector] = {m: load_model(self.run, m, device) for m in machines}
        train_scores = self.run.train_scores()
        self.sections: dict[str, list[str]] = {
            m: sorted({r["section"] for r in train_scores.get(m, [])}) for m in machines
        }
        self._clip_seconds = _training_clip_seconds(self.run, self.features.key(), machines)

    # --- what the run offers -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def detector(self) -> str:
        return self.run.detector

    @property
    def machines(self) -> list[str]:
        return sorted(self.models)

    @property
    def sample_rate(self) -> int:
        return self.features.rate

    def clip_seconds(self, machine: str) -> float:
        """Length of the machine's training clips (the median), the stream's window."""
        return self._clip_seconds.get(machine, DEFAULT_CLIP_SECONDS)

    def check_machine(self, machine: str | None, file: str | None = None) -> str:
        """``machine`` if the run has a model for it.

        Raises
        ------
        UnknownMachine
            Listing the machines the run knows (also when none was given or found).
        """
        known = self.machines
        if machine is None or machine == UNKNOWN:
            where = f" and none in the path of {file}" if file else ""
            raise UnknownMachine(
                f"No machine given{where}; pass machine= one of {', '.join(known)}.", known
            )
        if machine not in self.models:
            raise UnknownMachine(
                f"Run {self.name} has no model for machine {machine!r}; it knows "
                f"{', '.join(known)}.",
                known,
            )
        return machine

    # --- scoring -------------------------------------------------------------------------------

    def score_path(
        self,
        path: Path,
        *,
        file: str | None = None,
        machine: str | None = None,
        section: str | None = None,
    ) -> ScoredClip:
        """Score the WAV file at ``path``; ``file`` is the name reported and parsed for machine
        and section (default: ``path`` itself, folders included).

        Raises
        ------
        ClipRejected
            The subclass says why: empty, not audio, too long, unreadable samples, unknown
            machine, bad section.
        """
        t0 = time.perf_counter()
        name = file if file is not None else str(path)
        info = self._clip_info(name, machine, section)
        self._check_header(path)
        try:
            clip = read_audio(path, self.features.rate, min_samples(self.features))
        except AudioError as exc:
            kind = EmptyClip if path.stat().st_size == 0 else UnreadableClip
            raise kind(f"{PurePath(name).name} {exc}.") from None
        warning = None
        if clip.orig_sample_rate != self.features.rate:
            warning = resample_note(1, clip.orig_sample_rate, self.features.rate)
        return self._score(clip.samples, info, t0, clip.orig_sample_rate, warning)

    def score_bytes(
        self,
        data: bytes,
        *,
        file: str | None = None,
        machine: str | None = None,
        section: str | None = None,
    ) -> ScoredClip:
        """Score a WAV file given as its bytes (an upload); see :meth:`score_path`."""
        name = file or "upload.wav"
        if not data:
            raise EmptyClip(f"{PurePath(name).name} is empty (0 bytes).")
        with _spooled(data) as path:
            return self.score_path(path, file=name, machine=machine, section=section)

    def score_samples(
        self,
        samples: np.ndarray,
        rate: int,
        *,
        file: str,
        machine: str,
        section: str | None = None,
    ) -> ScoredClip:
        """Score decoded mono samples ``(time,)`` float32 at ``rate`` Hz (a stream window),
        resampled to the run's rate as a file at that rate would be.

        Raises
        ------
        ClipRejected
            Unknown machine, NaN or Inf samples, fewer samples than one analysis window.
        """
        t0 = time.perf_counter()
        info = self._clip_info(file, machine, section)
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise UnreadableClip(f"{file} contains NaN or Inf samples.")
        warning = None
        if rate != self.features.rate:
            x = resample(x, rate, self.features.rate)
            warning = resample_note(1, rate, self.features.rate)
        need = min_samples(self.features)
        if x.shape[0] < need:
            raise UnreadableClip(
                f"{file} is {x.shape[0] / self.features.rate:.3f} s long, shorter than one "
                f"analysis window ({need / self.features.rate:.3f} s)."
            )
        return self._score(x, info, t0, rate, warning)

    def _clip_info(self, file: str, machine: str | None, section: str | None) -> ClipInfo:
        info = parse_path(PurePath(file))
        info = dataclasses.replace(info, machine=self.check_machine(machine or info.machine, file))
        if section is not None:
            if not _SECTION.match(section):
                raise BadSection(
                    f"section {section!r} is not a section name (digits such as 00, or up to "
                    "32 letters, digits, _ and -)."
                )
            info = dataclasses.replace(info, section=section)
        return info

    def _check_header(self, path: Path) -> None:
        """Refuse what is not audio, and clips over ``max_seconds``, from the header alone."""
        import soundfile as sf

        try:
            size = path.stat().st_size
        except OSError as exc:
            raise UnreadableClip(f"{path} cannot be opened ({exc.strerror or exc}).") from None
        if size == 0:
            raise EmptyClip(f"{path.name} is empty (0 bytes).")
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            reason = str(exc).split(":")[-1].strip() or type(exc).__name__
            raise NotAudio(f"{path.name} is not a readable audio file ({reason}).") from None
        if info.samplerate > 0 and info.frames / info.samplerate > self.max_seconds:
            raise ClipTooLong(
                f"{path.name} is {info.frames / info.samplerate:.1f} s long; the limit is "
                f"{self.max_seconds:g} s (serve.max_seconds)."
            )

    def _score(
        self, samples: np.ndarray, info: ClipInfo, t0: float, orig_rate: int, warning: str | None
    ) -> ScoredClip:
        feats = logmel(samples[None], self.features)[0]  # (n_mels, frames), as featurize
        score = float(self.models[info.machine].score([feats], [info])[0])
        threshold = self.thresholds.get(info.machine)
        decision = int(threshold is not None and score > threshold)
        return ScoredClip(
            file=info.name,
            machine=info.machine,
            # asd score files clips without a section under 00; so does the history.
            section=info.section if info.section != UNKNOWN else "00",
            score=score,
            threshold=threshold,
            decision=decision,
            run=self.name,
            detector=self.detector,
            latency_ms=(time.perf_counter() - t0) * 1000.0,
            duration=samples.shape[0] / self.features.rate,
            sample_rate=orig_rate,
            warning=warning,
        )


def _training_clip_seconds(run: Run, key: str, machines: list[str]) -> dict[str, float]:
    """Machine -> median duration of its training clips: from the manifest when it records
    them (``clip_seconds``), else from the store the run was trained on; machines whose store
    is gone are left out (the stream then uses 10 s)."""
    recorded = run.manifest.get("clip_seconds")
    if isinstance(recorded, dict) and all(
        isinstance(recorded.get(m), int | float) and recorded[m] > 0 for m in machines
    ):
        return {m: float(recorded[m]) for m in machines}
    store_path = run.manifest.get("store")
    if not isinstance(store_path, str) or not Path(store_path).is_file():
        return {}
    from asdcli.errors import StoreError
    from asdcli.store import FeatureStore

    try:
        store = FeatureStore(Path(store_path))
        if not store.has(key):
            return {}
        out = {}
        for m in machines:
            durations = [r.duration for r in store.select(key, machine=m, split="train")]
            if durations and math.isfinite(statistics.median(durations)):
                out[m] = float(statistics.median(durations))
        return out
    except (OSError, StoreError, KeyError, ValueError):
        return {}


def _spool_dir() -> str | None:
    """A RAM-backed folder for uploads when there is one (read_audio reads from a path)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@contextlib.contextmanager
def _spooled(data: bytes) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(suffix=".wav", prefix="asd-upload-", dir=_spool_dir())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
