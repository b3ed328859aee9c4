"""Adapter from scikit-learn outlier estimators to the :class:`Detector` contract.

Each clip becomes one vector: the mean and the std over time of each mel band
(``(n_mels, frames) -> (2 * n_mels,)``), standardised with the training vectors' statistics.

scikit-learn's ``score_samples`` is *higher for normal* points; :func:`anomaly_scores` flips
that sign, and it is the only place that does.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from asdcli.detectors.base import Detector, Progress
from asdcli.detectors.windows import pool_mean_std
from asdcli.naming import ClipInfo

MODEL_FILE = "model.joblib"
# Floor for the std of a pooled feature that is constant over the training clips.
STD_FLOOR = 1e-6


def anomaly_scores(normality: np.ndarray) -> np.ndarray:
    """scikit-learn normality (higher = more normal) -> anomaly score (higher = anomalous)."""
    return -np.asarray(normality, dtype=np.float64)


class SklearnDetector(Detector):
    """Base of the detectors that wrap a scikit-learn estimator on pooled clip vectors.

    Attributes (after :meth:`fit`, besides :class:`Detector`'s)
    ----------------------------------------------------------
    estimator_ : sklearn estimator
        The fitted estimator (saved with joblib, loaded by the same scikit-learn version).
    """

    estimator_: Any
    min_train_clips: int = 1

    @abstractmethod
    def _make_estimator(self, n_train: int) -> Any:
        """An unfitted estimator for ``n_train`` training vectors."""

    @abstractmethod
    def _count_params(self) -> int:
        """Stored numbers that define the fitted estimator (for ``n_params_``)."""

    def _train_normality(self, z: np.ndarray) -> np.ndarray:
        """Normality of the training vectors themselves (LOF overrides this)."""
        return self.estimator_.score_samples(z)

    def _pool(self, features: list[np.ndarray]) -> np.ndarray:
        """``n_clips x (n_mels, frames)`` -> pooled ``(n_clips, dim)`` float64 (default: the
        per-band mean and std over time, ``dim = 2 * n_mels``)."""
        return pool_mean_std(features)

    def _vectors(self, features: list[np.ndarray]) -> np.ndarray:
        """``n_clips x (n_mels, frames)`` -> standardised pooled vectors ``(n_clips, dim)``."""
        return (self._pool(features) - self.norm_mean_) / self.norm_std_

    def _fit(
        self, features: list[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        if len(features) < self.min_train_clips:
            raise ValueError(
                f"{self.name} needs at least {self.min_train_clips} training clips, "
                f"got {len(features)}"
            )
        pooled = self._pool(features)
        # float32 like the autoencoders' statistics, so detector.json round-trips them exactly.
        self.norm_mean_ = pooled.mean(axis=0).astype(np.float32)
        self.norm_std_ = np.maximum(pooled.std(axis=0), STD_FLOOR).astype(np.float32)
        z = self._vectors(features)
        self.estimator_ = self._make_estimator(len(features)).fit(z)
        self.n_params_ = self._count_params()
        return anomaly_scores(self._train_normality(z))

    def _score(self, features: list[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        return anomaly_scores(self.estimator_.score_samples(self._vectors(features)))

    def _save_state(self, folder: Path) -> list[str]:
        joblib.dump(self.estimator_, folder / MODEL_FILE)
        return [MODEL_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        path = folder / MODEL_FILE
        if not path.is_file():
            raise ValueError(f"{folder} has {meta['name']}'s detector.json but no {MODEL_FILE}")
        self.estimator_ = joblib.load(path)
