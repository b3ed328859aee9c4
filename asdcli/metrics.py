"""Evaluation metrics, as pure functions of per-clip arrays (DCASE 2023 Task 2 conventions).

The definitions follow the official ``dcase2023_task2_evaluator.py`` (nttcslab):

* ``AUC (source)`` uses the section's **source normals and all its anomalies** (both domains);
  ``AUC (target)`` the target normals and all anomalies. The evaluator's selection is
  ``(domain == d) | (y_true != 0)``.
* ``pAUC`` is ``roc_auc_score(max_fpr=0.1)`` (McClish-standardised, as scikit-learn returns it)
  over **all** clips of the section, whatever their domain.
* Precision, recall and F1 are computed per domain on that domain's clips only, from the
  0/1 decisions (1 = anomalous), as ``tp / max(tp + fp, eps)``, ``tp / max(tp + fn, eps)`` and
  ``2 P R / max(P + R, eps)``.
* The official score is the harmonic mean of the concatenated AUC (source), AUC (target) and
  pAUC values of every machine type and section, each floored at ``sys.float_info.epsilon``
  (``scipy.stats.hmean(np.maximum(values, eps))``).

Choices made here where the evaluator has none:

* **Zero division.** A zero denominator in precision, recall or F1 gives ``0.0``, which is what
  the evaluator's ``max(..., eps)`` produces and what scikit-learn's
  ``precision_recall_fscore_support(..., zero_division=0)`` returns (scikit-learn's default,
  ``zero_division="warn"``, also returns 0 but warns). Each such case adds a line to
  :attr:`SectionMetrics.notes`, so the 0.0 is never silent.
* **Not computable.** A ranking metric whose selection lacks normals or anomalies, decision
  metrics without decisions, metrics of a domain with no clips, and ranking metrics of a
  section whose scores contain NaN or infinity are ``None``, with the reason in ``notes``.
  Malformed inputs (mismatched lengths, labels other than 0/1) raise ``ValueError``.

Decision thresholds (the gamma fit of training scores, the F1 oracle) are in
:mod:`asdcli.thresholds`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

EPS = sys.float_info.epsilon
"""Floor applied to every value before a harmonic mean, as in the official evaluator."""

MAX_FPR = 0.1
"""False-positive-rate limit of the pAUC in DCASE Task 2."""

OFFICIAL_FIELDS = ("auc_source", "auc_target", "pauc")
"""The three per-section values whose harmonic mean is the official score."""

DOMAINS = ("source", "target")


@dataclass
class SectionMetrics:
    """Metrics of one machine type and section. ``None`` means not computable, see ``notes``.

    Ranking metrics (``auc*``, ``pauc*``) come from the scores; the others from the 0/1
    decisions. ``tn, fp, fn, tp`` and ``accuracy`` cover all clips of the section.
    """

    auc: float | None = None
    auc_source: float | None = None
    auc_target: float | None = None
    pauc: float | None = None
    pauc_source: float | None = None
    pauc_target: float | None = None
    precision_source: float | None = None
    precision_target: float | None = None
    recall_source: float | None = None
    recall_target: float | None = None
    f1_source: float | None = None
    f1_target: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    accuracy: float | None = None
    tn: int | None = None
    fp: int | None = None
    fn: int | None = None
    tp: int | None = None
    max_fpr: float = MAX_FPR
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dictionary (floats, ints, ``None``, lists, dicts)."""
        return asdict(self)

    @property
    def official_values(self) -> tuple[float | None, float | None, float | None]:
        """``(auc_source, auc_target, pauc)``, the section's share of the official score."""
        return (self.auc_source, self.auc_target, self.pauc)

    @property
    def official_score(self) -> float | None:
        """Harmonic mean of the section's available :attr:`official_values` (``None``: none)."""
        values = [v for v in self.official_values if v is not None]
        return official_score(values) if values else None


METRIC_FIELDS: tuple[str, ...] = (
    "auc",
    "auc_source",
    "auc_target",
    "pauc",
    "pauc_source",
    "pauc_target",
    "precision_source",
    "precision_target",
    "recall_source",
    "recall_target",
    "f1_source",
    "f1_target",
    "precision",
    "recall",
    "f1",
    "accuracy",
)
"""Names of the float metrics of :class:`SectionMetrics`, in declaration order."""


# ---------------------------------------------------------------------------------------------
# per-section metrics
# ---------------------------------------------------------------------------------------------


