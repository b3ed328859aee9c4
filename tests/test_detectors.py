"""The detector contract, run over every registered detector, plus the training-loop details.

The data are tiny synthetic log-mel clips (numpy only): normal clips share a stable spectral
shape plus noise, some are marked target domain; anomalies add a strong extra band or lose one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import asdcli.detectors
from asdcli.detectors import (
    UnknownDetectorError,
    build_detector,
    canonical_name,
    get_detector,
    list_detectors,
    load_detector,
    params_key,
)
from asdcli.detectors.base import Detector
from asdcli.detectors.errors import DeviceUnavailableError
from asdcli.detectors.params import DetectorParams, TrainParams
from asdcli.detectors.torch_base import TorchDetector, _batches, resolve_device, val_split_indices
from asdcli.detectors.windows import WindowSet, repeat_pad, window_starts
from asdcli.errors import UserError
from asdcli.naming import ClipInfo

torch.set_num_threads(2)

N_MELS = 16
NAMES = [name for name, _ in list_detectors()]
# Small hyper-parameters per detector so the whole file runs in seconds; a detector that is
# registered later without an entry here is tested with its defaults.
SMALL: dict[str, dict] = {
    "fc-ae": {"frames": 16, "hidden": [64, 32], "bottleneck": 8},
    "conv-ae": {"frames": 16, "channels": [4, 8, 8], "bottleneck": 16},
    "lstm-ae": {"frames": 16, "hidden": 16, "bottleneck": 8},
    "dcase-ae": {"hidden": 32, "batch_size": 64},
    "lof": {"n_neighbors": 5},
    "iforest": {"n_estimators": 50},
    "gmm": {"n_components": 2},
    "vae": {"hidden": [32, 16], "latent": 4, "batch_size": 64},
    "emb-knn": {"frames": 16, "channels": [4, 8], "embedding": 16},
    "ensemble": {"members": ["lof", "gmm"]},
}
TRAIN = TrainParams(
    epochs=4, batch_size=16, learning_rate=3e-3, val_split=0.2, patience=5, seed=0, device="cpu"
)


# --- synthetic data -------------------------------------------------------------------------

_SHAPE = -50 + 12 * np.cos(np.linspace(0, 3 * np.pi, N_MELS))


def _clip(rng: np.random.Generator, frames: int, target: bool = False, kind: str = "normal"):
    t = np.arange(frames)
    x = _SHAPE[:, None] + rng.normal(0, 1.0, (N_MELS, frames))
    x[3] += 4 * np.sin(t / 2.0)  # a steady periodic pattern in one band
    if target:
        x[12:] += 2.0  # the target domain shifts the top bands a little
    if kind == "band":  # a strong extra component that comes and goes
        x[6:14] += 15.0 * (np.sin(t / 3.0) > 0)
    elif kind == "broken":  # the periodic pattern is lost and the low bands drop out at times
        x[3] = _SHAPE[3] + rng.normal(0, 1.0, frames) * 6
        x[0:8] -= 12.0 * (np.cos(t / 3.0) > 0)
    return x.astype(np.float32)


def _info(i: int, domain: str, label: str = "normal", split: str = "train") -> ClipInfo:
    return ClipInfo(
        name=f"clip_{i}.wav", machine="fan", section="00", domain=domain, split=split, label=label
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    train, train_info = [], []
    for i in range(24):
        target = i % 4 == 3
        frames = 10 if i == 5 else int(rng.integers(24, 41))  # clip 5 is shorter than a window
        train.append(_clip(rng, frames, target))
        train_info.append(_info(i, "target" if target else "source"))
    test, labels, test_info = [], [], []
    for i in range(16):
        kind = "normal" if i < 8 else ("band" if i % 2 else "broken")
        target = i % 3 == 0
        test.append(_clip(rng, int(rng.integers(24, 41)), target, kind))
        labels.append(int(kind != "normal"))
        domain = "target" if target else "source"
        test_info.append(_info(i, domain, "anomaly" if labels[-1] else "normal", "test"))
    return {
        "train": train,
        "train_info": train_info,
        "test": test,
        "labels": np.array(labels),
        "test_info": test_info,
    }


def _make(name: str, train: TrainParams = TRAIN, **update) -> Detector:
    cls = get_detector(name)
    params = cls.params_cls().model_copy(update={**SMALL.get(name, {}), **update})
    return cls(cls.params_cls.model_validate(params.model_dump()), train)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, data):
    rows: list[dict] = []
    det = _make(request.param).fit(data["train"], data["train_info"], progress=rows.append)
    return det, rows


# --- the contract, over every registered detector ---------------------------------------------


def test_fit_records_training_state(fitted, data):
    det, rows = fitted
    n = len(data["train"])
    assert det.train_scores_.shape == (n,)
    assert det.train_scores_.dtype == np.float64
    assert np.isfinite(det.train_scores_).all()
    assert det.n_mels_ == N_MELS
    assert det.interrupted_ is False
    assert det.n_params_ > 0
    assert rows == det.history_  # progress saw every epoch's row
    if isinstance(det, TorchDetector):
        assert 1 <= len(det.history_) <= TRAIN.epochs
        assert set(det.history_[0]) == {"epoch", "loss", "val_loss", "seconds"}
        assert det.norm_mean_.shape == det.norm_std_.shape == (N_MELS,)
        assert not torch.are_deterministic_algorithms_enabled()  # fit restored the global flag
    else:
        assert det.history_ == []


def test_scores_are_finite_and_anomalies_score_higher(fitted, data):
    det, _ = fitted
    scores = det.score(data["test"], data["test_info"])
    assert scores.shape == (len(data["test"]),)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert roc_auc_score(data["labels"], scores) > 0.8
    assert det.score([]).shape == (0,)


def test_any_clip_length_scores(fitted):
    det, _ = fitted
    rng = np.random.default_rng(7)
    clips = [_clip(rng, frames) for frames in (1, 3, 5, 15, 16, 17, 33, 120)]
    scores = det.score(clips)  # no ClipInfo: allowed
    assert scores.shape == (len(clips),)
    assert np.isfinite(scores).all()


def test_save_load_round_trip(fitted, data, tmp_path):
    det, _ = fitted
    det.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    assert meta["name"] == det.name
    assert meta["n_mels"] == N_MELS
    assert {"numpy", "torch", "scikit-learn"} <= set(meta["versions"])
    assert len(meta["normalisation"]["mean"]) == len(det.norm_mean_)

    again = type(det).load(tmp_path / "model")
    np.testing.assert_array_equal(again.score(data["test"]), det.score(data["test"]))
    np.testing.assert_array_equal(again.train_scores_, det.train_scores_)
    np.testing.assert_array_equal(again.norm_mean_, det.norm_mean_)
    assert again.history_ == det.history_
    assert again.params == det.params and again.train == det.train
    assert type(load_detector(tmp_path / "model")) is type(det)


def test_load_refuses_another_detectors_folder(fitted, tmp_path):
    det, _ = fitted
    det.save(tmp_path / "model")
    other = next(name for name in NAMES if name != det.name)
    with pytest.raises(ValueError, match=det.name):
        get_detector(other).load(tmp_path / "model")


def test_same_seed_same_scores(fitted, data):
    det, _ = fitted
    again = _make(det.name).fit(data["train"], data["train_info"])
    np.testing.assert_array_equal(again.train_scores_, det.train_scores_)
    np.testing.assert_array_equal(again.score(data["test"]), det.score(data["test"]))


def test_wrong_mel_count_is_refused(fitted):
    det, _ = fitted
    with pytest.raises(ValueError, match="mel bands"):
        det.score([np.zeros((N_MELS + 1, 30), dtype=np.float32)])


# --- registry ------------------------------------------------------------------------------


def test_registry_names_aliases_and_sections():
    assert NAMES == [
        "dcase-ae",
        "fc-ae",
        "conv-ae",
        "lstm-ae",
        "lof",
        "iforest",
        "knn",
        "gmm",
        "vae",
        "emb-knn",
        "ensemble",
    ]
    assert canonical_name("fc_autoencoder") == "fc-ae"
    assert canonical_name("conv_autoencoder") == "conv-ae"
    assert canonical_name("lstm_autoencoder") == "lstm-ae"
    assert canonical_name("isolation_forest") == "iforest"
    assert canonical_name("lof") == "lof"
    assert get_detector("isolation_forest") is get_detector("iforest")
    assert params_key("conv-ae") == "conv_ae"
    sections = DetectorParams()
    for name in NAMES:
        cls = get_detector(name)
        assert cls.name == name
        assert isinstance(getattr(sections, params_key(name)), cls.params_cls)
        assert isinstance(build_detector(name, sections).params, cls.params_cls)


def test_unknown_detector_lists_known_names():
    with pytest.raises(UnknownDetectorError) as info:
        get_detector("autoencoder")
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)
    for name in NAMES:
        assert name in str(info.value)


def test_importing_the_registry_is_light():
    code = (
        "import sys, asdcli.detectors as d; d.list_detectors(); d.canonical_name('lof'); "
        "heavy = [m for m in ('torch', 'sklearn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_params_type_is_checked():
    with pytest.raises(TypeError):
        get_detector("fc-ae")(get_detector("lof").params_cls())


# --- torch training loop -------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_request_without_cuda():
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="--device cuda was requested"):
        asdcli.detectors.resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_windowing_covers_every_frame():
    assert window_starts(10, 16, 8).tolist() == [0]
    assert window_starts(40, 16, 8).tolist() == [0, 8, 16, 24]
    assert window_starts(41, 16, 8).tolist() == [0, 8, 16, 24, 25]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(repeat_pad(x, 7)[0], [0, 1, 2, 0, 1, 2, 0])
    ws = WindowSet([np.zeros((2, 3), np.float32), np.ones((2, 20), np.float32)], 8, 4)
    assert ws.gather(np.arange(len(ws))).shape == (len(ws), 2, 8)
    np.testing.assert_array_equal(np.bincount(ws.clip_of), [1, 4])


def test_batches_never_drop_windows():
    order = np.arange(33)
    batches = _batches(order, 16)
    assert [len(b) for b in batches] == [16, 17]  # the single leftover joins the last batch
    np.testing.assert_array_equal(np.concatenate(batches), order)
    assert [len(b) for b in _batches(np.arange(3), 16)] == [3]


def test_validation_split():
    train, val = val_split_indices(24, 0.2, seed=0)
    assert len(val) == 5 and len(train) == 19
    assert not set(train) & set(val)
    assert len(val_split_indices(2, 0.01, 0)[1]) == 1
    assert len(val_split_indices(1, 0.5, 0)[1]) == 0
    assert len(val_split_indices(10, 0.0, 0)[1]) == 0


def test_early_stopping_stops_and_restores_the_best_epoch(data):
    train = TRAIN.model_copy(update={"epochs": 40, "patience": 2, "learning_rate": 0.05})
    det = _make("fc-ae", train=train).fit(data["train"], data["train_info"])
    val_losses = [row["val_loss"] for row in det.history_]
    best = int(np.argmin(val_losses))
    assert len(det.history_) < train.epochs
    assert len(det.history_) == best + 1 + train.patience
    assert val_losses[-1] > val_losses[best]  # so restoring is observable
    val = [data["train"][i] for i in det.val_indices_]
    assert det.validation_loss(val) == pytest.approx(val_losses[best], rel=1e-6)


def test_single_clip_trains_without_validation(data):
    det = _make("dcase-ae").fit(data["train"][:1], data["train_info"][:1])
    assert len(det.val_indices_) == 0
    assert all(row["val_loss"] is None for row in det.history_)
    assert np.isfinite(det.score(data["test"])).all()


def test_keyboard_interrupt_keeps_a_usable_model(data, tmp_path):
    def interrupt_at_epoch_2(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    train = TRAIN.model_copy(update={"epochs": 10})
    det = _make("conv-ae", train=train).fit(
        data["train"], data["train_info"], progress=interrupt_at_epoch_2
    )
    assert det.interrupted_ is True
    assert len(det.history_) == 2
    assert np.isfinite(det.train_scores_).all()
    det.save(tmp_path / "model")
    loaded = get_detector("conv-ae").load(tmp_path / "model")
    assert loaded.interrupted_ is True
    np.testing.assert_array_equal(loaded.score(data["test"]), det.score(data["test"]))


# --- dcase-ae --------------------------------------------------------------------------------


def test_dcase_ae_default_network_is_the_baseline():
    net = get_detector("dcase-ae")()._build_module(128)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [
        (640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
        (8, 128), (128, 128), (128, 128), (128, 128), (128, 640),
    ]  # fmt: skip
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 9
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in norms)
    layers = list(net.encoder) + list(net.decoder)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, torch.nn.Linear):
            assert isinstance(layers[i + 1], torch.nn.BatchNorm1d)
            assert isinstance(layers[i + 2], torch.nn.ReLU)
    params = get_detector("dcase-ae").params_cls()
    assert (params.context, params.batch_size) == (5, 256)


def test_dcase_ae_mahalanobis_scoring(data, tmp_path):
    det = _make("dcase-ae", score="mahalanobis").fit(data["train"], data["train_info"])
    dim = N_MELS * det.params.context
    assert det.residual_precision_.shape == (2, dim, dim)
    scores = det.score(data["test"], data["test_info"])
    assert np.isfinite(scores).all() and np.isfinite(det.train_scores_).all()
    assert roc_auc_score(data["labels"], scores) > 0.8
    det.save(tmp_path / "model")
    loaded = get_detector("dcase-ae").load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score(data["test"]), scores)

    # Without target training clips, the target statistics are the source's.
    source_only = [ClipInfo(name=c.name, domain="source") for c in data["train_info"]]
    det = _make("dcase-ae", score="mahalanobis").fit(data["train"], source_only)
    np.testing.assert_array_equal(det.residual_precision_[0], det.residual_precision_[1])


def test_lof_fits_a_tiny_training_set(data):
    det = _make("lof", n_neighbors=20).fit(data["train"][:3], data["train_info"][:3])
    assert det.estimator_.n_neighbors == 2
    assert np.isfinite(det.score(data["test"])).all()
