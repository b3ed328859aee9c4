"""Streaming detectors: lazy clips (a store's StoredClips) give the same windows, the same model
and the same scores as the clips in memory, and memory does not grow with the clips held."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import tiny_emb_knn_settings

from asdcli.detectors import get_detector
from asdcli.detectors.params import TrainParams
from asdcli.detectors.windows import LazyClips, WindowSet
from asdcli.featurize import featurize
from asdcli.naming import ClipInfo
from asdcli.store import FeatureStore
from asdcli.train import training_clips

N_MELS = 16
TRAIN = TrainParams(epochs=2, batch_size=16, val_split=0.2, seed=0, device="cpu")
SMALL = {
    "emb-knn": {"frames": 16, "channels": [4, 8], "embedding": 8, "source_means": 0},
    "conv-ae": {"frames": 16, "channels": [4, 8], "bottleneck": 8},
}


class FakeLazy:
    """In-memory :class:`LazyClips` that counts what is read."""

    def __init__(self, clips: list[np.ndarray]):
        self._clips = clips
        self.lengths = np.array([c.shape[1] for c in clips])
        self.frames_read = 0

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self._clips):
            raise IndexError(i)
        self.frames_read += self._clips[i].shape[1]
        return self._clips[i].copy()

    def window(self, i: int, start: int, length: int) -> np.ndarray:
        assert start >= 0 and start + length <= self._clips[i].shape[1]
        self.frames_read += length
        return self._clips[i][:, start : start + length].copy()


def clips_and_infos(n: int, frames: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = [(rng.normal(size=(N_MELS, frames + i % 7)) + 3).astype(np.float32) for i in range(n)]
    feats[1] = feats[1][:, :10]  # shorter than a window: repeated
    machines = ["fan", "pump"]
    infos = [
        ClipInfo(name=f"c{i}.wav", machine=machines[i % 2], section="00", domain="source")
        for i in range(n)
    ]
    return feats, infos


def test_fake_lazy_is_lazy_clips():
    assert isinstance(FakeLazy([]), LazyClips) and not isinstance([], LazyClips)


def test_lazy_windows_equal_in_memory_windows_bit_for_bit():
    feats, _ = clips_and_infos(9)
    mean = np.linspace(2, 4, N_MELS).astype(np.float32)
    std = np.linspace(0.5, 2, N_MELS).astype(np.float32)
    memory = WindowSet(feats, 16, 8, norm=(mean, std))
    lazy = WindowSet(FakeLazy(feats), 16, 8, norm=(mean, std))
    assert len(lazy) == len(memory) and np.array_equal(lazy.clip_of, memory.clip_of)
    idx = np.random.default_rng(1).permutation(len(memory))[:40]
    np.testing.assert_array_equal(lazy.gather(idx), memory.gather(idx))
    every = np.arange(len(memory))
    np.testing.assert_array_equal(lazy.gather(every), memory.gather(every))
    # standardised as the clip itself would be
    first = (feats[0] - mean[:, None]) / std[:, None]
    np.testing.assert_array_equal(memory.gather(np.array([0]))[0], first[:, :16])


@pytest.mark.parametrize("name", ["emb-knn", "conv-ae"])
def test_fit_on_lazy_clips_is_the_fit_on_clips_in_memory(name):
    feats, infos = clips_and_infos(12)
    cls = get_detector(name)
    memory = cls(SMALL[name], TRAIN).fit(feats, infos)
    source = FakeLazy(feats)
    lazy = cls(SMALL[name], TRAIN).fit(source, infos)
    assert source.frames_read > 0
    np.testing.assert_array_equal(lazy.train_scores_, memory.train_scores_)
    np.testing.assert_array_equal(lazy.norm_mean_, memory.norm_mean_)
    expected = memory.module_.state_dict()
    for k, a in lazy.module_.state_dict().items():
        assert torch.equal(a, expected[k]), k
    test, test_infos = clips_and_infos(4, seed=5)
    np.testing.assert_array_equal(
        lazy.score(FakeLazy(test), test_infos), memory.score(test, test_infos)
    )


def test_lazy_clips_are_checked_as_they_are_read():
    feats, infos = clips_and_infos(6)
    feats[4] = feats[4].copy()
    feats[4][2, 3] = np.nan
    with pytest.raises(ValueError, match="clip 4 holds NaN"):
        get_detector("conv-ae")(SMALL["conv-ae"], TRAIN).fit(FakeLazy(feats), infos)
    short = FakeLazy(clips_and_infos(6)[0])
    short.lengths = short.lengths[:-1]
    with pytest.raises(ValueError, match="6 clips but 5 lengths"):
        get_detector("conv-ae")(SMALL["conv-ae"], TRAIN).fit(short, infos)


def test_a_detector_that_does_not_stream_reads_lazy_clips_into_a_list():
    feats, infos = clips_and_infos(8)
    lof = get_detector("lof")({"n_neighbors": 3}, TRAIN)
    assert not lof.streams
    direct = lof.fit(feats, infos).score(feats)
    np.testing.assert_array_equal(lof.fit(FakeLazy(feats), infos).score(FakeLazy(feats)), direct)


def _peak_numpy_bytes(n_clips: int) -> tuple[int, int]:
    """Peak bytes traced (numpy's allocations) while fitting conv-ae on ``n_clips`` lazy clips
    of 64 x 400 frames, and the bytes those clips take."""
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(64, 400)).astype(np.float32) for _ in range(n_clips)]
    infos = [ClipInfo(name=f"c{i}.wav") for i in range(n_clips)]
    det = get_detector("conv-ae")(
        {"frames": 16, "hop": 16, "channels": [2], "bottleneck": 4},
        TrainParams(epochs=1, batch_size=32, val_split=0.1, seed=0, device="cpu"),
    )
    source = FakeLazy(feats)
    tracemalloc.start()
    try:
        det.fit(source, infos)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, sum(f.nbytes for f in feats)


def test_memory_of_a_lazy_fit_does_not_grow_with_the_clips():
    _peak_numpy_bytes(10)  # one-off costs (imports, caches) out of the way first
    small_peak, _ = _peak_numpy_bytes(10)
    big_peak, big_bytes = _peak_numpy_bytes(80)
    # In memory, the standardised copy alone would be big_bytes (8 MB); lazily, what grows
    # with the clips is per-window bookkeeping (a few int64 per window).
    assert big_peak - small_peak < 0.2 * big_bytes, (small_peak, big_peak, big_bytes)


def test_joint_training_streams_from_the_store_and_matches_a_fit_in_memory(
    dataset, tmp_path, monkeypatch
):
    from asdcli import train as train_module
    from asdcli.detectors.emb_knn import EmbKNNDetector

    settings = tiny_emb_knn_settings(tmp_path)
    featurize([dataset], settings.features, settings.paths.store)
    seen = []
    real_fit = EmbKNNDetector.fit

    def spy(self, features, clips, progress=None):
        seen.append(type(features).__name__)
        return real_fit(self, features, clips, progress)

    monkeypatch.setattr(EmbKNNDetector, "fit", spy)
    run = train_module.train(settings, "emb-knn").run.path
    assert seen == ["StoredClips"]
    store = FeatureStore(settings.paths.store)
    key = settings.features.key()
    by_machine = training_clips(store, key)
    records = [r for m in sorted(by_machine) for r in by_machine[m]]  # train's order
    memory = real_fit(
        EmbKNNDetector(settings.detectors.emb_knn, settings.train),
        store.load(key, records),
        records,
    )
    saved = json.loads((run / "models" / "fan" / "detector.json").read_text())
    fan = np.array([r.machine == "fan" for r in records])
    np.testing.assert_array_equal(saved["train_scores"], memory.train_scores_[fan])
