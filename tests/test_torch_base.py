"""The neural detectors' training loop: what it refuses, and what a window set tells a loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.detectors import get_detector, list_detectors
from asdcli.detectors.params import TrainParams
from asdcli.detectors.torch_base import TorchDetector
from asdcli.detectors.windows import WindowSet
from asdcli.errors import SettingsError

NEURAL = [name for name, _ in list_detectors() if issubclass(get_detector(name), TorchDetector)]


def test_every_neural_detector_is_covered():
    assert {"fc-ae", "conv-ae", "lstm-ae", "dcase-ae", "vae", "emb-knn"} <= set(NEURAL)


@pytest.mark.parametrize("name", NEURAL)
def test_zero_epochs_is_refused_before_any_training(name):
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(16, 70)).astype(np.float32) for _ in range(3)]
    det = get_detector(name)(None, TrainParams(epochs=0, device="cpu"))
    with pytest.raises(SettingsError, match="--epochs 0: the neural detectors need at least one"):
        det.fit(feats, None)
    assert not hasattr(det, "module_")  # nothing was built


def test_cli_train_with_zero_epochs_exits_2_and_writes_no_complete_run(tmp_path: Path):
    data = make_dataset(tmp_path / "data", machines=("fan",), n_train=3, n_test=2)
    store, runs = tmp_path / "f.h5", tmp_path / "runs"
    runner = CliRunner()
    done = runner.invoke(app, ["featurize", str(data), "--store", str(store)])
    assert done.exit_code == 0, done.output
    args = ["train", "conv-ae", "--epochs", "0", "--store", str(store), "--runs", str(runs)]
    done = runner.invoke(app, args)
    assert done.exit_code == 2, done.output
    assert "--epochs 0: the neural detectors need at least one epoch" in done.output
    assert "lof, gmm, knn" in done.output
    assert "Traceback" not in done.output
    # Refused before the run folder exists: nothing is left behind.
    assert not runs.exists() or not any(runs.iterdir())


def test_window_sets_know_which_input_clip_each_window_comes_from():
    clips = [np.zeros((2, n), np.float32) for n in (4, 9, 3)]
    ws = WindowSet(clips, length=4, hop=4, ids=np.array([7, 2, 5]))
    # Clip 0: one window; clip 1 (9 frames): starts 0, 4 and 5 (aligned to the end); clip 2:
    # padded to one window.
    assert ws.clip_of.tolist() == [0, 1, 1, 1, 2]
    assert ws.ids_of(np.arange(len(ws))).tolist() == [7, 2, 2, 2, 5]
    assert WindowSet(clips, 4, 4).ids_of(np.array([4, 0])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="3 clips but 2 ids"):
        WindowSet(clips, 4, 4, ids=np.array([0, 1]))
