"""The detector registry: which detectors exist, under which names.

Names are registered explicitly here (never derived from class names). The registry maps each
name to a ``"module:Class"`` string and imports the module only in :func:`get_detector`, so that
importing this package pulls in neither torch nor scikit-learn and ``asd --help`` stays instant.

>>> canonical_name("conv_autoencoder")
'conv-ae'
>>> params_key("conv-ae")
'conv_ae'
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from asdcli.detectors.errors import DeviceUnavailableError, UnknownDetectorError

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel

    from asdcli.detectors.base import Detector
    from asdcli.detectors.params import DetectorParams, TrainParams

__all__ = [
    "DeviceUnavailableError",
    "UnknownDetectorError",
    "build_detector",
    "canonical_name",
    "get_detector",
    "list_detectors",
    "load_detector",
    "params_key",
    "resolve_device",
]

# name -> (import path, one-line description). Insertion order is the order users see.
_REGISTRY: dict[str, tuple[str, str]] = {
    "dcase-ae": (
        "asdcli.detectors.dcase_ae:DCASEAutoencoder",
        "DCASE 2023 Task 2 baseline autoencoder on 5-frame vectors (MSE or selective Mahalanobis)",
    ),
    "fc-ae": (
        "asdcli.detectors.fc_ae:FCAutoencoder",
        "Fully connected autoencoder on flattened log-mel crops (mean crop MSE)",
    ),
    "conv-ae": (
        "asdcli.detectors.conv_ae:ConvAutoencoder",
        "Convolutional autoencoder on log-mel patches (mean patch MSE)",
    ),
    "lstm-ae": (
        "asdcli.detectors.lstm_ae:LSTMAutoencoder",
        "Bidirectional LSTM autoencoder on log-mel frame sequences (mean window MSE)",
    ),
    "lof": (
        "asdcli.detectors.lof:LOFDetector",
        "Local outlier factor on each clip's per-band mean and std over time",
    ),
    "iforest": (
        "asdcli.detectors.iforest:IForestDetector",
        "Isolation forest on each clip's per-band mean and std over time",
    ),
    "knn": (
        "asdcli.detectors.knn:KNNDetector",
        "k nearest neighbours on pooled log-mel statistics per section, min over source and "
        "target banks (training-free)",
    ),
    "gmm": (
        "asdcli.detectors.gmm:GMMDetector",
        "Gaussian mixture on each clip's time-pooled log-mel statistics (negative log-likelihood)",
    ),
    "vae": (
        "asdcli.detectors.vae:VAEDetector",
        "Variational autoencoder on context-frame vectors (negative ELBO or reconstruction error)",
    ),
    "emb-knn": (
        "asdcli.detectors.emb_knn:EmbKNNDetector",
        "Attribute-classifier CNN (ArcFace, mixup) trained on all machines; cosine k-NN per "
        "section, min over source and target",
    ),
    "ensemble": (
        "asdcli.detectors.ensemble:EnsembleDetector",
        "Average of trained runs' scores, each standardised by its own training scores",
    ),
}

# Names used by the seed project; they keep working.
_ALIASES: dict[str, str] = {
    "fc_autoencoder": "fc-ae",
    "conv_autoencoder": "conv-ae",
    "lstm_autoencoder": "lstm-ae",
    "isolation_forest": "iforest",
}


def list_detectors() -> list[tuple[str, str]]:
    """``[(name, one-line description), ...]`` of every registered detector (no aliases)."""
    return [(name, description) for name, (_, description) in _REGISTRY.items()]


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases.

    Raises
    ------
    UnknownDetectorError
        When ``name`` is neither registered nor an alias; the message lists the known names.
    """
    key = name.strip()
    if key in _REGISTRY:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    known = ", ".join(_REGISTRY)
    aliases = ", ".join(f"{a} -> {n}" for a, n in _ALIASES.items())
    raise UnknownDetectorError(
        f"unknown detector {name!r}; known detectors: {known} (aliases: {aliases})"
    )


def params_key(name: str) -> str:
    """The section of :class:`~asdcli.detectors.params.DetectorParams` for a detector name:
    ``"conv-ae"`` -> ``"conv_ae"`` (aliases resolve first)."""
    return canonical_name(name).replace("-", "_")


def get_detector(name: str) -> type[Detector]:
    """The detector class registered under ``name`` (or an alias); imports its module now."""
    canonical = canonical_name(name)
    module_name, _, class_name = _REGISTRY[canonical][0].partition(":")
    cls: type[Detector] = getattr(importlib.import_module(module_name), class_name)
    if cls.name != canonical:  # a registry typo would otherwise save folders under a wrong name
        raise RuntimeError(f"registry entry {canonical!r} points at a class named {cls.name!r}")
    return cls


def build_detector(
    name: str,
    detector_params: DetectorParams | None = None,
    train: TrainParams | None = None,
) -> Detector:
    """An unfitted detector, taking its hyper-parameters from the matching settings section.

    ``detector_params`` is the whole :class:`DetectorParams` (all sections); ``None`` means
    defaults for every section.
    """
    cls = get_detector(name)
    params: BaseModel | None = None
    if detector_params is not None:
        params = getattr(detector_params, params_key(name))
    return cls(params, train)


def load_detector(folder: str | Path, device: str | None = None) -> Detector:
    """Load a saved detector of any registered kind, dispatching on ``detector.json``'s name."""
    from asdcli.detectors.base import read_meta

    meta = read_meta(Path(folder))
    return get_detector(meta["name"]).load(Path(folder), device=device)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` / ``"cpu"`` / ``"cuda"`` -> ``torch.device`` (imports torch now).

    Raises :class:`DeviceUnavailableError` for ``"cuda"`` on a machine without CUDA; see
    :func:`asdcli.detectors.base.resolve_device`.
    """
    from asdcli.detectors.base import resolve_device as _resolve

    return _resolve(name)
