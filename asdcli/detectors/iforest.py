"""``iforest``: scikit-learn ``IsolationForest`` on pooled clip vectors.

Each clip is its per-band mean and std over time, standardised with training statistics
(see :mod:`asdcli.detectors.sklearn_base`). Seeded by ``TrainParams.seed``. An integer
``max_samples`` larger than the training set is clipped to it (scikit-learn would warn).
``contamination`` only moves scikit-learn's own threshold; the scores do not depend on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sklearn.ensemble import IsolationForest

from asdcli.detectors.params import IForestParams
from asdcli.detectors.sklearn_base import SklearnDetector


class IForestDetector(SklearnDetector):
    """Isolation forest on pooled clip statistics (see the module docstring)."""

    name: ClassVar[str] = "iforest"
    params_cls: ClassVar[type[IForestParams]] = IForestParams
    params: IForestParams

    def _make_estimator(self, n_train: int) -> Any:
        p = self.params
        max_samples = p.max_samples if p.max_samples == "auto" else min(p.max_samples, n_train)
        return IsolationForest(
            n_estimators=p.n_estimators,
            max_samples=max_samples,
            contamination=p.contamination,
            random_state=self.train.seed,
        )

    def _count_params(self) -> int:
        # Each tree node stores a feature and a threshold (leaves a value): count the nodes.
        return int(sum(tree.tree_.node_count for tree in self.estimator_.estimators_))
