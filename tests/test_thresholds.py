"""Decision thresholds: the gamma fit of training scores and the F1 oracle, on hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from asdcli.thresholds import (
    ORACLE_NOTE,
    compare_thresholds,
    fit_gamma_threshold,
    gamma_threshold,
    oracle_f1_threshold,
    threshold_record,
)

SCORES = [0.10, 0.20, 0.50, 0.90, 0.95, 0.70]
LABELS = [0, 0, 0, 0, 1, 1]


# --- oracle threshold ---------------------------------------------------------------------


def test_oracle_f1_threshold_hand_case():
    # sorted scores 0.1 0.2 0.5 0.7* 0.9 0.95* (* anomalous), 2 anomalies:
    # flag >= 0.95: tp 1 fp 0 -> F1 2/3; >= 0.9: tp 1 fp 1 -> 1/2; >= 0.7: tp 2 fp 1 -> 4/5;
    # >= 0.5: tp 2 fp 2 -> 2/3 ... best: flag >= 0.7, threshold between 0.5 and 0.7 -> 0.6
    t, f1 = oracle_f1_threshold(SCORES, LABELS)
    assert t == pytest.approx(0.6)
    assert f1 == pytest.approx(0.8)


@pytest.mark.parametrize("seed", range(5))
def test_oracle_f1_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.normal(size=60), 1)  # rounding makes ties
    y = (rng.random(60) < 0.3).astype(int)
    t, f1 = oracle_f1_threshold(s, y)
    brute = max(f1_score(y, (s > c).astype(int), zero_division=0) for c in np.r_[s, s.min() - 1])
    assert f1 == pytest.approx(brute)
    assert f1_score(y, (s > t).astype(int)) == pytest.approx(f1)


def test_oracle_f1_threshold_degenerate():
    assert oracle_f1_threshold([0.3, 0.1], [0, 0]) == (0.3, 0.0)
    t, f1 = oracle_f1_threshold([0.5, 0.5, 0.5], [0, 1, 1])
    assert t < 0.5 and f1 == pytest.approx(0.8)  # flag all: 2 * 2 / (3 + 2)
    with pytest.raises(ValueError):
        oracle_f1_threshold([], [])


# --- gamma threshold ----------------------------------------------------------------------


@pytest.mark.parametrize(("a", "loc", "scale"), [(2.0, 0.0, 1.0), (5.0, 3.0, 1e-3), (9, 0, 1e4)])
def test_gamma_threshold_recovers_true_quantile(a, loc, scale):
    x = scipy.stats.gamma.rvs(a, loc=loc, scale=scale, size=3000, random_state=0)
    true = scipy.stats.gamma.ppf(0.9, a, loc=loc, scale=scale)
    fit = fit_gamma_threshold(x, 0.9)
    assert fit.method == "gamma"
    assert fit.threshold == pytest.approx(true, rel=0.05, abs=0.05 * scale)
    # same model as the DCASE baseline's raw fit, up to the optimiser's tolerance
    baseline = scipy.stats.gamma.ppf(0.9, *scipy.stats.gamma.fit(x))
    assert fit.threshold == pytest.approx(baseline, rel=1e-3)
    assert gamma_threshold(x) == fit.threshold


@pytest.mark.parametrize(
    ("scores", "method"),
    [
        ([3.0] * 20, "empirical"),  # all equal
        ([1.0, 2.0], "empirical"),  # too few
        ([-5.0, -4.0, -3.5, -3.0, -2.9, -2.0, -1.0, -0.5], "gamma"),  # negative: fit still works
        (-scipy.stats.gamma.rvs(2, size=500, random_state=1), "empirical"),  # left-skewed
        ([1.0, np.nan, 2.0, np.inf, 3.0], "empirical"),  # non-finite ignored, 3 left
    ],
)
def test_gamma_threshold_degenerate_inputs_are_finite(scores, method):
    fit = fit_gamma_threshold(scores)
    assert np.isfinite(fit.threshold)
    assert fit.method == method
    if method == "empirical":
        finite = np.asarray(scores, dtype=float)
        finite = finite[np.isfinite(finite)]
        assert fit.threshold == pytest.approx(np.quantile(finite, 0.9))
        assert fit.note


@pytest.mark.parametrize(
    "bad",
    [
        {"train_scores": []},
        {"train_scores": [np.nan]},
        {"train_scores": [1.0, 2.0], "percentile": 90},
    ],
)
def test_gamma_threshold_rejects_unusable_input(bad):
    with pytest.raises(ValueError):
        gamma_threshold(**bad)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_gamma_threshold_always_finite(scores):
    assert np.isfinite(gamma_threshold(scores))


# --- the run's record and the comparison with the oracle --------------------------------


def test_threshold_record_says_how_it_was_fitted():
    x = scipy.stats.gamma.rvs(3.0, size=400, random_state=2)
    fit = fit_gamma_threshold(x, 0.8)
    record = threshold_record(fit)
    assert record == {
        "threshold": fit.threshold,
        "percentile": 0.8,
        "method": "gamma",
        "shape": fit.shape,
        "loc": fit.loc,
        "scale": fit.scale,
        "note": "",
    }
    assert threshold_record(fit_gamma_threshold([1.0, 2.0]))["method"] == "empirical"


def test_compare_thresholds_hand_case():
    # run threshold 0.6 flags 0.90 (fp), 0.95 and 0.70 (tp): tn 3, fp 1, fn 0, tp 2
    entry = compare_thresholds(SCORES, LABELS, 0.6, (3, 1, 0, 2))
    assert entry["run_threshold"] == 0.6
    assert entry["run_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))
    # a run threshold of 0.0 flags all 6 clips: F1 2 * 2 / (2 * 2 + 4); the oracle is that of
    # test_oracle_f1_threshold_hand_case, whatever the run's threshold
    worse = compare_thresholds(SCORES, LABELS, 0.0, (0, 4, 0, 2))
    assert worse["run_f1"] == pytest.approx(4 / 8)
    assert worse["oracle_f1"] == pytest.approx(0.8)
    assert worse["oracle_f1_threshold"] == pytest.approx(0.6)
    assert worse["oracle_note"] == ORACLE_NOTE


def test_compare_thresholds_without_decisions_or_finite_scores():
    entry = compare_thresholds([0.2, np.nan, 0.9], [0, 1, 1], None, None)
    assert entry["run_threshold"] is None and entry["run_f1"] is None
    # the NaN clip is left out of the oracle: 0.9 against 0.2 separates perfectly
    assert entry["oracle_f1"] == pytest.approx(1.0)
    assert 0.2 < entry["oracle_f1_threshold"] < 0.9
    assert "1 non-finite scores left out" in entry["oracle_note"]
    none = compare_thresholds([np.nan], [1], 0.5, None)
    assert none["oracle_f1"] is None and "not computable" in none["oracle_note"]
    assert compare_thresholds([0.1, 0.2], [0, 0], 0.5, (2, 0, 0, 0))["run_f1"] == 0.0