def check_labels(values: ArrayLike, name: str, n: int) -> np.ndarray:
    """``values`` as an int array of shape ``(n,)`` holding only 0 and 1, else ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1, got {sorted(set(arr.tolist()))[:5]}")
    return arr.astype(int)


def _ranking_metric(
    y: np.ndarray, s: np.ndarray, what: str, notes: list[str], max_fpr: float | None = None
) -> float | None:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        notes.append(
            f"{what}: not computable, needs normal and anomalous clips "
            f"({n_neg} normal, {n_pos} anomalous)"
        )
        return None
    return float(roc_auc_score(y, s, max_fpr=max_fpr))


def _ratio(num: int, den: int, what: str, why: str, notes: list[str]) -> float:
    if den == 0:
        notes.append(f"{what}: {why}; set to 0.0 as the DCASE 2023 evaluator does")
        return 0.0
    return num / den


def _prf(y: np.ndarray, d: np.ndarray, suffix: str, notes: list[str]) -> tuple[float, float, float]:
    tp = int(np.sum((y == 1) & (d == 1)))
    fp = int(np.sum((y == 0) & (d == 1)))
    fn = int(np.sum((y == 1) & (d == 0)))
    p = _ratio(tp, tp + fp, f"precision{suffix}", "no clip decided anomalous", notes)
    r = _ratio(tp, tp + fn, f"recall{suffix}", "no anomalous clips", notes)
    if p + r == 0:
        # tp = 0: F1 is 0 whether or not a denominator above was zero (noted there)
        return p, r, 0.0
    return p, r, 2.0 * p * r / (p + r)


def section_metrics(
    scores: ArrayLike,
    y_true: ArrayLike,
    domain: ArrayLike,
    decisions: ArrayLike | None = None,
    max_fpr: float = MAX_FPR,
) -> SectionMetrics:
    """All metrics of one section, as the DCASE 2023 Task 2 evaluator defines them.

    Parameters
    ----------
    scores : array_like of float, shape (n_clips,)
        Anomaly scores; higher means more anomalous.
    y_true : array_like of {0, 1}, shape (n_clips,)
        Ground truth, 1 for anomalous clips.
    domain : array_like of str, shape (n_clips,)
        ``"source"`` or ``"target"`` per clip. Other values (``"unknown"``) count in the
        all-clip metrics, and as anomalies of both domains, but in no domain's normals.
    decisions : array_like of {0, 1}, shape (n_clips,), optional
        Hard decisions, 1 for clips decided anomalous. Without them the decision metrics are
        ``None``.
    max_fpr : float, default 0.1
        False-positive-rate limit of the pAUC, in ``(0, 1]``.

    Returns
    -------
    SectionMetrics
        Every metric, ``None`` where not computable, with the reasons in ``notes``.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of one length, labels or decisions are not 0/1, or
        ``max_fpr`` is outside ``(0, 1]``.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    n = s.shape[0]
    y = check_labels(y_true, "y_true", n)
    dom = np.asarray(domain).astype(str)
    if dom.shape != (n,):
        raise ValueError(f"domain must have shape ({n},), got {dom.shape}")
    dec = None if decisions is None else check_labels(decisions, "decisions", n)
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")

    out = SectionMetrics(max_fpr=float(max_fpr))
    notes = out.notes
    is_dom = {d: dom == d for d in DOMAINS}
    other = ~(is_dom["source"] | is_dom["target"])
    out.counts = {
        "n_clips": n,
        "n_normal": int(np.sum(y == 0)),
        "n_anomaly": int(np.sum(y == 1)),
        **{
            f"n_{d}_{lab}": int(np.sum(is_dom[d] & (y == v)))
            for d in DOMAINS
            for lab, v in (("normal", 0), ("anomaly", 1))
        },
        "n_other_domain": int(other.sum()),
    }
    if other.any():
        notes.append(
            f"{int(other.sum())} clips have a domain other than source/target "
            f"({sorted(set(dom[other].tolist()))[:3]}); they count in auc, pauc and accuracy only"
        )
    if n == 0:
        notes.append("section has no clips")

    bad = ~np.isfinite(s)
    if bad.any():
        notes.append(
            f"scores hold {int(bad.sum())} NaN or infinite values; ranking metrics not computed"
        )
    else:
        out.auc = _ranking_metric(y, s, "auc", notes)
        out.pauc = _ranking_metric(y, s, "pauc", notes, max_fpr)
        for d in DOMAINS:
            sel = (is_dom[d] & (y == 0)) | (y == 1)  # domain normals + all anomalies
            setattr(out, f"auc_{d}", _ranking_metric(y[sel], s[sel], f"auc_{d}", notes))
            setattr(out, f"pauc_{d}", _ranking_metric(y[sel], s[sel], f"pauc_{d}", notes, max_fpr))

    if dec is None:
        notes.append("no decisions given: precision, recall, f1, accuracy, confusion not computed")
        return out

    out.tn = int(np.sum((y == 0) & (dec == 0)))
    out.fp = int(np.sum((y == 0) & (dec == 1)))
    out.fn = int(np.sum((y == 1) & (dec == 0)))
    out.tp = int(np.sum((y == 1) & (dec == 1)))
    if n:
        out.accuracy = (out.tp + out.tn) / n
        out.precision, out.recall, out.f1 = _prf(y, dec, "", notes)
    else:
        notes.append("accuracy, precision, recall, f1: no clips")
    for d in DOMAINS:
        sel = is_dom[d]
        if not sel.any():
            notes.append(f"precision_{d}, recall_{d}, f1_{d}: no {d} clips")
            continue
        p, r, f = _prf(y[sel], dec[sel], f"_{d}", notes)
        setattr(out, f"precision_{d}", p)
        setattr(out, f"recall_{d}", r)
        setattr(out, f"f1_{d}", f)
    return out


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------


