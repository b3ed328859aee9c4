"""Metrics: hand-computed cases, agreement with scikit-learn / scipy, and properties."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from asdcli.display import fmt
from asdcli.metrics import (
    EPS,
    METRIC_FIELDS,
    SectionMetrics,
    official_score,
    section_metrics,
    summarize,
)

# McClish-standardised pAUC of a raw partial area A over FPR in [0, 0.1]:
# 0.5 * (1 + (A - 0.1**2 / 2) / (0.1 - 0.1**2 / 2)) = 0.5 * (1 + (A - 0.005) / 0.095)


def mcclish(area: float, max_fpr: float = 0.1) -> float:
    lo, hi = max_fpr**2 / 2, max_fpr
    return 0.5 * (1 + (area - lo) / (hi - lo))


# Hand case used below. Clips:      idx  domain  label  score  decision
#                                   0    source  0      0.10   0
#                                   1    source  0      0.20   0
#                                   2    target  0      0.50   1
#                                   3    target  0      0.90   1
#                                   4    source  1      0.95   1
#                                   5    target  1      0.70   0
SCORES = [0.10, 0.20, 0.50, 0.90, 0.95, 0.70]
LABELS = [0, 0, 0, 0, 1, 1]
DOMAIN = ["source", "source", "target", "target", "source", "target"]
DECISIONS = [0, 0, 1, 1, 1, 0]


def test_auc_two_normals_two_anomalies():
    # normals 0.1, 0.4; anomalies 0.35, 0.8. Pairs (anomaly > normal):
    # 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    m = section_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], ["source"] * 4)
    assert m.auc == pytest.approx(0.75)
    assert m.auc_source == pytest.approx(0.75)


def test_domain_aucs_use_all_anomalies():
    m = section_metrics(SCORES, LABELS, DOMAIN)
    # all clips: anomaly 0.95 beats the 4 normals, 0.70 beats 0.1, 0.2, 0.5 -> 7/8
    assert m.auc == pytest.approx(0.875)
    # source normals {0.1, 0.2} vs ALL anomalies {0.95, 0.7}: 4/4
    assert m.auc_source == pytest.approx(1.0)
    # target normals {0.5, 0.9} vs ALL anomalies {0.95, 0.7}: 0.95 beats both, 0.7 beats 0.5
    # -> 3/4. With only the target anomaly (0.7) it would be 1/2: the DCASE 2023 rule matters.
    assert m.auc_target == pytest.approx(0.75)
    # pAUC over all clips: 4 normals, FPR steps of 0.25. The top clip (0.95, anomaly) lifts
    # TPR to 0.5 at FPR 0; the next (0.9, normal) moves FPR to 0.25. Area on [0, 0.1] = 0.05.
    assert m.pauc == pytest.approx(mcclish(0.05))
    assert m.pauc == pytest.approx(0.7368421052631579)
    # pauc_source: perfect separation -> 1.0; pauc_target: 0.95 then 0.9 -> area 0.05 again
    assert m.pauc_source == pytest.approx(1.0)
    assert m.pauc_target == pytest.approx(mcclish(0.05))
    assert m.counts["n_source_normal"] == 2 and m.counts["n_target_anomaly"] == 1


def test_pauc_hand_case():
    # 10 normals scored 0..9 (FPR steps 0.1), anomalies 10 and 8.5.
    # ROC: (0, 0) -> score 10 -> (0, 0.5) -> score 9 -> (0.1, 0.5) -> score 8.5 -> (0.1, 1).
    # Partial area on FPR in [0, 0.1] = 0.1 * 0.5 = 0.05 -> 0.5 * (1 + 0.045 / 0.095)
    scores = list(range(10)) + [10, 8.5]
    y = [0] * 10 + [1, 1]
    m = section_metrics(scores, y, ["source"] * 12)
    assert m.pauc == pytest.approx(0.5 * (1 + 0.045 / 0.095))
    assert m.pauc == pytest.approx(roc_auc_score(y, scores, max_fpr=0.1))
    # full AUC: 10 beats all 10 normals, 8.5 beats 9 -> 19/20
    assert m.auc == pytest.approx(0.95)


def test_decision_metrics_hand_case():
    m = section_metrics(SCORES, LABELS, DOMAIN, DECISIONS)
    # all clips: tn = idx 0, 1; fp = idx 2, 3; fn = idx 5; tp = idx 4
    assert (m.tn, m.fp, m.fn, m.tp) == (2, 2, 1, 1)
    assert m.accuracy == pytest.approx(3 / 6)
    # overall P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    assert (m.precision, m.recall, m.f1) == pytest.approx((1 / 3, 0.5, 0.4))
    # source clips 0, 1, 4: y 0 0 1, decided 0 0 1 -> perfect
    assert (m.precision_source, m.recall_source, m.f1_source) == (1.0, 1.0, 1.0)
    # target clips 2, 3, 5: y 0 0 1, decided 1 1 0 -> tp 0, fp 2, fn 1: P = R = F1 = 0,
    # and no zero division, so no note
    assert (m.precision_target, m.recall_target, m.f1_target) == (0.0, 0.0, 0.0)
    assert m.notes == []


def test_zero_division_is_zero_with_a_note_and_matches_sklearn():
    y = np.array([0, 0, 1, 1])
    d = np.zeros(4, dtype=int)  # nothing decided anomalous: tp + fp = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = section_metrics([0.1, 0.2, 0.3, 0.4], y, ["source"] * 4, d)
    p, r, f, _ = precision_recall_fscore_support(y, d, average="binary", zero_division=0)
    assert (m.precision_source, m.recall_source, m.f1_source) == (p, r, f) == (0.0, 0.0, 0.0)
    assert any(n.startswith("precision_source: no clip decided anomalous") for n in m.notes)
    assert any(n.startswith("precision: no clip decided anomalous") for n in m.notes)


def test_recall_without_anomalies_in_domain_is_zero_with_a_note():
    # target has normals only; anomaly only in source
    m = section_metrics(
        [0.1, 0.9, 0.2, 0.3],
        [0, 1, 0, 0],
        ["source", "source", "target", "target"],
        [0, 1, 1, 0],
    )
    assert m.recall_target == 0.0
    assert any(n.startswith("recall_target: no anomalous clips") for n in m.notes)
    # auc_target is still defined: target normals + all anomalies
    assert m.auc_target == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random(n) < 0.3).astype(int)
    dom = np.where(rng.random(n) < 0.5, "source", "target")
    s = rng.normal(size=n) + y * rng.uniform(0, 2)
    dec = (rng.random(n) < 0.4).astype(int)
    m = section_metrics(s, y, dom, dec)

    assert m.auc == pytest.approx(roc_auc_score(y, s))
    assert m.pauc == pytest.approx(roc_auc_score(y, s, max_fpr=0.1))
    for d in ("source", "target"):
        sel = (dom == d) | (y == 1)
        assert getattr(m, f"auc_{d}") == pytest.approx(roc_auc_score(y[sel], s[sel]))
        assert getattr(m, f"pauc_{d}") == pytest.approx(roc_auc_score(y[sel], s[sel], max_fpr=0.1))
        in_d = dom == d
        p, r, f, _ = precision_recall_fscore_support(
            y[in_d], dec[in_d], average="binary", zero_division=0
        )
        assert getattr(m, f"precision_{d}") == pytest.approx(p)
        assert getattr(m, f"recall_{d}") == pytest.approx(r)
        assert getattr(m, f"f1_{d}") == pytest.approx(f)
    assert (m.tn, m.fp, m.fn, m.tp) == tuple(confusion_matrix(y, dec, labels=[0, 1]).ravel())
    assert m.accuracy == pytest.approx(accuracy_score(y, dec))
    assert m.f1 == pytest.approx(f1_score(y, dec))


def test_missing_target_domain_gives_none_with_note():
    m = section_metrics([0.1, 0.2, 0.8], [0, 0, 1], ["source"] * 3, [0, 0, 1])
    assert m.auc_source == 1.0
    assert m.auc_target is None and m.pauc_target is None
    assert any(n.startswith("auc_target: not computable") for n in m.notes)
    assert m.precision_target is None and m.f1_target is None
    assert any("no target clips" in n for n in m.notes)


def test_one_class_and_no_decisions_and_empty_never_crash():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normals_only = section_metrics([0.1, 0.2], [0, 0], ["source", "target"])
        empty = section_metrics([], [], [], [])
    assert all(getattr(normals_only, k) is None for k in ("auc", "pauc", "auc_source"))
    assert any(n.startswith("auc: not computable") for n in normals_only.notes)
    assert normals_only.precision_source is None and normals_only.tp is None
    assert any(n.startswith("no decisions given") for n in normals_only.notes)
    assert all(getattr(empty, k) is None for k in METRIC_FIELDS)
    assert (empty.tn, empty.fp, empty.fn, empty.tp) == (0, 0, 0, 0)
    assert "section has no clips" in empty.notes


def test_non_finite_scores_give_none_ranking_metrics_but_decisions_still_count():
    m = section_metrics([0.1, np.nan, 0.9], [0, 0, 1], ["source"] * 3, [0, 0, 1])
    assert m.auc is None and m.pauc is None and m.auc_source is None
    assert any("NaN or infinite" in n for n in m.notes)
    assert m.accuracy == 1.0


def test_other_domain_counts_only_in_all_clip_metrics():
    m = section_metrics([0.1, 0.5, 0.9], [0, 0, 1], ["source", "unknown", "source"])
    assert m.counts["n_other_domain"] == 1
    assert m.auc == pytest.approx(1.0)
    assert any("other than source/target" in n for n in m.notes)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scores": [0.1, 0.2], "y_true": [0], "domain": ["source", "source"]},
        {"scores": [0.1, 0.2], "y_true": [0, 2], "domain": ["source", "source"]},
        {"scores": [0.1, 0.2], "y_true": [0, 1], "domain": ["source"]},
        {"scores": [0.1, 0.2], "y_true": [0, 1], "domain": ["s", "s"], "decisions": [0, 5]},
        {"scores": [0.1, 0.2], "y_true": [0, 1], "domain": ["s", "s"], "max_fpr": 0.0},
    ],
)
def test_malformed_inputs_raise(kwargs):
    with pytest.raises(ValueError):
        section_metrics(**kwargs)


def test_to_dict_is_json_ready():
    d = section_metrics(SCORES, LABELS, DOMAIN, DECISIONS).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(d["auc"]) is float and type(d["tp"]) is int


# --- official score and summaries -------------------------------------------------------------


def test_official_score_hand_case():
    # harmonic mean of 0.5, 1.0, 0.25 = 3 / (2 + 1 + 4) = 3/7
    assert official_score([0.5, 1.0, 0.25]) == pytest.approx(3 / 7)
    assert official_score([0.5, 1.0, 0.25]) == pytest.approx(scipy.stats.hmean([0.5, 1.0, 0.25]))


def test_official_score_floors_zero_at_epsilon():
    # hmean(eps, 1) = 2 / (1/eps + 1): tiny but defined, as in the evaluator
    assert sys.float_info.epsilon == EPS
    floored = official_score([0.0, 1.0])
    assert floored > 0
    assert floored == pytest.approx(2 / (1 / EPS + 1), rel=1e-9, abs=0)
    assert official_score([0.0, 1.0], eps=0.5) == pytest.approx(2 / 3)


@pytest.mark.parametrize("values", [[], [0.5, float("nan")], [float("inf")]])
def test_official_score_rejects_empty_and_non_finite(values):
    with pytest.raises(ValueError):
        official_score(values)


def test_summarize_official_and_per_machine_and_skipped():
    fan0 = SectionMetrics(auc_source=0.8, auc_target=0.6, pauc=0.5, accuracy=0.9)
    fan1 = SectionMetrics(auc_source=1.0, auc_target=None, pauc=0.5, accuracy=0.7)
    pump = SectionMetrics(auc_source=0.4, auc_target=0.4, pauc=0.4)
    out = summarize({("fan", "00"): fan0, ("fan", "01"): fan1, ("pump", "00"): pump})

    fan_values = [0.8, 0.6, 0.5, 1.0, 0.5]  # fan1's auc_target skipped
    # manual harmonic mean: n / sum(1 / v)
    assert out["per_machine"]["fan"]["official_score"] == pytest.approx(
        5 / sum(1 / v for v in fan_values)
    )
    assert out["per_machine"]["fan"]["n_official_values"] == 5
    assert out["per_machine"]["fan"]["sections"] == ["00", "01"]
    assert out["per_machine"]["pump"]["official_score"] == pytest.approx(0.4)
    assert out["official_score"] == pytest.approx(scipy.stats.hmean(fan_values + [0.4, 0.4, 0.4]))
    assert out["n_official_values"] == 8
    assert "fan/01: auc_target" in out["skipped"]
    assert "pump/00: accuracy" in out["skipped"]
    acc = out["means"]["accuracy"]
    assert acc["n"] == 2
    assert acc["arithmetic"] == pytest.approx(0.8)
    assert acc["harmonic"] == pytest.approx(2 / (1 / 0.9 + 1 / 0.7))
    assert out["means"]["f1"] == {"arithmetic": None, "harmonic": None, "n": 0}
    json.dumps(out)


def test_summarize_with_nothing_computable():
    out = summarize({("fan", "00"): SectionMetrics()})
    assert out["official_score"] is None
    assert len(out["skipped"]) == len(METRIC_FIELDS)


# --- per-section official score, display ---------------------------------------------------


def test_section_official_score_uses_the_available_values():
    m = SectionMetrics(auc_source=0.5, auc_target=1.0, pauc=0.25)
    assert m.official_score == pytest.approx(3 / (1 / 0.5 + 1 / 1.0 + 1 / 0.25))
    assert SectionMetrics(auc_source=0.5, pauc=0.5).official_score == pytest.approx(0.5)
    assert SectionMetrics().official_score is None


def test_fmt_says_n_a_for_none():
    assert fmt(None) == "n/a"
    assert fmt(0.123456) == "0.1235" and fmt(1.0, 3) == "1.000"


# --- properties ---------------------------------------------------------------------------

labelled = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-1000, 1000), min_size=n, max_size=n),
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
    )
)


@settings(max_examples=30, deadline=None)
@given(labelled)
def test_auc_invariant_under_strictly_monotone_transforms(case):
    ints, y = case
    s = np.asarray(ints, dtype=float) / 10  # grid of 0.1 in [-100, 100]: transforms keep order
    dom = ["source"] * len(y)
    ref = section_metrics(s, y, dom)
    for transformed in (3 * s + 7, s**3 + s, np.exp(s / 50), -1 / (s + 101)):
        m = section_metrics(transformed, y, dom)
        assert m.auc == pytest.approx(ref.auc)
        assert m.pauc == pytest.approx(ref.pauc)


@settings(max_examples=30, deadline=None)
@given(labelled)
def test_perfect_scorer_gives_one_and_reversed_gives_zero(case):
    ints, y = case
    y = np.asarray(y)
    noise = (np.asarray(ints) + 1000) / 4000  # in [0, 0.5]: never crosses the label gap
    perfect = section_metrics(y + noise, y, ["target"] * len(y))
    reversed_ = section_metrics(-(y + noise), y, ["target"] * len(y))
    assert perfect.auc == 1.0 and perfect.auc_target == 1.0 and perfect.pauc == 1.0
    assert reversed_.auc == 0.0 and reversed_.auc_target == 0.0
    # reversed: partial area 0 -> McClish 0.5 * (1 - 0.005 / 0.095)
    assert reversed_.pauc == pytest.approx(mcclish(0.0))
