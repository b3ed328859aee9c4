"""The whole pipeline through the CLI: synth -> featurize -> train -> score -> evaluate -> report.

metrics.json is checked against numbers recomputed here, independently, from the submission CSVs
and the file names, with scikit-learn and scipy.stats.hmean (the DCASE 2023 evaluator's rules).
"""

import csv
import json

import numpy as np
import pytest
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.demo import DETECTORS, DIFFICULTY
from asdcli.naming import parse_name

runner = CliRunner()


def invoke(*args):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r


def recompute(scores_dir):
    """Official score and per-section AUCs from the CSV files alone."""
    values, per_section = [], {}
    for path in sorted(scores_dir.glob("anomaly_score_*_section_*_test.csv")):
        rows = list(csv.reader(path.read_text().splitlines()))
        names = [r[0] for r in rows]
        s = np.array([float(r[1]) for r in rows])
        info = [parse_name(n) for n in names]
        y = np.array([i.label == "anomaly" for i in info])
        dom = np.array([i.domain for i in info])
        src = (dom == "source") | y
        tgt = (dom == "target") | y
        auc_s = roc_auc_score(y[src], s[src])
        auc_t = roc_auc_score(y[tgt], s[tgt])
        pauc = roc_auc_score(y, s, max_fpr=0.1)
        machine = path.name.removeprefix("anomaly_score_").split("_section_")[0]
        per_section[machine] = (auc_s, auc_t, pauc)
        values += [auc_s, auc_t, pauc]
    return hmean(np.maximum(values, np.finfo(float).eps)), per_section


@pytest.mark.slow
def test_cli_pipeline_and_metrics_match_independent_computation(tmp_path):
    invoke(
        "synth",
        "data",
        "--machines",
        "bearing,slider",
        "--train",
        "24",
        "--target-train",
        "4",
        "--test",
        "16",
        "--seconds",
        "1",
    )
    invoke("featurize", "data", "--store", "f.h5")
    r = invoke("train", "lof", "--store", "f.h5", "--evaluate")
    assert "official score" in r.output
    invoke("train", "dcase-ae", "--store", "f.h5", "--epochs", "2")
    invoke("score", "--latest", "--store", "f.h5")
    invoke("evaluate", "--latest")

    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2
    for run in runs:
        names = {p.name for p in (run / "scores").iterdir()}
        for m in ("bearing", "slider"):
            assert f"anomaly_score_{m}_section_00_test.csv" in names
            assert f"decision_result_{m}_section_00_test.csv" in names
        metrics = json.loads((run / "metrics.json").read_text())
        official, per_section = recompute(run / "scores")
        assert metrics["official_score"] == pytest.approx(official, abs=1e-12)
        for m, (auc_s, auc_t, pauc) in per_section.items():
            got = metrics["per_section"][m]["00"]
            assert (got["auc_source"], got["auc_target"], got["pauc"]) == pytest.approx(
                (auc_s, auc_t, pauc), abs=1e-12
            )
        assert (run / "metrics.csv").is_file()
        figures = {p.name for p in (run / "figures").glob("*.png")}
        assert {"roc_bearing.png", "confusion_bearing.png", "scores_bearing.png"} <= figures

    r = invoke("report", "--compare")
    report = (tmp_path / "runs" / "report.md").read_text()
    assert all(run.name in report for run in runs)
    assert (tmp_path / "runs" / "comparison.png").stat().st_size > 1000
    r = invoke("report")
    assert "complete" in r.output and all(run.name[:10] in r.output for run in runs)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    r = invoke("demo", "--out", "demo")
    assert "Done in" in r.output
    runs = [p for p in (tmp_path / "demo" / "runs").iterdir() if p.is_dir()]
    assert sorted(p.name.split("_", 1)[1] for p in runs) == sorted(DETECTORS)
    assert all((p / "metrics.json").is_file() for p in runs)
    assert (tmp_path / "demo" / "runs" / "report.md").is_file()
    # The demo shows detection working: its best detector reaches 0.80, and it says which one
    # won, by how much, at which difficulty, and why AUC-t is the hard part.
    scores = {
        p.name.split("_", 1)[1]: json.loads((p / "metrics.json").read_text())["official_score"]
        for p in runs
    }
    best = max(scores, key=lambda d: scores[d])
    assert scores[best] >= 0.80, scores
    text = " ".join(r.output.split())  # rich wraps lines
    assert f"Best detector: {best}, official score {scores[best]:.3f}" in text
    assert "ahead of" in text and "AUC-t is the hard part" in text
    assert f"difficulty {DIFFICULTY}" in text
    assert "Traceback" not in r.output
