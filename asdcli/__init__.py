"""asd: unsupervised anomalous sound detection for machine condition monitoring.

The functions behind the CLI, for notebooks and scripts. They are imported lazily so that
``import asdcli`` (and ``asd --help``) stays instant.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Settings",
    "load_settings",
    "synthesize",
    "featurize_paths",
    "FeatureStore",
    "train_detector",
    "score_run",
    "evaluate_run",
    "get_detector",
    "list_detectors",
]

# name -> (module, attribute). The functions named after a submodule (featurize, train) are
# exported under other names: the submodule would shadow them once imported.
_HOMES = {
    "Settings": ("asdcli.settings", "Settings"),
    "load_settings": ("asdcli.settings", "load_settings"),
    "synthesize": ("asdcli.synth", "synthesize"),
    "featurize_paths": ("asdcli.featurize", "featurize"),
    "FeatureStore": ("asdcli.store", "FeatureStore"),
    "train_detector": ("asdcli.train", "train"),
    "score_run": ("asdcli.score", "score_run"),
    "evaluate_run": ("asdcli.evaluate", "evaluate_run"),
    "get_detector": ("asdcli.detectors", "get_detector"),
    "list_detectors": ("asdcli.detectors", "list_detectors"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'asdcli' has no attribute {name!r}")
    import importlib

    module, attribute = _HOMES[name]
    return getattr(importlib.import_module(module), attribute)
