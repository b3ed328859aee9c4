"""``iforest``: isolation forest (scikit-learn ``IsolationForest``'s scores) on pooled clip vectors.

Each clip is its per-band mean and std over time, standardised with training statistics
(see :mod:`asdcli.detectors.sklearn_base`). Seeded by ``TrainParams.seed``. An integer
``max_samples`` larger than the training set is clipped to it (scikit-learn would warn).
``contamination`` only moves scikit-learn's own threshold; the scores do not depend on it.

The forest is fitted by scikit-learn, then kept as flat node arrays, so that ``model.npz``
holds no pickle (skops would need scikit-learn's ``Tree`` type trusted, whose node indices go
unchecked: see :mod:`asdcli.detectors.sklearn_base`). The trees' nodes are concatenated;
``roots`` ``(n_trees,)`` says where each tree starts. Per node: ``left`` and ``right`` (the
children, ``-1`` at a leaf), ``feature`` and ``threshold`` (go left when
``x[feature] <= threshold``, ``x`` rounded to float32 as scikit-learn's trees do) and
``path_length``: the node's depth (edges from the root) plus the average path length ``c(m)``
of the ``m`` training samples that reached it (what a clip that ends there counts). A clip's
normality is scikit-learn's ``-2 ** (-mean path length / c(max_samples))``.

Loading checks that every child comes after its parent inside its own tree and every feature
exists, so a crafted file can neither index out of bounds nor loop.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.ensemble import IsolationForest

from asdcli.detectors.params import IForestParams
from asdcli.detectors.sklearn_base import SklearnDetector, expect_shape


def average_path_length(n_samples: np.ndarray) -> np.ndarray:
    """``c(m)``: the mean path length of an unsuccessful search in a binary search tree of ``m``
    points, ``2 (ln(m - 1) + gamma) - 2 (m - 1) / m``; ``c(1) = 0``, ``c(2) = 1``."""
    m = np.asarray(n_samples, dtype=np.float64)
    out = np.where(m == 2, 1.0, 0.0)
    big = m > 2
    out[big] = 2.0 * (np.log(m[big] - 1.0) + np.euler_gamma) - 2.0 * (m[big] - 1.0) / m[big]
    return out


def node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Edges from the root (node 0) to each node of one tree ``(n_nodes,)``, level by level."""
    depth = np.zeros(len(left), dtype=np.int64)
    frontier, level = np.array([0]), 0
    while frontier.size:
        depth[frontier] = level
        children = np.concatenate([left[frontier], right[frontier]])
        frontier, level = children[children >= 0], level + 1
    return depth


def flatten_forest(forest: IsolationForest) -> dict[str, np.ndarray]:
    """A fitted forest -> the node arrays of the module docstring (public tree attributes)."""
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("left", "right", "feature", "threshold", "path_length")
    }
    roots, offset = [], 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        left = tree.children_left.astype(np.int64)
        right = tree.children_right.astype(np.int64)
        internal = left >= 0
        parts["left"].append(np.where(internal, left + offset, -1))
        parts["right"].append(np.where(internal, right + offset, -1))
        parts["feature"].append(np.where(internal, tree.feature, 0).astype(np.int64))
        parts["threshold"].append(np.where(internal, tree.threshold, 0.0))
        parts["path_length"].append(
            node_depths(left, right) + average_path_length(tree.n_node_samples)
        )
        roots.append(offset)
        offset += len(left)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["roots"] = np.asarray(roots, dtype=np.int64)
    arrays["max_samples"] = np.asarray(forest.max_samples_, dtype=np.int64)
    return arrays


