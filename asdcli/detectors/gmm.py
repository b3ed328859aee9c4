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

A fitted mixture is three arrays, so ``model.npz`` holds exactly those and no pickle (see
:mod:`asdcli.detectors.sklearn_base`): the weights ``(k,)``, the means ``(k, d)`` and the
Cholesky factors of the precision matrices as scikit-learn's ``precisions_cholesky_`` has them
(``(k, d, d)`` upper triangular for full, ``(d, d)`` for tied, ``(k, d)`` for diag, ``(k,)``
for spherical). :func:`log_likelihood` computes scikit-learn's ``score_samples`` from them,
after fitting and after loading alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from asdcli.detectors.params import GMMParams
from asdcli.detectors.sklearn_base import SklearnDetector, expect_shape
from asdcli.detectors.windows import pool_mean_std


def pool_clips(features: Sequence[np.ndarray], pooling: str) -> np.ndarray:
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


def log_likelihood(
    z: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    precisions_cholesky: np.ndarray,
    covariance_type: str,
) -> np.ndarray:
    """``log p(z)`` ``(n,)`` of vectors ``z`` ``(n, d)`` under a Gaussian mixture of ``k``
    components: ``weights`` ``(k,)``, ``means`` ``(k, d)`` and the precision Cholesky factors
    ``P`` (shapes in the module docstring), with ``log N(z | mu, P) = log det P
    - (d log 2 pi + |(z - mu) P|^2) / 2``."""
    d = z.shape[1]
    diff = z[:, None, :] - means[None, :, :]  # (n, k, d)
    p = precisions_cholesky
    if covariance_type == "full":
        y = np.einsum("nkd,kde->nke", diff, p)
        log_det = np.log(np.diagonal(p, axis1=1, axis2=2)).sum(axis=1)
    elif covariance_type == "tied":
        y = diff @ p
        log_det = np.full(len(means), np.log(np.diag(p)).sum())
    elif covariance_type == "diag":
        y = diff * p[None, :, :]
        log_det = np.log(p).sum(axis=1)
    elif covariance_type == "spherical":
        y = diff * p[None, :, None]
        log_det = d * np.log(p)
    else:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    log_gauss = log_det - 0.5 * (d * np.log(2 * np.pi) + np.square(y).sum(axis=2))
    return np.asarray(logsumexp(log_gauss + np.log(weights), axis=1), dtype=np.float64)


def precision_shape(covariance_type: str, k: int, d: int) -> tuple[int, ...]:
    """The shape of the precision Cholesky factors of ``k`` components in ``d`` dimensions."""
    shapes = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    if covariance_type not in shapes:
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    return shapes[covariance_type]


class GMMDetector(SklearnDetector):
    """Gaussian mixture on pooled clip statistics (see the module docstring).

    Attributes (after :meth:`fit` or :meth:`load`, besides :class:`Detector`'s)
    --------------------------------------------------------------------------
    weights_ : ndarray of float64, shape (k,)
    means_ : ndarray of float64, shape (k, dim)
    precisions_cholesky_ : ndarray of float64
        scikit-learn's ``precisions_cholesky_`` (shape by covariance type: module docstring).
    """

    name: ClassVar[str] = "gmm"
    params_cls: ClassVar[type[GMMParams]] = GMMParams
    params: GMMParams
    min_train_clips = 2
    model_arrays = ("weights", "means", "precisions_cholesky")

    weights_: np.ndarray
    means_: np.ndarray
    precisions_cholesky_: np.ndarray

    def _fit_vectors(self, z: np.ndarray) -> np.ndarray:
        p = self.params
        mixture = GaussianMixture(
            n_components=min(p.n_components, len(z)),
            covariance_type=p.covariance_type,
            reg_covar=p.reg_covar,
            random_state=self.train.seed,
        ).fit(z)
        self.weights_ = np.asarray(mixture.weights_, dtype=np.float64)
        self.means_ = np.asarray(mixture.means_, dtype=np.float64)
        self.precisions_cholesky_ = np.asarray(mixture.precisions_cholesky_, dtype=np.float64)
        self.n_params_ = n_free_parameters(len(self.weights_), z.shape[1], p.covariance_type)
        return self._normality(z)

    def _normality(self, z: np.ndarray) -> np.ndarray:
        return log_likelihood(
            z, self.weights_, self.means_, self.precisions_cholesky_, self.params.covariance_type
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights_,
            "means": self.means_,
            "precisions_cholesky": self.precisions_cholesky_,
        }

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        weights = expect_shape("weights", arrays["weights"], (None,)).astype(np.float64)
        k, d = len(weights), self.dim_
        if k == 0 or (weights <= 0).any() or abs(weights.sum() - 1.0) > 1e-6:
            raise ValueError("the mixture weights are not positive numbers that sum to 1")
        shape = precision_shape(self.params.covariance_type, k, d)
        prec = expect_shape("precisions_cholesky", arrays["precisions_cholesky"], shape)
        matrices = self.params.covariance_type in ("full", "tied")
        diagonal = np.diagonal(prec, axis1=-2, axis2=-1) if matrices else prec
        if (diagonal <= 0).any():
            raise ValueError("a precision Cholesky factor has a diagonal entry <= 0")
        self.weights_ = weights
        self.means_ = expect_shape("means", arrays["means"], (k, d)).astype(np.float64)
        self.precisions_cholesky_ = prec.astype(np.float64)

    def _pool(self, features: Sequence[np.ndarray]) -> np.ndarray:
        return pool_clips(features, self.params.pooling)
