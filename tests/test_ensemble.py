"""The ensemble: standardised averaging by hand, members from runs or names, self-contained
saved models, and the CLI's ``--members`` with its user errors."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.detectors import load_detector
from asdcli.detectors.base import ParamsContext
from asdcli.detectors.ensemble import STATS_FILE, EnsembleDetector
from asdcli.detectors.params import EnsembleParams, TrainParams
from asdcli.errors import DataError, UserError
from asdcli.featurize import featurize
from asdcli.naming import ClipInfo
from asdcli.score import score_run
from asdcli.settings import load_settings
from asdcli.store import FeatureStore
from asdcli.train import train

runner = CliRunner()
TRAIN = TrainParams(seed=0, device="cpu")


def data(n: int, seed: int, anomaly: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = -40 + rng.normal(0, 1, (8, 20))
        if anomaly:
            x[2:5] += 8
        out.append(x.astype(np.float32))
    return out


def test_scores_are_the_weighted_mean_of_standardised_member_scores():
    train_x, test_x = data(12, 0), data(4, 1) + data(2, 2, anomaly=True)
    infos = [ClipInfo(name=f"{i}.wav", machine="fan") for i in range(12)]
    det = EnsembleDetector({"members": ["lof", "gmm"], "weights": [3, 1]}, TRAIN)
    det.fit(train_x, infos)
    lof, gmm = det.members_
    # Each member standardised by its own training scores (as float32, like detector.json).
    z = [
        (m.score(test_x) - np.float32(m.train_scores_.mean())) / np.float32(m.train_scores_.std())
        for m in (lof, gmm)
    ]
    np.testing.assert_allclose(det.score(test_x), 0.75 * z[0] + 0.25 * z[1], rtol=1e-6)
    np.testing.assert_allclose(
        det.train_scores_,
        0.75
        * (lof.train_scores_ - np.float32(lof.train_scores_.mean()))
        / np.float32(lof.train_scores_.std())
        + 0.25
        * (gmm.train_scores_ - np.float32(gmm.train_scores_.mean()))
        / np.float32(gmm.train_scores_.std()),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(det.member_scores(test_x)[1], gmm.score(test_x))
    assert det.n_params_ == lof.n_params_ + gmm.n_params_
    # the member statistics have their own attributes; the input is not standardised here
    np.testing.assert_array_equal(
        det.member_mean_, np.float32([lof.train_scores_.mean(), gmm.train_scores_.mean()])
    )
    assert det.norm_mean_.size == 0 and det.norm_std_.size == 0


def test_saved_statistics_and_the_earlier_format_load_the_same(tmp_path):
    train_x, test_x = data(12, 0), data(5, 1)
    det = EnsembleDetector({"members": ["lof", "gmm"]}, TRAIN).fit(train_x, None)
    det.save(tmp_path / "new")
    meta = json.loads((tmp_path / "new" / "detector.json").read_text())
    assert meta["files"] == ["members/0", "members/1", STATS_FILE]
    np.testing.assert_array_equal(load_detector(tmp_path / "new").score(test_x), det.score(test_x))
    # before: the statistics in detector.json's normalisation, no statistics file
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    (old / STATS_FILE).unlink()
    meta["files"] = ["members/0", "members/1"]
    meta["normalisation"] = {
        "mean": det.member_mean_.tolist(),
        "std": det.member_std_.tolist(),
    }
    (old / "detector.json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(load_detector(old).score(test_x), det.score(test_x))


@pytest.mark.parametrize(
    "params, needle",
    [
        ({}, "needs members"),
        ({"members": ["lof", "gmm"], "weights": [1.0]}, "1 weights for 2 members"),
        ({"members": ["lof"], "weights": [0.0]}, "not all 0"),
    ],
)
def test_bad_member_lists_are_refused(params, needle):
    with pytest.raises(ValueError, match=needle):
        EnsembleDetector(params, TRAIN).fit(data(4, 0), None)


@pytest.fixture
def two_runs(dataset, tmp_path):
    settings, _ = load_settings(
        None,
        {
            "paths.store": tmp_path / "f.h5",
            "paths.runs": tmp_path / "runs",
            "features.n_mels": 32,
            "detectors.lof.n_neighbors": 3,
        },
    )
    featurize([dataset], settings.features, settings.paths.store)
    lof = train(settings, "lof").run.path
    gmm = train(settings, "gmm").run.path
    return settings, lof, gmm


def env_of(settings):
    return {
        "ASD_PATHS__STORE": str(settings.paths.store),
        "ASD_PATHS__RUNS": str(settings.paths.runs),
        "ASD_FEATURES__N_MELS": "32",
    }


def test_cli_ensemble_of_runs_is_a_normal_self_contained_run(two_runs, tmp_path):
    settings, lof, gmm = two_runs
    r = runner.invoke(
        app, ["train", "ensemble", "--members", f"{lof.name},{gmm}"], env=env_of(settings)
    )
    assert r.exit_code == 0, r.output
    (run,) = [p for p in settings.paths.runs.iterdir() if p.name.endswith("_ensemble")]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["params"]["members"] == [str(lof.resolve()), str(gmm.resolve())]
    assert (run / "models" / "fan" / "members" / "1" / "detector.json").is_file()

    # The ensemble of loaded runs scores like the members' saved models combined by hand.
    store = FeatureStore(settings.paths.store)
    key = settings.features.key()
    recs = [c for c in store.clips(key) if c.machine == "fan" and c.split == "test"]
    feats = store.load(key, recs)
    ens = load_detector(run / "models" / "fan")
    members = [load_detector(p / "models" / "fan") for p in (lof, gmm)]
    z = [(m.score(feats) - m.train_scores_.mean()) / m.train_scores_.std() for m in members]
    np.testing.assert_allclose(ens.score(feats, recs), (z[0] + z[1]) / 2, rtol=1e-5)

    # Deleting a member run does not break the ensemble: its models were copied.
    before = ens.score(feats, recs)
    shutil.rmtree(lof)
    score_run(run, settings.paths.store)
    np.testing.assert_array_equal(load_detector(run / "models" / "fan").score(feats, recs), before)


def test_cli_members_errors(two_runs, dataset):
    settings, lof, _ = two_runs
    env = env_of(settings)
    cases = [
        (["train", "ensemble"], "needs members"),
        (["train", "lof", "--members", "a,b"], "--members: lof has no parameter 'members'"),
        (["train", "ensemble", "--members", "no-such-run"], "neither a run folder"),
    ]
    manifest = json.loads((lof / "manifest.json").read_text())
    manifest["status"] = "incomplete"
    (lof / "manifest.json").write_text(json.dumps(manifest))
    cases.append((["train", "ensemble", "--members", str(lof)], "incomplete"))
    for args, needle in cases:
        r = runner.invoke(app, args, env=env)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and "Traceback" not in r.output, (args, r.output)
    # Other feature settings than the member's: refused, with the way out.
    manifest["status"] = "complete"
    (lof / "manifest.json").write_text(json.dumps(manifest))
    s16, _ = load_settings(None, {"features.n_mels": 16})
    featurize([dataset], s16.features, settings.paths.store)
    r = runner.invoke(
        app,
        ["train", "ensemble", "--members", str(lof)],
        env={**env, "ASD_FEATURES__N_MELS": "16"},
    )
    assert r.exit_code == 2 and "trained on other features" in r.output, r.output


def test_resolve_params_hook(two_runs, tmp_path, caplog):
    settings, lof, gmm = two_runs
    key = settings.features.key()
    context = ParamsContext(settings.paths.runs, key, ("bearing", "fan", "pump"))
    params = EnsembleParams(members=[lof.name, str(gmm), "isolation_forest"])
    with caplog.at_level(logging.WARNING):
        resolved, machines = EnsembleDetector.resolve_params(params, context)
    # run names and paths become absolute run folders; detector names their canonical name
    assert resolved.members == [str(lof.resolve()), str(gmm.resolve()), "iforest"]
    assert machines == ["bearing", "fan"]  # no member run has a pump model
    assert "has no model for pump" in caplog.text
    with pytest.raises(UserError, match="needs members"):
        EnsembleDetector.resolve_params(EnsembleParams(), context)
    with pytest.raises(UserError, match="2 weights for 1 members"):
        EnsembleDetector.resolve_params(EnsembleParams(members=["lof"], weights=[1, 2]), context)
    with pytest.raises(UserError, match="trained on other features"):
        EnsembleDetector.resolve_params(params, ParamsContext(settings.paths.runs, "other", ()))
    with pytest.raises(DataError, match="no machine type in common"):
        EnsembleDetector.resolve_params(params, ParamsContext(settings.paths.runs, key, ("x",)))


def test_ensemble_of_detector_names_trains_its_members(two_runs):
    settings, _, _ = two_runs
    s, _ = load_settings(
        None,
        {
            "paths.store": settings.paths.store,
            "paths.runs": settings.paths.runs,
            "features.n_mels": 32,
            "detectors.ensemble.members": ["lof", "iforest"],
        },
    )
    result = train(s, "ensemble")
    det = load_detector(result.run.path / "models" / "bearing")
    assert [m.name for m in det.members_] == ["lof", "iforest"]
