"""Evaluation of hand-built run folders: numbers against an independent computation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from rich.console import Console
from sklearn.metrics import roc_auc_score

from asdcli.cli.render import evaluation_table
from asdcli.errors import DataError, RunError
from asdcli.evaluate import CSV_HEADER, evaluate_run
from asdcli.metrics import METRIC_FIELDS
from asdcli.runs import RUN_LAYOUT_VERSION

# Hand case, fan section 00. Threshold 0.65 (decided anomalous when score > 0.65).
#   source normals 0.10 0.20      target normals 0.50 0.75
#   source anomalies 0.95 0.80    target anomalies 0.70 0.60
# AUC-s: source normals vs ALL anomalies: every one of the 2 x 4 pairs is ordered -> 1.0
# AUC-t: target normals vs ALL anomalies: 0.50 is below all 4; 0.75 below 0.95 and 0.80
#        -> 6 of 8 pairs -> 0.75
# decisions: source tp 2, fp 0, fn 0 -> F1-s 1.0; target tp 1 (0.70), fp 1 (0.75),
#        fn 1 (0.60) -> P = R = 0.5 -> F1-t 0.5
HAND = [
    ("source", "normal", 0.10),
    ("source", "normal", 0.20),
    ("target", "normal", 0.50),
    ("target", "normal", 0.75),
    ("source", "anomaly", 0.95),
    ("source", "anomaly", 0.80),
    ("target", "anomaly", 0.70),
    ("target", "anomaly", 0.60),
]
THRESHOLDS = {"fan": 0.65, "toy_car": 0.5}


def clip_name(section: str, domain: str, label: str, i: int) -> str:
    return f"section_{section}_{domain}_test_{label}_{i:04d}_vel_{i % 3}.wav"


def random_section(seed: int, section: str) -> list[tuple[str, float]]:
    """8 clips, 2 per domain and label, anomalies scored higher on average."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (dom, lab) in enumerate(
        [(d, lab) for d in ("source", "target") for lab in ("normal", "anomaly") for _ in range(2)]
    ):
        score = rng.normal(1.0 if lab == "anomaly" else 0.0, 1.0)
        rows.append((clip_name(section, dom, lab, i), float(score)))
    return rows


def hand_section() -> list[tuple[str, float]]:
    return [(clip_name("00", d, lab, i), s) for i, (d, lab, s) in enumerate(HAND)]


