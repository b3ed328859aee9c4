"""Decision thresholds: the one a run is trained with, and the F1 oracle it is compared to.

* :func:`fit_gamma_threshold` (training): the ``percentile`` quantile of a gamma distribution
  fitted to the training clips' scores, the DCASE 2023 baseline's rule (shape, loc and scale
  free), on standardised scores, with the empirical quantile as a fallback when the fit is
  impossible or implausible. :func:`threshold_record` is its entry in the run's thresholds.
* :func:`oracle_f1_threshold` (evaluation): the F1-optimal threshold, chosen with the test
  labels; :func:`compare_thresholds` sets the run's threshold and F1 beside it.

Pure functions of arrays, like :mod:`asdcli.metrics`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from asdcli.metrics import check_labels

ORACLE_NOTE = (
    "oracle: chosen with the test labels to maximise F1; an upper bound for the decisions, "
    "not a threshold a deployed system could pick"
)


def oracle_f1_threshold(scores: ArrayLike, y_true: ArrayLike) -> tuple[float, float]:
    """F1-optimal threshold chosen **with the test labels**: an oracle, not a deployable rule.

    Clips are decided anomalous when ``score > threshold`` (the DCASE baseline's rule). Among
    the thresholds between consecutive distinct scores, the one with the highest F1 is
    returned (the highest such threshold on ties), as the midpoint of the two scores it
    separates.

    Parameters
    ----------
    scores : array_like of float, shape (n_clips,)
        Finite anomaly scores, n_clips >= 1.
    y_true : array_like of {0, 1}, shape (n_clips,)

    Returns
    -------
    threshold : float
    f1 : float
        F1 of ``scores > threshold`` against ``y_true``. Without anomalous clips every
        threshold has F1 0; the maximum score (flags nothing) is returned with F1 0.0.

    Raises
    ------
    ValueError
        On empty or non-finite scores, or mismatched shapes.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be 1-D and non-empty, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    y = check_labels(y_true, "y_true", s.size)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float(s.max()), 0.0

    uniq, inverse = np.unique(s, return_inverse=True)  # ascending
    pos_at = np.bincount(inverse, weights=y, minlength=uniq.size)
    all_at = np.bincount(inverse, minlength=uniq.size)
    # flag every clip with score >= uniq[k], for k from the top down
    tp = np.cumsum(pos_at[::-1])[::-1]
    flagged = np.cumsum(all_at[::-1])[::-1]
    f1 = 2 * tp / (flagged + n_pos)  # 2tp / (2tp + fp + fn), as flagged = tp + fp
    best = int(np.flatnonzero(f1 == f1.max())[-1])  # highest threshold among ties
    upper = uniq[best]
    if best == 0:
        threshold = float(np.nextafter(upper, -np.inf))
    else:
        lower = uniq[best - 1]
        mid = lower / 2 + upper / 2
        threshold = float(mid if lower < mid < upper else lower)
    return threshold, float(f1[best])


@dataclass(frozen=True)
class GammaThreshold:
    """Result of :func:`fit_gamma_threshold`.

    ``method`` is ``"gamma"`` (fitted; ``shape, loc, scale`` are the gamma parameters in the
    scores' own units) or ``"empirical"`` (quantile of the scores; parameters ``None``), and
    ``note`` says why the fallback was taken.
    """

    threshold: float
    percentile: float
    method: str
    shape: float | None = None
    loc: float | None = None
    scale: float | None = None
    n: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MIN_GAMMA_SAMPLES = 5


def fit_gamma_threshold(train_scores: ArrayLike, percentile: float = 0.9) -> GammaThreshold:
    """Decision threshold as the ``percentile`` quantile of a gamma fit to training scores.

    The DCASE baseline calls ``scipy.stats.gamma.fit(scores)`` (shape, loc, scale free) and
    ``gamma.ppf(percentile, shape, loc, scale)``. Here the scores are first standardised to
    mean 0 and standard deviation 1; as the gamma family with free loc and scale is a
    location-scale family, the maximum-likelihood fit is unchanged in theory, while the
    optimiser no longer suffers from scores of 1e-6 or 1e6, or from negative scores. The
    quantile is mapped back to the scores' units.

    The empirical quantile ``np.quantile(scores, percentile)`` is used instead when:
    fewer than 5 finite scores, all scores (nearly) equal, scores so large that their
    standard deviation overflows, the fit raises or gives a
    non-finite value, the fitted quantile lies implausibly far from the data (further from
    the mean than twice the Cantelli bound ``std * sqrt(q / (1 - q))``, which no distribution
    with that mean and std can exceed), or the fit does not describe the scores: the share of
    training scores above the fitted quantile differs from ``1 - q`` by more than
    ``max(0.05, 4 * sqrt(q (1 - q) / n))`` (as with left-skewed scores, which no gamma fits).

    Parameters
    ----------
    train_scores : array_like of float, shape (n_clips,)
        Scores of the training clips; NaN and infinite values are ignored.
    percentile : float, default 0.9
        Quantile level in ``(0, 1)`` (a fraction, not a percent).

    Returns
    -------
    GammaThreshold
        Always with a finite ``threshold``.

    Raises
    ------
    ValueError
        If ``percentile`` is outside ``(0, 1)`` or no score is finite.
    """
    q = float(percentile)
    if not 0 < q < 1:
        raise ValueError(f"percentile must be in (0, 1), got {percentile}")
    x = np.asarray(train_scores, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        raise ValueError("gamma threshold needs at least one finite training score")

    def empirical(why: str) -> GammaThreshold:
        return GammaThreshold(float(np.quantile(x, q)), q, "empirical", n=n, note=why)

    if n < _MIN_GAMMA_SAMPLES:
        return empirical(f"only {n} finite scores (< {_MIN_GAMMA_SAMPLES})")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(x.mean())
        std = float(x.std())
    if not (math.isfinite(mean) and math.isfinite(std)):
        return empirical("scores too large to standardise")
    if not std > 1e-12 * max(1.0, abs(mean)):
        return empirical("scores are (nearly) all equal")
    z = (x - mean) / std
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            a, loc_z, scale_z = scipy.stats.gamma.fit(z)
            t_z = float(scipy.stats.gamma.ppf(q, a, loc=loc_z, scale=scale_z))
    except (ValueError, RuntimeError, FloatingPointError) as err:
        return empirical(f"gamma fit failed: {err}")
    bound = 2.0 * math.sqrt(max(q / (1 - q), (1 - q) / q))
    if not (math.isfinite(t_z) and abs(t_z) <= bound):
        return empirical(f"gamma quantile implausible ({t_z:.3g} std from the mean)")
    above = float(np.mean(z > t_z))
    tolerance = max(0.05, 4.0 * math.sqrt(q * (1 - q) / n))
    if abs(above - (1 - q)) > tolerance:
        return empirical(
            f"gamma fit does not describe the scores: {above:.1%} of them exceed its "
            f"{q:.0%} quantile, expected {1 - q:.1%}"
        )
    return GammaThreshold(
        threshold=mean + std * t_z,
        percentile=q,
        method="gamma",
        shape=float(a),
        loc=mean + std * float(loc_z),
        scale=std * float(scale_z),
        n=n,
    )


def gamma_threshold(train_scores: ArrayLike, percentile: float = 0.9) -> float:
    """Finite decision threshold from training scores; see :func:`fit_gamma_threshold`.

    Parameters
    ----------
    train_scores : array_like of float, shape (n_clips,)
    percentile : float, default 0.9
        Quantile level in ``(0, 1)``.

    Returns
    -------
    float
        Clips with ``score > threshold`` are decided anomalous.
    """
    return fit_gamma_threshold(train_scores, percentile).threshold


def threshold_record(fit: GammaThreshold) -> dict[str, Any]:
    """The run's record of one machine's threshold: value, quantile level, how it was fitted."""
    return {
        "threshold": fit.threshold,
        "percentile": fit.percentile,
        "method": fit.method,
        "shape": fit.shape,
        "loc": fit.loc,
        "scale": fit.scale,
        "note": fit.note,
    }


def compare_thresholds(
    scores: ArrayLike,
    y_true: ArrayLike,
    run_threshold: float | None,
    confusion: tuple[int, int, int, int] | None,
) -> dict[str, Any]:
    """The run's threshold and its F1, beside the oracle F1 threshold, for one machine type.

    Parameters
    ----------
    scores : array_like of float, shape (n_clips,)
        The labelled clips of every section of the machine type, pooled (the run has one
        threshold per machine type). Non-finite scores are left out of the oracle, and noted.
    y_true : array_like of {0, 1}, shape (n_clips,)
    run_threshold : float or None
        The run's threshold (``None``: unknown).
    confusion : ``(tn, fp, fn, tp)`` of the run's decisions, summed over the sections, or
        None without decisions.

    Returns
    -------
    dict
        ``run_threshold``, ``run_f1`` (``None`` without decisions), ``oracle_f1_threshold``,
        ``oracle_f1`` (``None`` when no clip has a finite score) and ``oracle_note``.
    """
    s = np.asarray(scores, dtype=float)
    y = check_labels(y_true, "y_true", s.size)
    entry: dict[str, Any] = {"run_threshold": run_threshold, "run_f1": None}
    if confusion is not None:
        _, fp, fn, tp = confusion
        entry["run_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    ok = np.isfinite(s)
    entry["oracle_f1_threshold"] = None
    entry["oracle_f1"] = None
    if ok.any():
        threshold, f1 = oracle_f1_threshold(s[ok], y[ok])
        entry["oracle_f1_threshold"] = threshold
        entry["oracle_f1"] = f1
        entry["oracle_note"] = ORACLE_NOTE + (
            f" ({int((~ok).sum())} non-finite scores left out)" if not ok.all() else ""
        )
    else:
        entry["oracle_note"] = "oracle: not computable, no labelled clip with a finite score"
    return entry
