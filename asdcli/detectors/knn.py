"""``knn``: training-free k nearest neighbours on pooled log-mel statistics, per section.

Each clip ``(n_mels, frames)`` becomes one vector of per-band statistics over time, the
concatenation of ``params.pooling`` (``mean``, ``std``, ``max``, in that order):
``(len(pooling) * n_mels,)``. Vectors are standardised with the statistics of their section's
training clips, so sections recorded at other levels or on other machines do not mix.

Per section, the source and the target training clips form separate neighbour banks. A clip's
score is the mean distance to its ``k`` nearest neighbours in each bank, and the smaller of
the two: the handful of target clips counts as much as the many source ones (the first-shot
recipe of the top DCASE 2023-2024 systems, here without a learned embedding). Clips whose
domain is unknown (DCASE 2020 or free names) go to the source bank; a section never seen in
training is scored against every training clip with the global statistics.

Training scores are leave-one-out (a clip is never its own neighbour), so the decision
threshold fitted on them matches what a new normal clip scores.

Saved state: ``banks.npz``, plain arrays loaded with ``allow_pickle=False``: nothing in a
received run folder can execute code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from asdcli.detectors.base import Detector, Progress
from asdcli.detectors.params import KNNParams
from asdcli.naming import ClipInfo

STATE_FILE = "banks.npz"
STD_FLOOR = 1e-6
_ORDER = ("mean", "std", "max")
_GLOBAL = "*"  # the bank key of clips whose section was never trained on


def pool_stats(features: Sequence[np.ndarray], pooling: Sequence[str]) -> np.ndarray:
    """``n_clips x (n_mels, frames)`` -> ``(n_clips, len(pooling) * n_mels)`` float64, the
    statistics in the fixed order mean, std, max (whatever order ``pooling`` lists them in)."""
    wanted = [s for s in _ORDER if s in pooling]
    parts = []
    for f in features:
        x = f.astype(np.float64)
        stats = {"mean": x.mean(axis=1), "std": x.std(axis=1), "max": x.max(axis=1)}
        parts.append(np.concatenate([stats[s] for s in wanted]))
    return np.stack(parts)


def distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise distances ``(len(a), len(b))``: Euclidean, or cosine distance ``1 - cos``."""
    if metric == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), STD_FLOOR)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), STD_FLOOR)
        return np.asarray(np.clip(1.0 - an @ bn.T, 0.0, 2.0))
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.asarray(np.sqrt(np.maximum(sq, 0.0)))