def write_rows(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def make_run(
    root: Path,
    sections: dict[tuple[str, str], list[tuple[str, float]]],
    thresholds: dict[str, float] = THRESHOLDS,
    history: list[list] | None = None,
    name: str = "2024-01-01T00-00-00_fake",
) -> Path:
    """A run folder as `asd train` + `asd score` leave it, without any training."""
    run = root / name
    run.mkdir(parents=True)
    machines = sorted({m for m, _ in sections})
    manifest = {
        "run_layout_version": RUN_LAYOUT_VERSION,
        "detector": "fake",
        "machines": machines,
        "status": "complete",
        "train_seconds": 12.5,
        "n_params": {m: 1000 for m in machines},
        "feature_key": "abc",
        "started": "2024-01-01T00:00:00+00:00",
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "thresholds.json").write_text(
        json.dumps({m: {"threshold": t, "method": "gamma"} for m, t in thresholds.items()})
    )
    # header only, as scikit-learn detectors leave it, unless epochs are given
    header = ["machine", "epoch", "loss", "val_loss", "seconds"]
    write_rows(run / "history.csv", [header, *(history or [])])
    for (machine, section), rows in sections.items():
        t = thresholds.get(machine, 0.5)
        stem = f"{machine}_section_{section}_test.csv"
        write_rows(run / "scores" / f"anomaly_score_{stem}", rows)
        write_rows(run / "scores" / f"decision_result_{stem}", [(f, int(s > t)) for f, s in rows])
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(
        tmp_path / "runs",
        {
            ("fan", "00"): hand_section(),
            ("toy_car", "00"): random_section(1, "00"),
            ("toy_car", "01"): random_section(2, "01"),
        },
        history=[["fan", 1, 1.0, 0.9, 0.1], ["fan", 2, 0.5, "", 0.1]],
    )


def read_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# --- independent computation ----------------------------------------------------------------


def expected_values(run: Path) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(AUC-s, AUC-t, pAUC) per section, straight from the CSVs and the clip names."""
    out = {}
    for path in sorted((run / "scores").glob("anomaly_score_*_section_*_test.csv")):
        stem = path.name.removeprefix("anomaly_score_").removesuffix("_test.csv")
        machine, section = stem.rsplit("_section_", 1)
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        s = np.array([float(r[1]) for r in rows])
        y = np.array(["_anomaly_" in r[0] for r in rows], dtype=int)
        target = np.array(["_target_" in r[0] for r in rows])
        sel_s = ~target | (y == 1)  # source normals + all anomalies
        sel_t = target | (y == 1)  # target normals + all anomalies
        out[(machine, section)] = (
            roc_auc_score(y[sel_s], s[sel_s]),
            roc_auc_score(y[sel_t], s[sel_t]),
            roc_auc_score(y, s, max_fpr=0.1),
        )
    return out


def test_metrics_match_sklearn_and_hmean(run):
    result = evaluate_run(run, figures=False)
    data = read_metrics(run)
    expected = expected_values(run)
    assert (
        set(result.per_section)
        == set(expected)
        == {
            ("fan", "00"),
            ("toy_car", "00"),
            ("toy_car", "01"),
        }
    )
    for (machine, section), (auc_s, auc_t, pauc) in expected.items():
        got = data["per_section"][machine][section]
        assert got["auc_source"] == pytest.approx(auc_s)
        assert got["auc_target"] == pytest.approx(auc_t)
        assert got["pauc"] == pytest.approx(pauc)
    official = scipy.stats.hmean([v for vals in expected.values() for v in vals])
    assert data["official_score"] == pytest.approx(official)
    assert result.official_score == pytest.approx(official)
    toy = [v for (m, _), vals in expected.items() if m == "toy_car" for v in vals]
    assert data["per_machine"]["toy_car"]["official_score"] == pytest.approx(scipy.stats.hmean(toy))
    assert data["means"]["auc_source"]["harmonic"] == pytest.approx(
        scipy.stats.hmean([v[0] for v in expected.values()])
    )
    assert data["max_fpr"] == 0.1
    assert data["counts"]["evaluated"] == 24 and data["counts"]["unlabeled"] == 0
    assert result.metrics_json == run / "metrics.json"


def test_hand_case(run):
    m = evaluate_run(run, figures=False).per_section[("fan", "00")]
    assert m.auc_source == pytest.approx(1.0)
    assert m.auc_target == pytest.approx(0.75)
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 1, 3)
    assert m.f1_source == pytest.approx(1.0)
    assert m.f1_target == pytest.approx(0.5)
    assert m.precision_target == pytest.approx(0.5) and m.recall_target == pytest.approx(0.5)


def test_thresholds_run_and_oracle(run):
    result = evaluate_run(run, figures=False)
    fan = read_metrics(run)["thresholds"]["fan"]
    assert fan["run_threshold"] == 0.65
    assert fan["run_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # hand case, flagging the top k clips (F1 = 2 tp / (k + 4 anomalies)): k=2 -> 4/6,
    # k=4 -> 6/8, k=5 (down to 0.60, all anomalies and one normal) -> 8/9, k=6 -> 8/10.
    # The best, k=5, is a threshold between 0.50 and 0.60.
    assert fan["oracle_f1"] == pytest.approx(8 / 9)
    assert fan["oracle_f1_threshold"] == pytest.approx(0.55)
    assert "oracle" in fan["oracle_note"] and "test labels" in fan["oracle_note"]
    assert result.thresholds["fan"] == fan


# --- ground truth -----------------------------------------------------------------------------


def test_ground_truth_folder_for_renamed_files(run, tmp_path):
    """Evaluation-set names carry no label: the evaluator's CSVs give the same metrics."""
    by_name = evaluate_run(run, figures=False)
    renamed_sections = {}
    gt = tmp_path / "gt"
    for (machine, section), rows in {
        ("fan", "00"): hand_section(),
        ("toy_car", "00"): random_section(1, "00"),
        ("toy_car", "01"): random_section(2, "01"),
    }.items():
        renamed = [(f"section_{section}_{i:04d}.wav", s) for i, (_, s) in enumerate(rows)]
        renamed_sections[(machine, section)] = renamed
        stem = f"ground_truth_{machine}_section_{section}_test.csv"
        write_rows(
            gt / "ground_truth_data" / stem,
            [(n, int("_anomaly_" in f)) for (n, _), (f, _) in zip(renamed, rows, strict=True)],
        )
        write_rows(
            gt / "ground_truth_domain" / stem,
            [(n, int("_target_" in f)) for (n, _), (f, _) in zip(renamed, rows, strict=True)],
        )
    eval_run = make_run(tmp_path / "other", renamed_sections)

    with pytest.raises(DataError, match="--ground-truth"):
        evaluate_run(eval_run, figures=False)  # names alone say nothing

    result = evaluate_run(eval_run, ground_truth=gt, figures=False)
    assert result.official_score == pytest.approx(by_name.official_score)
    for key, m in by_name.per_section.items():
        got = result.per_section[key]
        for name in (*METRIC_FIELDS, "tn", "fp", "fn", "tp"):
            assert getattr(got, name) == pytest.approx(getattr(m, name)), (key, name)
        assert got.counts == m.counts
    assert read_metrics(eval_run)["labels_from"] == str(gt)


def test_ground_truth_missing_file_names_it(run, tmp_path):
    gt = tmp_path / "gt"
    write_rows(gt / "ground_truth_data" / "ground_truth_fan_section_00_test.csv", [])
    write_rows(gt / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv", [])
    with pytest.raises(DataError, match="ground_truth_toy_car_section_00_test.csv"):
        evaluate_run(run, ground_truth=gt, figures=False)


def test_unlabeled_clips_counted_not_evaluated(tmp_path):
    rows = hand_section() + [("section_00_0100.wav", 0.3), ("section_00_0101.wav", 0.9)]
    run = make_run(tmp_path / "runs", {("fan", "00"): rows})
    result = evaluate_run(run, figures=False)
    m = result.per_section[("fan", "00")]
    assert m.auc_source == pytest.approx(1.0) and m.auc_target == pytest.approx(0.75)
    assert m.counts["n_clips"] == 8
    assert result.counts["unlabeled"] == 2 and result.counts["evaluated"] == 8
    assert any("2 clip(s) without a known label" in n for n in m.notes)
    assert any("not evaluated" in n for n in result.notes)


# --- missing domain, missing scores, malformed files -----------------------------------------


def test_missing_target_domain_is_none_with_note(tmp_path):
    source_only = [r for r in hand_section() if "_source_" in r[0]]
    run = make_run(tmp_path / "runs", {("fan", "00"): source_only})
    result = evaluate_run(run, figures=True)  # the figures must cope too
    m = result.per_section[("fan", "00")]
    assert m.auc_source == pytest.approx(1.0)
    assert m.auc_target is None
    assert m.f1_target is None
    assert any(n.startswith("auc_target: not computable") for n in m.notes)
    data = read_metrics(run)
    assert data["per_section"]["fan"]["00"]["auc_target"] is None
    assert "fan/00: auc_target" in data["skipped"]
    # the official score uses the values that exist: AUC-s 1.0 and pAUC 1.0
    assert result.official_score == pytest.approx(1.0)
    text = render(result)
    assert "n/a" in text


def test_no_scores_is_a_run_error(tmp_path):
    run = make_run(tmp_path / "runs", {})
    with pytest.raises(RunError, match=r"no scores in .*asd score"):
        evaluate_run(run)
    (run / "scores").mkdir()
    with pytest.raises(RunError, match="no scores"):
        evaluate_run(run)


def test_malformed_score_file_is_a_data_error(run):
    (run / "scores" / "anomaly_score_fan_section_00_test.csv").write_text("a.wav,high\n")
    with pytest.raises(DataError, match="line 1"):
        evaluate_run(run, figures=False)


def test_decisions_for_other_clips_are_a_data_error(run):
    write_rows(run / "scores" / "decision_result_fan_section_00_test.csv", [("x.wav", 1)])
    with pytest.raises(DataError, match="different clips"):
        evaluate_run(run, figures=False)


def test_missing_decision_file_only_drops_decision_metrics(run):
    (run / "scores" / "decision_result_fan_section_00_test.csv").unlink()
    result = evaluate_run(run, figures=False)
    m = result.per_section[("fan", "00")]
    assert m.auc_target == pytest.approx(0.75)
    assert m.f1_source is None and m.tp is None
    assert any("decision_result_fan_section_00_test.csv missing" in n for n in result.notes)


# --- outputs ----------------------------------------------------------------------------------


def test_figures_are_pngs(run):
    result = evaluate_run(run)
    names = {p.name for p in result.figures}
    for machine in ("fan", "toy_car"):
        assert {f"roc_{machine}.png", f"confusion_{machine}.png", f"scores_{machine}.png"} <= names
    # the training curve is drawn once, by `asd train`, not again here
    assert not any(name.startswith("training") for name in names)
    for path in result.figures:
        assert path.parent == run / "figures"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(read_metrics(run)["figures"]) == sorted(
        f"figures/{p.name}" for p in result.figures
    )


def test_metrics_csv(tmp_path):
    source_only = [r for r in hand_section() if "_source_" in r[0]]
    run = make_run(
        tmp_path / "runs", {("fan", "00"): source_only, ("toy_car", "00"): random_section(3, "00")}
    )
    result = evaluate_run(run, figures=False)
    with (run / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = next(csv.reader(fh))
    assert tuple(header) == CSV_HEADER
    assert header[:4] == ["machine", "section", "auc_source", "auc_target"]
    assert header[-5:] == ["tn", "fp", "fn", "tp", "official_score"]
    assert [(r["machine"], r["section"]) for r in rows] == [
        ("fan", "00"),
        ("toy_car", "00"),
        ("all", ""),
    ]
    fan, toy, total = rows
    assert fan["auc_target"] == ""  # None is an empty cell
    assert float(fan["auc_source"]) == pytest.approx(1.0)
    assert float(toy["auc_target"]) == pytest.approx(
        result.per_section[("toy_car", "00")].auc_target
    )
    assert float(total["official_score"]) == pytest.approx(result.official_score)
    assert float(total["auc_source"]) == pytest.approx(
        scipy.stats.hmean([1.0, result.per_section[("toy_car", "00")].auc_source])
    )
    assert int(total["tp"]) == int(fan["tp"]) + int(toy["tp"])


def render(result) -> str:
    console = Console(record=True, width=160)
    console.print(evaluation_table(result))
    return console.export_text()


def test_evaluation_table(run):
    text = render(evaluate_run(run, figures=False))
    assert "toy_car" in text and "AUC-s" in text and "F1-t" in text
    assert "official score" in text
    assert "1.0000" in text and "0.7500" in text  # hand case AUC-s, AUC-t


def test_non_finite_scores_do_not_crash(tmp_path):
    rows = hand_section()
    rows[0] = (rows[0][0], float("nan"))
    run = make_run(
        tmp_path / "runs", {("fan", "00"): rows, ("toy_car", "00"): random_section(4, "00")}
    )
    result = evaluate_run(run)  # figures included
    m = result.per_section[("fan", "00")]
    assert m.auc_source is None and m.pauc is None
    assert any("NaN" in n for n in m.notes)
    data = read_metrics(run)  # strict JSON: NaN would not parse as null
    assert data["per_section"]["fan"]["00"]["auc_source"] is None
    assert "non-finite" in data["thresholds"]["fan"]["oracle_note"]
    assert result.official_score == pytest.approx(
        scipy.stats.hmean(result.per_section[("toy_car", "00")].official_values)
    )


def test_a_clip_subset_is_evaluated_alone_and_the_rest_counted_as_left_out(run):
    kept = ("fan", "00"), ("toy_car", "00")
    rows = {
        (m, sec): [
            line.split(",")[0]
            for line in (run / "scores" / f"anomaly_score_{m}_section_{sec}_test.csv")
            .read_text()
            .splitlines()
        ]
        for m, sec in kept
    }
    clips = {f"{m}/{name}" for (m, _), names in rows.items() for name in names}
    clips.add("toy_car/not_scored.wav")  # names the run never scored change nothing
    result = evaluate_run(run, figures=False, clips=clips)
    expected = {k: v for k, v in expected_values(run).items() if k in kept}
    assert set(result.per_section) == set(kept)
    for key, (auc_s, auc_t, pauc) in expected.items():
        m = result.per_section[key]
        assert (m.auc_source, m.auc_target, m.pauc) == pytest.approx((auc_s, auc_t, pauc))
    official = scipy.stats.hmean([v for vals in expected.values() for v in vals])
    assert result.official_score == pytest.approx(official)
    data = read_metrics(run)
    assert data["official_score"] == pytest.approx(official)
    assert data["counts"]["evaluated"] == 16 and data["counts"]["left_out"] == 8
    assert any("8 scored clip(s) left out" in n for n in data["notes"])


def test_a_clip_subset_with_nothing_scored_is_a_data_error(run):
    with pytest.raises(DataError, match="None of the 1 clip"):
        evaluate_run(run, figures=False, clips={"fan/other.wav"})