def check_forest(arrays: dict[str, np.ndarray], dim: int) -> None:
    """:class:`ValueError` unless the node arrays are a forest of trees over ``dim`` features
    whose children all come after their parent, inside the parent's tree."""
    n = len(expect_shape("left", arrays["left"], (None,)))
    for name in ("right", "feature", "threshold", "path_length"):
        expect_shape(name, arrays[name], (n,))
    roots = expect_shape("roots", arrays["roots"], (None,))
    expect_shape("max_samples", arrays["max_samples"], ())
    for name in ("left", "right", "feature", "roots", "max_samples"):
        if arrays[name].dtype.kind != "i":
            raise ValueError(f"array {name} has dtype {arrays[name].dtype}, not an integer")
    if n == 0 or len(roots) == 0 or roots[0] != 0 or (np.diff(roots) <= 0).any() or roots[-1] >= n:
        raise ValueError("the tree roots are not increasing node indices starting at 0")
    node = np.arange(n)
    tree_end = np.append(roots[1:], n)[np.searchsorted(roots, node, side="right") - 1]
    left, right = arrays["left"], arrays["right"]
    internal = left >= 0
    for child in (left, right):
        inside = (child > node) & (child < tree_end)
        if not np.where(internal, inside, child == -1).all():
            raise ValueError("a tree node has a child outside its tree or before itself")
    if ((arrays["feature"] < 0) | (arrays["feature"] >= dim)).any():
        raise ValueError(f"a tree node splits on a feature outside 0..{dim - 1}")
    if (arrays["path_length"] < 0).any() or arrays["max_samples"] < 1:
        raise ValueError("negative path lengths or max_samples < 1")


class IForestDetector(SklearnDetector):
    """Isolation forest on pooled clip statistics (see the module docstring).

    Attributes (after :meth:`fit` or :meth:`load`, besides :class:`Detector`'s)
    --------------------------------------------------------------------------
    forest_ : dict of str to ndarray
        The node arrays of the module docstring (``roots``, ``left``, ``right``, ``feature``,
        ``threshold``, ``path_length``, ``max_samples``).
    """

    name: ClassVar[str] = "iforest"
    params_cls: ClassVar[type[IForestParams]] = IForestParams
    params: IForestParams
    model_arrays = ("roots", "left", "right", "feature", "threshold", "path_length", "max_samples")

    forest_: dict[str, np.ndarray]

    def _fit_vectors(self, z: np.ndarray) -> np.ndarray:
        p = self.params
        max_samples = p.max_samples if p.max_samples == "auto" else min(p.max_samples, len(z))
        forest = IsolationForest(
            n_estimators=p.n_estimators,
            max_samples=max_samples,
            contamination=p.contamination,
            random_state=self.train.seed,
        ).fit(z)
        self.forest_ = flatten_forest(forest)
        # Each node stores a feature and a threshold (a leaf its path length): count the nodes.
        self.n_params_ = len(self.forest_["left"])
        return self._normality(z)

    def _leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf ``(n_clips, n_trees)`` each float32 vector of ``x`` ``(n_clips, dim)``
        reaches in each tree."""
        f = self.forest_
        node = np.repeat(f["roots"][None, :], len(x), axis=0)
        rows = np.arange(len(x))[:, None]
        internal = f["left"][node] >= 0
        while internal.any():  # ends: children come after their parent (check_forest)
            go_left = x[rows, f["feature"][node]] <= f["threshold"][node]
            step = np.where(go_left, f["left"][node], f["right"][node])
            node = np.where(internal, step, node)
            internal = f["left"][node] >= 0
        return node

    def _normality(self, z: np.ndarray) -> np.ndarray:
        f = self.forest_
        # scikit-learn's trees compare float32 inputs with float64 thresholds.
        paths = f["path_length"][self._leaves(z.astype(np.float32))].sum(axis=1)
        denominator = len(f["roots"]) * float(average_path_length(f["max_samples"]))
        if denominator == 0:  # one training clip: every path is 0, scikit-learn's score is 1
            return -np.ones(len(z))
        return np.asarray(-np.power(2.0, -paths / denominator), dtype=np.float64)

    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(self.forest_)

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        check_forest(arrays, self.dim_)
        ints = ("roots", "left", "right", "feature", "max_samples")
        self.forest_ = {
            k: v.astype(np.int64 if k in ints else np.float64) for k, v in arrays.items()
        }
