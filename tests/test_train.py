"""Training into run folders, and scoring them into DCASE submission files."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.errors import DataError, RunError, StoreError, UserError
from asdcli.featurize import featurize
from asdcli.runs import load_run, new_run_dir
from asdcli.score import score_run
from asdcli.settings import load_settings
from asdcli.train import train

runner = CliRunner()


def rows_of(path):
    return list(csv.reader(path.read_text().splitlines()))


@pytest.fixture
def settings(dataset, tmp_path):
    s, _ = load_settings(
        None,
        {
            "paths.store": tmp_path / "f.h5",
            "paths.runs": tmp_path / "runs",
            "features.n_mels": 32,
            "train.epochs": 2,
            "detectors.dcase_ae.hidden": 16,
            "detectors.conv_ae.frames": 16,
        },
    )
    featurize([dataset], s.features, s.paths.store)
    return s


def test_run_folder_has_everything(settings):
    result = train(settings, "dcase-ae")
    run = result.run.path
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["detector"] == "dcase-ae"
    assert manifest["machines"] == ["bearing", "fan"]
    assert manifest["feature_key"] == settings.features.key()
    assert set(manifest["fingerprints"]) == {"bearing", "fan"}
    assert manifest["versions"]["torch"]
    for name in ("settings.yaml", "thresholds.json", "history.csv", "train_scores.csv"):
        assert (run / name).is_file(), name
    assert (run / "training_curve_fan.png").stat().st_size > 1000
    assert (run / "models" / "fan" / "detector.json").is_file()
    rows = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
    assert {r["machine"] for r in rows} == {"bearing", "fan"} and rows[0]["epoch"] == "1"
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert np.isfinite(thresholds["fan"]["threshold"])
    assert thresholds["fan"]["method"] in ("gamma", "empirical")
    # every model file of every machine, and the thresholds, with their SHA-256
    assert manifest["completed_machines"] == ["bearing", "fan"]
    assert set(manifest["files"]) == {
        "thresholds.json",
        *(f"models/{m}/{f}" for m in ("bearing", "fan") for f in ("detector.json", "model.pt")),
    }
    assert all(len(h) == 64 for h in manifest["files"].values())
    # the training curve is drawn once, here; evaluate does not draw it again
    assert sorted(p.name for p in run.glob("*.png")) == [
        "training_curve_bearing.png",
        "training_curve_fan.png",
    ]


def test_the_default_params_hook_changes_nothing(tmp_path):
    from asdcli.detectors import get_detector
    from asdcli.detectors.base import ParamsContext

    cls = get_detector("lof")
    params = cls.params_cls(n_neighbors=4)
    context = ParamsContext(tmp_path / "runs", "key", ("fan", "pump"))
    assert cls.resolve_params(params, context) == (params, ["fan", "pump"])


def test_machine_option_and_missing_machine(settings):
    assert train(settings, "lof", ["fan"]).run.manifest["machines"] == ["fan"]
    with pytest.raises(DataError, match="No training clips for machine pump"):
        train(settings, "lof", ["pump"])


def test_same_seed_same_scores(settings):
    a = train(settings, "conv_autoencoder").run.path  # seed alias
    b = train(settings, "conv-ae").run.path
    assert a != b
    sa, sb = score_run(a, settings.paths.store), score_run(b, settings.paths.store)
    ra = (sa.out / "anomaly_score_fan_section_00_test.csv").read_text()
    rb = (sb.out / "anomaly_score_fan_section_00_test.csv").read_text()
    assert ra == rb


def test_ctrl_c_marks_run_incomplete_and_keeps_weights(settings):
    def interrupt(machine, event):
        if event.get("epoch") == 1:
            raise KeyboardInterrupt

    result = train(settings.model_copy(deep=True), "dcase-ae", progress=interrupt)
    assert result.interrupted
    run = load_run(result.run.path, require_complete=False)
    assert run.status == "incomplete"
    assert (run.model_dir("bearing") / "detector.json").is_file()
    with pytest.raises(RunError, match="incomplete"):
        score_run(run.path, settings.paths.store)
    assert score_run(run.path, settings.paths.store, allow_incomplete=True).counts == {"bearing": 4}


def test_score_writes_the_evaluator_format(settings):
    run = train(settings, "iforest").run.path
    result = score_run(run, settings.paths.store)
    assert result.counts == {"bearing": 4, "fan": 4}
    rows = rows_of(result.out / "anomaly_score_fan_section_00_test.csv")
    assert len(rows) == 4 and all(len(r) == 2 and r[0].endswith(".wav") for r in rows)
    assert all(np.isfinite(float(r[1])) for r in rows)
    decisions = rows_of(result.out / "decision_result_fan_section_00_test.csv")
    assert [r[0] for r in decisions] == [r[0] for r in rows]
    assert {r[1] for r in decisions} <= {"0", "1"}
    threshold = json.loads((run / "thresholds.json").read_text())["fan"]["threshold"]
    for (_, s), (_, d) in zip(rows, decisions, strict=True):
        assert int(d) == int(float(s) > threshold)


def test_store_with_other_feature_settings_is_refused(settings, tmp_path):
    other = settings.model_copy(
        update={"features": settings.features.model_copy(update={"n_mels": 16})}
    )
    with pytest.raises(StoreError, match="no features for the current feature settings"):
        train(other, "lof")


def test_scoring_a_store_without_the_runs_features_refuses(settings, dataset, tmp_path):
    run = train(settings, "lof").run.path
    fresh = tmp_path / "other.h5"
    featurize([dataset], settings.features.model_copy(update={"n_mels": 16}), fresh)
    with pytest.raises(DataError, match="no features made with this run's feature settings"):
        score_run(run, fresh)
    # --data featurizes with the run's own settings first
    assert score_run(run, fresh, data=[dataset / "fan" / "test"]).counts == {"fan": 4}


def test_run_missing_a_machine_is_reported(settings):
    run = train(settings, "lof", ["fan"]).run.path
    result = score_run(run, settings.paths.store)
    assert result.counts == {"fan": 4} and result.skipped_machines == {"bearing": 4}


def test_unknown_detector_lists_known_ones(settings):
    with pytest.raises(UserError, match="conv-ae"):
        train(settings, "nope")


def test_two_runs_in_the_same_second_never_share_a_folder(tmp_path):
    a, b = new_run_dir(tmp_path, "lof"), new_run_dir(tmp_path, "lof")
    assert a != b and a.is_dir() and b.is_dir()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "nope"], "conv-ae"),
        (["train", "conv-ae", "--device", "cuda"], "no CUDA device"),
        (["train", "lof", "--machine", "pump"], "No training clips for machine pump"),
        (["train", "lof", "-p", "score=mahalanobis"], "-p score: lof has no parameter 'score'"),
        (["train", "lof", "--param", "nonsense"], "KEY=VALUE"),
        (["train", "lof", "--param", "n_neighbours=3"], "its parameters: n_neighbors, metric"),
        (["train", "lof", "-p", "n_neighbors=0"], "(from -p n_neighbors)"),
        (["train", "lof", "--lr", "-1"], "(from --lr)"),  # the flag's real name, not a guess
        (["score"], "--latest"),
        (["score", "no-such-run"], "does not exist"),
    ],
)
def test_cli_user_errors(settings, args, needle):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {"ASD_PATHS__STORE": str(settings.paths.store), "ASD_FEATURES__N_MELS": "32"}
    r = runner.invoke(app, args, env=env)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output


def test_cli_train_list_and_train_then_score_latest(settings):
    r = runner.invoke(app, ["train", "--list"])
    assert r.exit_code == 0
    for name in ("fc-ae", "conv-ae", "lstm-ae", "lof", "iforest", "dcase-ae"):
        assert name in r.output
    env = {
        "ASD_PATHS__STORE": str(settings.paths.store),
        "ASD_PATHS__RUNS": str(settings.paths.runs),
        "ASD_FEATURES__N_MELS": "32",
    }
    r = runner.invoke(app, ["train", "lof", "-p", "n_neighbors=3"], env=env)
    assert r.exit_code == 0, r.output
    (run,) = settings.paths.runs.iterdir()
    assert json.loads((run / "manifest.json").read_text())["params"]["n_neighbors"] == 3
    r = runner.invoke(app, ["score", "--latest"], env=env)
    assert r.exit_code == 0, r.output
    assert (run / "scores" / "anomaly_score_bearing_section_00_test.csv").is_file()


def test_rescoring_other_clips_leaves_only_the_latest_submission_files(settings, dataset):
    run = train(settings, "lof").run.path
    first = score_run(run, settings.paths.store)
    assert {p.name for p in first.files} >= {"anomaly_score_bearing_section_00_test.csv"}
    second = score_run(run, settings.paths.store, data=[dataset / "fan" / "test"])
    names = {p.name for p in second.out.glob("*_test.csv")}
    assert names == {
        "anomaly_score_fan_section_00_test.csv",
        "decision_result_fan_section_00_test.csv",
    }
    assert {p.name for p in second.replaced} == {
        "anomaly_score_bearing_section_00_test.csv",
        "decision_result_bearing_section_00_test.csv",
    }
