"""The one contract every detector meets, and the folder format they save to.

A detector turns log-mel clips into one anomaly score per clip: higher means more anomalous.

* ``__init__`` only stores hyper-parameters (scikit-learn habit).
* :meth:`Detector.fit` learns from normal training clips and records ``train_scores_``,
  ``history_``, ``interrupted_``, ``n_params_`` and the normalisation statistics.
* :meth:`Detector.score` returns a finite ``float64`` array, one score per clip.
* :meth:`Detector.save` writes a folder: the learned state (a ``torch.save`` of tensors, or
  plain arrays for scikit-learn detectors; never a pickle), listed in ``detector.json``'s
  ``files``, and ``detector.json`` itself (name, hyper-parameters, normalisation statistics,
  library versions). :meth:`Detector.load` rebuilds the detector from that folder. A run
  records the SHA-256 of every file of the folder (:mod:`asdcli.runs`).
* :meth:`Detector.resolve_params` (a class method, before a run starts) checks and completes
  the hyper-parameters with what only the training context knows, e.g. the ensemble's member
  runs; by default it changes nothing.

This module imports neither torch nor scikit-learn; :func:`resolve_device` imports torch lazily.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel

from asdcli.detectors.errors import DeviceUnavailableError
from asdcli.detectors.params import TrainParams
from asdcli.files import write_text
from asdcli.naming import ClipInfo
from asdcli.runs import library_versions

if TYPE_CHECKING:
    import torch

META_FILE = "detector.json"
FORMAT = "asdcli-detector"
FORMAT_VERSION = 1

Progress = Callable[[dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` (or ``"cuda:N"``).

    Raises
    ------
    DeviceUnavailableError
        ``"cuda"`` was asked for on a machine without a CUDA device.
    ValueError
        Any other name.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"--device {name} was requested but no CUDA device is available; "
                "use --device cpu or auto"
            )
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")


def read_meta(folder: Path) -> dict[str, Any]:
    """Read and check ``folder/detector.json``; a clear :class:`ValueError` if it is unusable."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ValueError(f"{folder} holds no saved detector (no {META_FILE})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an asdcli detector file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has detector format version {version}; this asdcli reads up to "
            f"{FORMAT_VERSION}, upgrade asdcli"
        )
    return meta


@dataclass(frozen=True)
class ParamsContext:
    """What :meth:`Detector.resolve_params` may know about the run about to start.

    Attributes
    ----------
    runs_root : Path
        The runs folder (``paths.runs``), where run names are looked up.
    feature_key : str
        Key of the feature set the run trains on.
    machines : tuple of str
        The machine types chosen for training (each has training clips).
    train : TrainParams or None
        The training-loop settings the run will use (epochs, batch size, ...).
    """

    runs_root: Path
    feature_key: str
    machines: tuple[str, ...]
    train: TrainParams | None = None


def as_float_list(values: np.ndarray) -> list[float]:
    """Exact JSON round trip: Python floats print the shortest repr that reads back the same."""
    return [float(v) for v in np.asarray(values).ravel()]


