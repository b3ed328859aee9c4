"""``gmm``: scikit-learn ``GaussianMixture`` on time-pooled log-mel statistics per clip.

Each clip ``(n_mels, frames)`` becomes one vector of per-band statistics over time:

* ``pooling="mean_std"``: mean, then std of each band, ``(2 * n_mels,)`` (as lof / iforest);
* ``pooling="mean_std_max"``: mean, std, then max of each band, ``(3 * n_mels,)`` (the max
  keeps short loud events that the mean and std dilute).

Vectors are standardised with the training vectors' statistics (``norm_mean_`` and
``norm_std_`` have the vector's length). The mixture has ``params.n_components`` components
(clipped to the number of training clips), ``params.covariance_type`` covariances with
``params.reg_covar`` added to their diagonal, and is seeded by ``TrainParams.seed``.

Score: the negative log-likelihood ``-log p(z)`` of the standardised vector (natural log, in
the standardised space). At least 2 training clips are needed (scikit-learn's minimum).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.mixture import GaussianMixture

from asdcli.detectors.params import GMMParams
from asdcli.detectors.sklearn_base import SklearnDetector
from asdcli.detectors.windows import pool_mean_std


def pool_clips(features: list[np.ndarray], pooling: str) -> np.ndarray:
    """``n_clips x (n_mels, frames)`` -> ``(n_clips, 2 * n_mels)`` for ``"mean_std"`` or
    ``(n_clips, 3 * n_mels)`` for ``"mean_std_max"`` (mean, std, max of each band), float64."""
    pooled = pool_mean_std(features)
    if pooling == "mean_std":
        return pooled
    if pooling == "mean_std_max":
        peaks = np.stack([f.max(axis=1).astype(np.float64) for f in features])
        return np.concatenate([pooled, peaks], axis=1)
    raise ValueError(f"unknown pooling {pooling!r}; use mean_std or mean_std_max")


def n_free_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free numbers of a Gaussian mixture: ``k - 1`` weights (they sum to one), ``k * d``
    means and the covariances: ``k * d (d + 1) / 2`` (full), ``d (d + 1) / 2`` (tied, one
    shared), ``k * d`` (diag) or ``k`` (spherical)."""
    k, d = n_components, n_features
    covariances = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }
    if covariance_type not in covariances:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    return (k - 1) + k * d + covariances[covariance_type]


class GMMDetector(SklearnDetector):
    """Gaussian mixture on pooled clip statistics (see the module docstring)."""

    name: ClassVar[str] = "gmm"
    params_cls: ClassVar[type[GMMParams]] = GMMParams
    params: GMMParams
    min_train_clips = 2

    def _make_estimator(self, n_train: int) -> Any:
        p = self.params
        return GaussianMixture(
            n_components=min(p.n_components, n_train),
            covariance_type=p.covariance_type,
            reg_covar=p.reg_covar,
            random_state=self.train.seed,
        )

    def _count_params(self) -> int:
        est = self.estimator_
        return n_free_parameters(est.n_components, est.n_features_in_, est.covariance_type)

    def _pool(self, features: list[np.ndarray]) -> np.ndarray:
        return pool_clips(features, self.params.pooling)
