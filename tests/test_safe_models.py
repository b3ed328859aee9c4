"""Run folders are untrusted (issue 14): loading a model never unpickles anything.

A malicious pickle whose ``__reduce__`` creates a marker file is put in place of each model
file of a trained run (and as the old ``model.joblib``); ``asd score`` must refuse the run with
exit 2, name the file, write nothing, and the marker must never appear. A positive control
proves the payload does create the marker when unpickled, so the refusals cannot pass because
the payload is broken. The scikit-learn detectors come from the registry (every subclass of
:class:`SklearnDetector`), so one registered later is tested too.

Also here: the array files' scores equal scikit-learn's own estimators (what asd < 0.2 saved),
and damaged or crafted array files are refused with a :class:`ValueError` naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from conftest import make_dataset
from sklearn.ensemble import IsolationForest
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from typer.testing import CliRunner, Result

from asdcli.cli import app
from asdcli.detectors import get_detector, list_detectors, load_detector
from asdcli.detectors.base import META_FILE
from asdcli.detectors.sklearn_base import (
    LEGACY_MODEL_FILE,
    MODEL_FILE,
    SklearnDetector,
    load_arrays,
    save_arrays,
)

torch.set_num_threads(2)

SKLEARN = [n for n, _ in list_detectors() if issubclass(get_detector(n), SklearnDetector)]
# Small features; a wide console so no message is wrapped in the middle of a path.
ENV = {"ASD_FEATURES__N_MELS": "16", "COLUMNS": "4000"}
runner = CliRunner()


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): code chosen by the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def payload(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def asd(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args], env=ENV)


def trained_run(tmp_path: Path, detector: str, *options: str) -> Path:
    """Featurize a tiny dataset (one machine type, ``fan``) and train ``detector`` on it."""
    data = make_dataset(tmp_path / "data", machines=("fan",), n_train=5, n_test=4)
    assert asd("featurize", data).exit_code == 0
    r = asd("train", detector, *options)
    assert r.exit_code == 0, r.output
    (run,) = [p for p in Path("runs").iterdir() if p.is_dir()]
    return run


def plant(model_dir: Path, marker: Path) -> list[Path]:
    """Replace every state file ``detector.json`` lists by the payload and add it as
    ``model.joblib``; return the replaced files."""
    files = [model_dir / f for f in json.loads((model_dir / META_FILE).read_text())["files"]]
    assert files and all(f.is_file() for f in files)
    for f in [*files, model_dir / LEGACY_MODEL_FILE]:
        f.write_bytes(payload(marker))
    return files


def refused(result: Result, *needles: str) -> str:
    """Exit 2 (a user error), no traceback, every needle in the message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


def score_refused(run: Path, planted: Path, *needles: str) -> None:
    """``asd score`` refuses the run, first at the hash check (naming the model folder), then,
    with ``--trust-modified``, at the loader (naming the planted file): the loader is tested
    even though the hash check would stop the run first."""
    refused(asd("score", run), f"models/{planted.parent.relative_to(run / 'models')}")
    refused(asd("score", run, "--trust-modified"), str(planted), *needles)


# --- the payload works: a refusal below is the loader's doing --------------------------------


