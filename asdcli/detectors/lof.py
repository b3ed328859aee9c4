"""``lof``: scikit-learn ``LocalOutlierFactor(novelty=True)`` on pooled clip vectors.

Each clip is its per-band mean and std over time, standardised with training statistics
(see :mod:`asdcli.detectors.sklearn_base`). ``n_neighbors`` is clipped to ``n_train - 1`` so
tiny training sets still fit; at least 2 training clips are needed.

Training scores use ``negative_outlier_factor_`` (each training point scored without itself as
a neighbour); ``score_samples`` on the training points would count each as its own neighbour
and make them look more normal than new normal clips.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.neighbors import LocalOutlierFactor

from asdcli.detectors.params import LOFParams
from asdcli.detectors.sklearn_base import SklearnDetector


class LOFDetector(SklearnDetector):
    """Local outlier factor on pooled clip statistics (see the module docstring)."""

    name: ClassVar[str] = "lof"
    params_cls: ClassVar[type[LOFParams]] = LOFParams
    params: LOFParams
    min_train_clips = 2

    def _make_estimator(self, n_train: int) -> Any:
        return LocalOutlierFactor(
            n_neighbors=min(self.params.n_neighbors, n_train - 1),
            metric=self.params.metric,
            novelty=True,
        )

    def _train_normality(self, z: np.ndarray) -> np.ndarray:
        return self.estimator_.negative_outlier_factor_

    def _count_params(self) -> int:
        # The model is the stored training set.
        return int(self.estimator_.n_samples_fit_ * self.estimator_.n_features_in_)