def official_score(values: Sequence[float], eps: float = EPS) -> float:
    """Harmonic mean of values floored at ``eps``: the DCASE 2023 Task 2 official score.

    Parameters
    ----------
    values : sequence of float, length n >= 1
        The concatenated AUC (source), AUC (target) and pAUC of every machine type and
        section (order does not matter).
    eps : float, default ``sys.float_info.epsilon``
        Floor applied before the harmonic mean, so a zero AUC gives a score near zero
        instead of an error; the evaluator uses ``np.maximum(values, sys.float_info.epsilon)``.

    Returns
    -------
    float
        ``scipy.stats.hmean(np.maximum(values, eps))``.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds NaN or infinity.
    """
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("official_score needs at least one value")
    if not np.isfinite(arr).all():
        raise ValueError(f"official_score got non-finite values: {arr[~np.isfinite(arr)]}")
    return float(scipy.stats.hmean(np.maximum(arr, eps)))


def _means(values: list[float], eps: float) -> dict[str, Any]:
    if not values:
        return {"arithmetic": None, "harmonic": None, "n": 0}
    return {
        "arithmetic": float(np.mean(values)),
        "harmonic": official_score(values, eps),
        "n": len(values),
    }


def summarize(
    per_section: Mapping[tuple[str, str], SectionMetrics], eps: float = EPS
) -> dict[str, Any]:
    """Official score and means over sections, skipping (and listing) ``None`` values.

    Parameters
    ----------
    per_section : mapping ``(machine, section) -> SectionMetrics``
        One entry per machine type and section.
    eps : float, default ``sys.float_info.epsilon``
        Floor of every harmonic mean (see :func:`official_score`).

    Returns
    -------
    dict
        ``official_score``: harmonic mean of all sections' ``(auc_source, auc_target, pauc)``,
        ``None`` when none is available; ``n_official_values``: how many entered it;
        ``means``: ``{metric: {"arithmetic", "harmonic", "n"}}`` over all sections;
        ``per_machine``: ``{machine: {"official_score", "n_official_values", "sections",
        "means"}}``, the same restricted to one machine type; ``skipped``: one line
        ``"machine/section: metric"`` per ``None`` value left out.
    """
    skipped: list[str] = []
    by_machine: dict[str, list[tuple[str, SectionMetrics]]] = {}
    for (machine, section), m in sorted(per_section.items()):
        by_machine.setdefault(machine, []).append((section, m))
        skipped.extend(f"{machine}/{section}: {k}" for k in METRIC_FIELDS if getattr(m, k) is None)

    def block(items: list[SectionMetrics]) -> dict[str, Any]:
        official = [v for m in items for v in m.official_values if v is not None]
        return {
            "official_score": official_score(official, eps) if official else None,
            "n_official_values": len(official),
            "means": {
                k: _means([getattr(m, k) for m in items if getattr(m, k) is not None], eps)
                for k in METRIC_FIELDS
            },
        }

    overall = block([m for ms in by_machine.values() for _, m in ms])
    per_machine = {
        machine: {**block([m for _, m in ms]), "sections": [sec for sec, _ in ms]}
        for machine, ms in by_machine.items()
    }
    return {**overall, "per_machine": per_machine, "skipped": skipped}