def test_positive_control_the_payload_runs_when_unpickled(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.joblib"
    path.write_bytes(payload(marker))
    joblib.load(path).close()  # what asd < 0.2 did with model.joblib
    assert marker.is_file()
    marker.unlink()
    # torch.load without weights_only unpickles it too (then finds no tensors in it).
    with pytest.raises(RuntimeError, match="magic number"):
        torch.load(path, weights_only=False)
    assert marker.is_file()


def test_the_registry_has_the_scikit_learn_detectors():
    assert {"lof", "iforest", "gmm"} <= set(SKLEARN)


# --- a malicious model file is refused, the payload never runs --------------------------------


@pytest.mark.parametrize("detector", SKLEARN)
def test_malicious_sklearn_model_is_refused_and_never_runs(tmp_path, detector):
    run = trained_run(tmp_path, detector)
    model_dir = run / "models" / "fan"
    assert (model_dir / MODEL_FILE).is_file() and not (model_dir / LEGACY_MODEL_FILE).exists()
    marker = tmp_path / "marker"
    (planted,) = plant(model_dir, marker)
    score_refused(run, planted, "cannot be loaded", "a pickle, perhaps")
    assert not marker.exists()
    assert not (run / "scores").exists()  # nothing written


def _torch_run_with_payload(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A dcase-ae run whose model.pt (and a model.joblib) hold the payload; the marker path."""
    run = trained_run(tmp_path, "dcase-ae", "--epochs", "1", "-p", "hidden=8", "-p", "bottleneck=2")
    marker = tmp_path / "marker"
    (planted,) = plant(run / "models" / "fan", marker)
    assert planted.name == "model.pt"
    return run, planted, marker


def test_malicious_torch_weights_never_run(tmp_path):
    run, planted, marker = _torch_run_with_payload(tmp_path)
    refused(asd("score", run), "models/fan")  # the hash check
    r = asd("score", run, "--trust-modified")  # the loader: torch.load(weights_only=True)
    assert r.exit_code != 0, r.output
    assert not marker.exists()
    assert not (run / "scores").exists()


def test_malicious_torch_weights_are_a_user_error(tmp_path):
    run, planted, marker = _torch_run_with_payload(tmp_path)
    refused(asd("score", run, "--trust-modified"), str(planted), "cannot be loaded")
    assert not marker.exists()


def test_ensemble_holds_no_pickle_and_refuses_a_malicious_member(tmp_path):
    run = trained_run(tmp_path, "ensemble", "--members", "lof,gmm")
    model_dir = run / "models" / "fan"
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    names = {p.relative_to(model_dir).as_posix() for p in files}
    assert {"members/0/model.npz", "members/1/model.npz"} <= names  # the members' copies
    for p in files:  # JSON, or arrays that load without pickle: nothing else
        assert p.suffix in (".json", ".npz"), p
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                assert all(npz[name].dtype != object for name in npz.files)
        else:
            json.loads(p.read_text())
    assert asd("score", run).exit_code == 0  # the untouched copy scores

    marker = tmp_path / "marker"
    (planted,) = plant(model_dir / "members" / "1", marker)
    before = (run / "scores" / "scores.csv").read_bytes()
    score_refused(run, planted, "cannot be loaded")
    assert not marker.exists()
    assert (run / "scores" / "scores.csv").read_bytes() == before  # nothing rewritten


def test_run_of_asd_before_0_2_with_model_joblib_says_train_again(tmp_path):
    run = trained_run(tmp_path, "lof")
    model_dir = run / "models" / "fan"
    # What asd < 0.2 left: detector.json listing model.joblib, a pickle, and no model.npz.
    meta = json.loads((model_dir / META_FILE).read_text())
    (model_dir / META_FILE).write_text(json.dumps({**meta, "files": [LEGACY_MODEL_FILE]}))
    (model_dir / MODEL_FILE).unlink()
    marker = tmp_path / "marker"
    (model_dir / LEGACY_MODEL_FILE).write_bytes(payload(marker))
    score_refused(
        run, model_dir / LEGACY_MODEL_FILE, "saved with pickle (asd < 0.2)", "train it again"
    )
    assert not marker.exists()


# --- the array files: same scores as scikit-learn, damaged files refused -----------------------

N_MELS = 6


def _clips(n: int, seed: int, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = np.linspace(-40, -20, N_MELS)[:, None]
    return [
        (shape + scale * rng.normal(size=(N_MELS, int(rng.integers(10, 30))))).astype(np.float32)
        for _ in range(n)
    ]


TRAIN, TEST = _clips(30, seed=0), _clips(12, seed=1, scale=1.5)
# Each scikit-learn detector's configurations and the estimator asd < 0.2 pickled for them.
REFERENCES: list[tuple[str, dict[str, Any]]] = [
    ("lof", {"n_neighbors": 5}),
    ("lof", {"n_neighbors": 50, "metric": "manhattan"}),  # k clipped to n_train - 1
    ("iforest", {"n_estimators": 40}),
    ("iforest", {"n_estimators": 30, "max_samples": 12}),
    *[("gmm", {"n_components": 3, "covariance_type": c}) for c in ("full", "tied", "diag")],
    ("gmm", {"n_components": 2, "covariance_type": "spherical", "pooling": "mean_std_max"}),
]


def reference_normality(
    name: str, params: Any, z: np.ndarray, z_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(training, test) normality from scikit-learn's own estimator, fitted as asd < 0.2 did."""
    if name == "lof":
        k = min(params.n_neighbors, len(z) - 1)
        lof = LocalOutlierFactor(n_neighbors=k, metric=params.metric, novelty=True).fit(z)
        return lof.negative_outlier_factor_, lof.score_samples(z_test)
    if name == "iforest":
        ms = params.max_samples
        forest = IsolationForest(
            n_estimators=params.n_estimators, max_samples=ms, random_state=0
        ).fit(z)
        return forest.score_samples(z), forest.score_samples(z_test)
    mixture = GaussianMixture(
        params.n_components,
        covariance_type=params.covariance_type,
        reg_covar=params.reg_covar,
        random_state=0,
    ).fit(z)
    return mixture.score_samples(z), mixture.score_samples(z_test)


def test_references_cover_every_sklearn_detector():
    assert {name for name, _ in REFERENCES} == set(SKLEARN)


@pytest.mark.parametrize(("name", "params"), REFERENCES, ids=lambda v: str(v))
def test_scores_equal_scikit_learns_before_and_after_saving(tmp_path, name, params):
    det = get_detector(name)(params, {"seed": 0}).fit(TRAIN, None)
    train_ref, test_ref = reference_normality(
        name, det.params, det._vectors(TRAIN), det._vectors(TEST)
    )
    np.testing.assert_allclose(det.train_scores_, -train_ref, rtol=1e-12, atol=1e-12)
    scores = det.score(TEST)
    np.testing.assert_allclose(scores, -test_ref, rtol=1e-12, atol=1e-12)
    assert np.ptp(scores) > 0  # the comparison is not between constants

    det.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [META_FILE, MODEL_FILE]
    loaded = load_detector(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score(TEST), scores)


@pytest.fixture(params=SKLEARN)
def saved(request, tmp_path) -> tuple[str, Path, dict[str, np.ndarray]]:
    """A saved scikit-learn detector: its name, folder and stored arrays."""
    folder = tmp_path / "model"
    get_detector(request.param)(None, {"seed": 0}).fit(TRAIN, None).save(folder)
    with np.load(folder / MODEL_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return request.param, folder, arrays


def _refused_on_load(folder: Path, *needles: str) -> None:
    with pytest.raises(ValueError) as info:
        load_detector(folder)
    for needle in (str(folder / MODEL_FILE), *needles):
        assert needle in str(info.value)


def test_every_array_of_another_shape_is_refused(saved):
    _, folder, arrays = saved
    for name, value in arrays.items():
        save_arrays(folder / MODEL_FILE, {**arrays, name: value[None, ...]})
        _refused_on_load(folder, name)


def test_missing_extra_nan_and_object_arrays_are_refused(saved):
    _, folder, arrays = saved
    first = next(iter(arrays))
    save_arrays(folder / MODEL_FILE, {k: v for k, v in arrays.items() if k != first})
    _refused_on_load(folder, "expected")
    save_arrays(folder / MODEL_FILE, {**arrays, "extra": np.zeros(3)})
    _refused_on_load(folder, "extra")
    floats = next(k for k, v in arrays.items() if v.dtype.kind == "f")
    save_arrays(folder / MODEL_FILE, {**arrays, floats: np.full_like(arrays[floats], np.nan)})
    _refused_on_load(folder, "NaN")
    # An object array can only be written with pickle; save_arrays refuses to write one, and
    # a file that holds one is refused on load.
    with pytest.raises(TypeError):
        save_arrays(folder / MODEL_FILE, {**arrays, first: np.array([Payload(folder)])})
    np.savez(folder / MODEL_FILE, **{**arrays, first: np.array([Payload(folder / "m")])})
    _refused_on_load(folder, "Object arrays")
    assert not (folder / "m").exists()


def test_files_that_are_not_an_npz_are_refused(saved, tmp_path):
    _, folder, arrays = saved
    path = folder / MODEL_FILE
    good = path.read_bytes()
    marker = tmp_path / "marker"
    for content in (
        payload(marker),
        payload(marker) + good,  # a pickle with the real archive appended
        b"",
        good[: len(good) // 2],  # truncated
        b"PK\x03\x04" + os.urandom(64),
    ):
        path.write_bytes(content)
        _refused_on_load(folder)
    np.save(tmp_path / "one.npy", arrays[next(iter(arrays))])  # a single array, no names
    path.write_bytes((tmp_path / "one.npy").read_bytes())
    _refused_on_load(folder, "not an .npz")
    assert not marker.exists()


def test_missing_model_file_is_refused(saved):
    _, folder, _ = saved
    (folder / MODEL_FILE).unlink()
    with pytest.raises(ValueError, match=f"no {MODEL_FILE}"):
        load_detector(folder)


def _set(values: np.ndarray, index: int, value: int) -> np.ndarray:
    out = values.copy()
    out[index] = value
    return out


# Crafted forests: each would index out of bounds or loop if it were not refused on load.
BAD_FORESTS: dict[str, Any] = {
    "a cycle": lambda a, inner: {"left": _set(a["left"], inner, inner - 1)},
    "a self loop": lambda a, inner: {"right": _set(a["right"], inner, inner)},
    "into the next tree": lambda a, inner: {"left": _set(a["left"], 0, a["roots"][1])},
    "past the end": lambda a, inner: {"right": _set(a["right"], 0, len(a["left"]))},
    "a feature out of range": lambda a, inner: {"feature": _set(a["feature"], 0, 2 * N_MELS)},
    "roots out of order": lambda a, inner: {"roots": a["roots"][::-1].copy()},
    "float indices": lambda a, inner: {"left": a["left"].astype(np.float64)},
}


@pytest.mark.parametrize("case", BAD_FORESTS)
def test_a_crafted_forest_is_refused(tmp_path, case):
    folder = tmp_path / "model"
    get_detector("iforest")({"n_estimators": 3}, {"seed": 0}).fit(TRAIN, None).save(folder)
    names = get_detector("iforest").model_arrays
    arrays = load_arrays(folder / MODEL_FILE, names)
    inner = int(np.flatnonzero(arrays["left"] >= 0)[1])  # an internal node that is not a root
    save_arrays(folder / MODEL_FILE, {**arrays, **BAD_FORESTS[case](arrays, inner)})
    with pytest.raises(ValueError) as info:
        load_detector(folder)
    assert f"{folder / MODEL_FILE} does not hold a usable iforest model" in str(info.value)
    save_arrays(folder / MODEL_FILE, arrays)  # the untouched arrays load and score
    assert load_detector(folder).score(TEST).shape == (len(TEST),)


def test_gmm_weights_and_factors_are_checked(tmp_path):
    folder = tmp_path / "model"
    get_detector("gmm")({"covariance_type": "full"}, {"seed": 0}).fit(TRAIN, None).save(folder)
    arrays = load_arrays(folder / MODEL_FILE, ("weights", "means", "precisions_cholesky"))
    for change in (
        {"weights": arrays["weights"] * 2},  # do not sum to 1
        {"weights": arrays["weights"][::-1] * np.array([-1.0, 3.0])},  # negative
        {"precisions_cholesky": -arrays["precisions_cholesky"]},  # log of a negative diagonal
    ):
        save_arrays(folder / MODEL_FILE, {**arrays, **change})
        with pytest.raises(ValueError, match="does not hold a usable gmm model"):
            load_detector(folder)
