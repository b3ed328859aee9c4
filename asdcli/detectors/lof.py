"""``lof``: local outlier factor (scikit-learn ``LocalOutlierFactor(novelty=True)``'s scores).

Each clip is its per-band mean and std over time, standardised with training statistics
(see :mod:`asdcli.detectors.sklearn_base`). ``n_neighbors`` is clipped to ``n_train - 1`` so
tiny training sets still fit; at least 2 training clips are needed.

The scores are scikit-learn's, computed from arrays so that the model file holds no pickle:
with ``k`` neighbours, a training vector's *k-distance* is the distance to its k-th nearest
other training vector, its local reachability density (lrd) is
``1 / (mean_j max(d(x, x_j), k_distance_j) + 1e-10)`` over its neighbours ``x_j``, and a
vector's normality is ``-mean_j lrd_j / lrd(x)``. ``model.npz`` holds exactly what that needs:
the training vectors, their k-distances and their lrds; the neighbour search is scikit-learn's
``NearestNeighbors`` (the same search ``LocalOutlierFactor`` runs), rebuilt from the vectors
on load.

Training scores leave each training vector out of its own neighbours (scikit-learn's
``negative_outlier_factor_``); scoring the training vectors as new points would count each as
its own neighbour and make them look more normal than new normal clips.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.neighbors import NearestNeighbors

from asdcli.detectors.params import LOFParams
from asdcli.detectors.sklearn_base import SklearnDetector, expect_shape

# scikit-learn's guard against a zero mean reachability distance (duplicate points).
LRD_EPS = 1e-10


def reachability_density(
    distances: np.ndarray, neighbours: np.ndarray, k_distance: np.ndarray
) -> np.ndarray:
    """Local reachability densities ``(n,)`` of points whose ``k`` nearest training vectors
    are ``neighbours`` ``(n, k)`` at ``distances`` ``(n, k)``; ``k_distance`` ``(n_train,)``."""
    reach = np.maximum(distances, k_distance[neighbours])
    return np.asarray(1.0 / (reach.mean(axis=1) + LRD_EPS), dtype=np.float64)


def lof_normality(lrd: np.ndarray, neighbours: np.ndarray, lrd_train: np.ndarray) -> np.ndarray:
    """``-mean_j lrd_j / lrd`` ``(n,)``: minus the local outlier factor of points of density
    ``lrd`` ``(n,)`` with training neighbours ``neighbours`` ``(n, k)`` of density
    ``lrd_train`` ``(n_train,)``."""
    return np.asarray(-(lrd_train[neighbours] / lrd[:, None]).mean(axis=1), dtype=np.float64)


class LOFDetector(SklearnDetector):
    """Local outlier factor on pooled clip statistics (see the module docstring).

    Attributes (after :meth:`fit` or :meth:`load`, besides :class:`Detector`'s)
    --------------------------------------------------------------------------
    vectors_ : ndarray of float64, shape (n_train, dim)
        The standardised training vectors.
    k_distance_, lrd_ : ndarray of float64, shape (n_train,)
        Each training vector's k-distance and local reachability density.
    estimator_ : sklearn.neighbors.NearestNeighbors
        The neighbour index over ``vectors_`` (``n_neighbors`` = k); rebuilt on load.
    """

    name: ClassVar[str] = "lof"
    params_cls: ClassVar[type[LOFParams]] = LOFParams
    params: LOFParams
    min_train_clips = 2
    model_arrays = ("vectors", "k_distance", "lrd")

    vectors_: np.ndarray
    k_distance_: np.ndarray
    lrd_: np.ndarray
    estimator_: NearestNeighbors

    def _index(self, vectors: np.ndarray) -> NearestNeighbors:
        k = min(self.params.n_neighbors, len(vectors) - 1)
        return NearestNeighbors(n_neighbors=k, metric=self.params.metric).fit(vectors)

    def _fit_vectors(self, z: np.ndarray) -> np.ndarray:
        self.vectors_ = z
        self.estimator_ = self._index(z)
        distances, neighbours = self.estimator_.kneighbors()  # each vector without itself
        self.k_distance_ = distances[:, -1]
        self.lrd_ = reachability_density(distances, neighbours, self.k_distance_)
        self.n_params_ = int(z.size)  # the model is the stored training set
        return lof_normality(self.lrd_, neighbours, self.lrd_)

    def _normality(self, z: np.ndarray) -> np.ndarray:
        distances, neighbours = self.estimator_.kneighbors(z)
        lrd = reachability_density(distances, neighbours, self.k_distance_)
        return lof_normality(lrd, neighbours, self.lrd_)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors_, "k_distance": self.k_distance_, "lrd": self.lrd_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        vectors = expect_shape("vectors", arrays["vectors"], (None, self.dim_))
        n = len(vectors)
        if n < self.min_train_clips:
            raise ValueError(f"{n} training vectors; lof needs at least {self.min_train_clips}")
        self.vectors_ = vectors.astype(np.float64)
        self.k_distance_ = expect_shape("k_distance", arrays["k_distance"], (n,)).astype(np.float64)
        self.lrd_ = expect_shape("lrd", arrays["lrd"], (n,)).astype(np.float64)
        self.estimator_ = self._index(self.vectors_)