class Detector(ABC):
    """Base class of all detectors (template: the base validates, subclasses learn).

    Parameters
    ----------
    params
        The detector's hyper-parameters, an instance of :attr:`params_cls` (or a mapping that
        validates into one); ``None`` means the defaults.
    train
        Training-loop settings (epochs, batch size, seed, device, ...); ``None`` means defaults.
        scikit-learn detectors use only the seed.

    Attributes (after :meth:`fit`)
    ------------------------------
    n_mels_ : int
        Mel bands of the training features; :meth:`score` requires the same.
    norm_mean_, norm_std_ : ndarray of float32
        Input standardisation statistics computed from the training clips only, ``(n_mels,)``
        for the autoencoders (per mel band), ``(2 * n_mels,)`` for pooled-vector detectors and
        empty for detectors that do not standardise their input (the ensemble).
    train_scores_ : ndarray of float64, shape (n_clips,)
        Scores of the training clips with the final model (e.g. for a decision threshold).
    history_ : list of dict
        One ``{"epoch", "loss", "val_loss", "seconds"}`` row per epoch; empty for scikit-learn.
    interrupted_ : bool
        Training stopped on Ctrl-C; the model is usable, but the run is incomplete.
    n_params_ : int
        Trainable parameters (torch) or stored numbers that define the model (scikit-learn).
    """

    name: ClassVar[str]
    params_cls: ClassVar[type[BaseModel]]
    # True: fit once on every machine type's clips together (``clips`` say which is which),
    # then :meth:`restrict` gives each machine type its own model to save.
    joint: ClassVar[bool] = False
    # True: fit and score take lazy clips (windows.LazyClips) as they are, reading a batch at a
    # time; False: they are read into a list first.
    streams: ClassVar[bool] = False

    n_mels_: int
    norm_mean_: np.ndarray
    norm_std_: np.ndarray
    train_scores_: np.ndarray
    history_: list[dict[str, Any]]
    interrupted_: bool
    n_params_: int

    def __init__(
        self,
        params: BaseModel | Mapping[str, Any] | None = None,
        train: TrainParams | Mapping[str, Any] | None = None,
    ) -> None:
        if params is None:
            params = self.params_cls()
        elif isinstance(params, Mapping):
            params = self.params_cls.model_validate(params)
        elif not isinstance(params, self.params_cls):
            raise TypeError(
                f"{self.name} takes {self.params_cls.__name__}, not {type(params).__name__}"
            )
        if train is None:
            train = TrainParams()
        elif isinstance(train, Mapping):
            train = TrainParams.model_validate(train)
        self.params = params
        self.train = train

    def __repr__(self) -> str:
        return f"{type(self).__name__}(params={self.params!r}, train={self.train!r})"

    @classmethod
    def resolve_params(
        cls, params: BaseModel, context: ParamsContext
    ) -> tuple[BaseModel, list[str]]:
        """Check and complete ``params`` for a run, and say which machine types it trains.

        Called once by training, before the run folder exists; what it returns is what the
        manifest records and every machine's detector gets. The default returns ``params``
        unchanged and every machine type of ``context``.

        Raises
        ------
        UserError
            Parameters that cannot make a run, with the way to fix them.
        """
        return params, list(context.machines)

    # --- public contract ---------------------------------------------------------------------

    def fit(
        self,
        features: Sequence[np.ndarray],
        clips: Sequence[ClipInfo] | None,
        progress: Progress | None = None,
    ) -> Self:
        """Learn from normal training clips.

        Parameters
        ----------
        features
            One ``(n_mels, frames)`` log-mel array per clip; ``frames`` may differ between clips.
            Or lazy clips (:class:`~asdcli.detectors.windows.LazyClips`, e.g. a store's
            ``StoredClips``): a detector that :attr:`streams` then reads a batch at a time.
        clips
            Metadata of each clip (only ``domain`` is used, by dcase-ae's Mahalanobis score);
            ``None`` means nothing is known.
        progress
            Called once per epoch with that epoch's :attr:`history_` row. Raising
            ``KeyboardInterrupt`` from it stops training like Ctrl-C does.
        """
        feats = self._check_features(features, fitting=True)
        infos = self._check_clips(clips, len(feats))
        self.n_mels_ = int(feats[0].shape[0])
        self.history_ = []
        self.interrupted_ = False
        self.train_scores_ = self._check_scores(self._fit(feats, infos, progress), len(feats))
        return self

    def score(
        self, features: Sequence[np.ndarray], clips: Sequence[ClipInfo] | None = None
    ) -> np.ndarray:
        """Anomaly scores ``(n_clips,)`` float64, higher = more anomalous, always finite."""
        self._check_fitted()
        feats = self._check_features(features, fitting=False)
        if not feats:
            return np.zeros(0, dtype=np.float64)
        infos = self._check_clips(clips, len(feats))
        return self._check_scores(self._score(feats, infos), len(feats))

    def save(self, folder: str | Path) -> None:
        """Write the weights, then ``detector.json`` (last, so its presence means complete)."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = self._save_state(folder)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "params": self.params.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "n_mels": self.n_mels_,
            "normalisation": {
                "mean": as_float_list(self.norm_mean_),
                "std": as_float_list(self.norm_std_),
            },
            "files": files,
            "n_params": int(self.n_params_),
            "interrupted": bool(self.interrupted_),
            "history": self.history_,
            "train_scores": as_float_list(self.train_scores_),
            "versions": library_versions(),
        }
        write_text(folder / META_FILE, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> Self:
        """Rebuild a fitted detector from a folder written by :meth:`save`.

        ``device`` (torch detectors only) overrides where the model runs; ``None`` means
        ``"auto"``, so a model trained on a GPU still loads on a CPU-only machine.

        Raises
        ------
        ValueError
            The folder holds no detector, or one saved by another detector (another name).
        """
        folder = Path(folder)
        meta = read_meta(folder)
        if meta.get("name") != cls.name:
            raise ValueError(
                f"{folder} holds a {meta.get('name')!r} detector, not {cls.name!r}; "
                f"load it with get_detector({meta.get('name')!r}) or load_detector()"
            )
        det = cls(cls.params_cls.model_validate(meta["params"]), meta["train"])
        det.n_mels_ = int(meta["n_mels"])
        det.norm_mean_ = np.asarray(meta["normalisation"]["mean"], dtype=np.float32)
        det.norm_std_ = np.asarray(meta["normalisation"]["std"], dtype=np.float32)
        det.n_params_ = int(meta["n_params"])
        det.interrupted_ = bool(meta["interrupted"])
        det.history_ = list(meta["history"])
        det.train_scores_ = np.asarray(meta["train_scores"], dtype=np.float64)
        det._load_state(folder, meta, device)
        return det

    def restrict(self, machine: str, keep: np.ndarray) -> Self:
        """The part of a :attr:`joint` model that scores ``machine``; ``keep`` ``(n_train,)``
        bool marks that machine's training clips (for :attr:`train_scores_`)."""
        raise NotImplementedError(f"{self.name} is trained per machine type; nothing to restrict")

    # --- what subclasses implement -------------------------------------------------------------

    @abstractmethod
    def _fit(
        self, features: Sequence[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        """Learn; set ``norm_mean_``, ``norm_std_``, ``n_params_`` (and ``history_``,
        ``interrupted_``); return the training clips' scores ``(n_clips,)``."""

    @abstractmethod
    def _score(self, features: Sequence[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        """Scores ``(n_clips,)`` of checked float32 ``(n_mels, frames)`` clips (a list, or
        lazy clips where :attr:`streams`)."""

    @abstractmethod
    def _save_state(self, folder: Path) -> list[str]:
        """Write the learned state (never a pickled detector); return the file names."""

    @abstractmethod
    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        """Read what :meth:`_save_state` wrote."""

    # --- shared checks ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_scores_"):
            raise RuntimeError(f"this {self.name} detector is not fitted; call fit() or load()")

    def _check_features(
        self, features: Sequence[np.ndarray], fitting: bool
    ) -> Sequence[np.ndarray]:
        """float32 clips, checked. A :class:`~asdcli.detectors.windows.LazyClips` stays lazy
        for a detector that :attr:`streams` (each clip is read, checked and dropped); any
        other input becomes a list."""
        from asdcli.detectors.windows import LazyClips

        lengths = None
        if self.streams and isinstance(features, LazyClips):
            lengths = np.asarray(features.lengths)
            if lengths.shape != (len(features),):
                raise ValueError(f"{len(features)} clips but {lengths.size} lengths")
            checked: Sequence[np.ndarray] = features
        else:
            checked = [np.asarray(f, dtype=np.float32) for f in features]
        if fitting and not checked:
            raise ValueError(f"{self.name}: no training clips")
        n_mels = None
        if not fitting:
            n_mels = self.n_mels_
        elif checked[0].ndim == 2:
            n_mels = checked[0].shape[0]
        for i in range(len(checked)):
            f = checked[i]
            if lengths is not None and f.dtype != np.float32:
                raise ValueError(f"clip {i} is {f.dtype}, not float32")
            if lengths is not None and f.ndim == 2 and f.shape[1] != lengths[i]:
                raise ValueError(f"clip {i} has {f.shape[1]} frames but {lengths[i]} in lengths")
            if f.ndim != 2:
                raise ValueError(f"clip {i}: expected (n_mels, frames), got shape {f.shape}")
            if f.shape[0] != n_mels:
                what = "the training features" if not fitting else "clip 0"
                raise ValueError(
                    f"clip {i} has {f.shape[0]} mel bands but {what} had {n_mels}; "
                    "features must come from the same feature settings"
                )
            if f.shape[1] == 0:
                raise ValueError(f"clip {i} has no frames")
            if not np.isfinite(f).all():
                raise ValueError(f"clip {i} holds NaN or infinite values")
        return checked

    @staticmethod
    def _check_clips(clips: Sequence[ClipInfo] | None, n: int) -> list[ClipInfo]:
        if clips is None:
            return [ClipInfo(name=f"clip_{i}") for i in range(n)]
        infos = list(clips)
        if len(infos) != n:
            raise ValueError(f"got {n} feature arrays but {len(infos)} clip infos")
        return infos

    def _check_scores(self, scores: np.ndarray, n: int) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape != (n,):
            raise RuntimeError(f"{self.name} returned {scores.shape[0]} scores for {n} clips")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise FloatingPointError(
                f"{self.name} produced non-finite scores for clips {bad[:10].tolist()}; "
                "the model probably diverged (try a lower learning rate)"
            )
        return scores