def knn_distance(d: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` smallest entries of each row of ``d`` ``(n, m)`` (k clipped to m);
    rows of infinities (an empty bank) give ``inf``."""
    if d.shape[1] == 0:
        return np.full(d.shape[0], np.inf)
    k = min(k, d.shape[1])
    return np.asarray(np.sort(d, axis=1)[:, :k].mean(axis=1))


class KNNDetector(Detector):
    """k-NN distance to per-section source and target banks (see the module docstring).

    Attributes (after :meth:`fit`, besides :class:`Detector`'s)
    ----------------------------------------------------------
    bank_ : ndarray, shape (n_train, dim)
        The standardised training vectors.
    bank_section_ : ndarray of str, shape (n_train,)
    bank_target_ : ndarray of bool, shape (n_train,)
        True for target-domain training clips.
    sections_ : ndarray of str, shape (n_sections,)
    section_mean_, section_std_ : ndarray, shape (n_sections, dim)
        Standardisation statistics of each section's training vectors.
    """

    name: ClassVar[str] = "knn"
    params_cls: ClassVar[type[KNNParams]] = KNNParams
    params: KNNParams

    bank_: np.ndarray
    bank_section_: np.ndarray
    bank_target_: np.ndarray
    sections_: np.ndarray
    section_mean_: np.ndarray
    section_std_: np.ndarray

    def _standardise(self, pooled: np.ndarray, sections: list[str]) -> np.ndarray:
        out = np.asarray((pooled - self.norm_mean_) / self.norm_std_, dtype=np.float64)
        for i, s in enumerate(self.sections_):
            rows = [j for j, sec in enumerate(sections) if sec == s]
            if rows:
                out[rows] = (pooled[rows] - self.section_mean_[i]) / self.section_std_[i]
        return out

    def _fit(
        self, features: Sequence[np.ndarray], clips: list[ClipInfo], progress: Progress | None
    ) -> np.ndarray:
        if len(features) < 2:
            raise ValueError(f"knn needs at least 2 training clips, got {len(features)}")
        pooled = pool_stats(features, self.params.pooling)
        sections = [c.section for c in clips]
        self.norm_mean_ = pooled.mean(axis=0).astype(np.float32)
        self.norm_std_ = np.maximum(pooled.std(axis=0), STD_FLOOR).astype(np.float32)
        self.sections_ = np.array(sorted(set(sections)))
        means, stds = [], []
        for s in self.sections_:
            rows = pooled[[sec == s for sec in sections]]
            means.append(rows.mean(axis=0))
            # One clip in a section has no spread: borrow the global std.
            stds.append(
                np.maximum(rows.std(axis=0), STD_FLOOR) if len(rows) > 1 else self.norm_std_
            )
        self.section_mean_ = np.stack(means)
        self.section_std_ = np.stack(stds).astype(np.float64)
        self.bank_ = self._standardise(pooled, sections)
        self.bank_section_ = np.array(sections)
        self.bank_target_ = np.array([c.domain == "target" for c in clips])
        self.n_params_ = int(self.bank_.size)
        return self._distances(self.bank_, sections, leave_one_out=True)

    def _distances(
        self, z: np.ndarray, sections: list[str], leave_one_out: bool = False
    ) -> np.ndarray:
        """Score ``(n,)`` of standardised vectors ``z`` ``(n, dim)`` against their sections'
        banks; ``leave_one_out`` means ``z`` is the bank itself and skips each clip's own row."""
        known = set(self.sections_.tolist())
        scores = np.empty(len(z))
        keys = np.array([s if s in known else _GLOBAL for s in sections])
        for key in np.unique(keys):
            rows = np.flatnonzero(keys == key)
            in_bank = (
                np.ones(len(self.bank_), bool) if key == _GLOBAL else self.bank_section_ == key
            )
            d = distances(z[rows], self.bank_, self.params.metric)
            if leave_one_out:
                d[np.arange(len(rows)), rows] = np.inf
            best = np.full(len(rows), np.inf)
            for domain_mask in (~self.bank_target_, self.bank_target_):
                cols = np.flatnonzero(in_bank & domain_mask)
                if cols.size:
                    sub = d[:, cols]
                    finite = np.isfinite(sub).sum(axis=1)
                    # A bank whose only clip is the one left out has nothing to offer.
                    cand = np.where(finite > 0, knn_distance(sub, self.params.k), np.inf)
                    best = np.minimum(best, cand)
            scores[rows] = best
        if not np.isfinite(scores).all():
            # Only possible in leave-one-out with a one-clip section: score it globally.
            bad = np.flatnonzero(~np.isfinite(scores))
            d = distances(z[bad], self.bank_, self.params.metric)
            if leave_one_out:
                d[np.arange(len(bad)), bad] = np.inf
            scores[bad] = knn_distance(d, self.params.k)
        return scores

    def _score(self, features: Sequence[np.ndarray], clips: list[ClipInfo]) -> np.ndarray:
        sections = [c.section for c in clips]
        z = self._standardise(pool_stats(features, self.params.pooling), sections)
        return self._distances(z, sections)

    def _save_state(self, folder: Path) -> list[str]:
        np.savez(
            folder / STATE_FILE,
            bank=self.bank_,
            bank_section=self.bank_section_.astype(str),
            bank_target=self.bank_target_,
            sections=self.sections_.astype(str),
            section_mean=self.section_mean_,
            section_std=self.section_std_,
        )
        return [STATE_FILE]

    def _load_state(self, folder: Path, meta: dict[str, Any], device: str | None) -> None:
        path = folder / STATE_FILE
        if not path.is_file():
            raise ValueError(f"{folder} has knn's detector.json but no {STATE_FILE}")
        try:
            with np.load(path, allow_pickle=False) as z:
                self.bank_ = z["bank"].astype(np.float64)
                self.bank_section_ = z["bank_section"].astype(str)
                self.bank_target_ = z["bank_target"].astype(bool)
                self.sections_ = z["sections"].astype(str)
                self.section_mean_ = z["section_mean"].astype(np.float64)
                self.section_std_ = z["section_std"].astype(np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path} is not a knn state file: {exc}") from None
        n, dim = self.bank_.shape if self.bank_.ndim == 2 else (0, 0)
        if (
            n < 1
            or self.bank_section_.shape != (n,)
            or self.bank_target_.shape != (n,)
            or self.section_mean_.shape != (len(self.sections_), dim)
            or self.section_std_.shape != self.section_mean_.shape
            or dim != len(self.params.pooling) * self.n_mels_
        ):
            raise ValueError(f"{path} does not match its detector.json (shapes disagree)")
