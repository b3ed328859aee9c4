"""featurize end to end on tiny WAV folders: discovery, caching, bad files, crash safety."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import soundfile as sf
from conftest import make_dataset, write_clip

import asdcli.featurize as featurize_module
from asdcli.audio import read_audio
from asdcli.errors import DataError
from asdcli.features import logmel
from asdcli.featurize import featurize
from asdcli.settings import FeatureSettings
from asdcli.store import FeatureStore

FS = FeatureSettings(n_mels=32)


def stored(path, fs=FS):
    store = FeatureStore(path)
    clips = store.clips(fs.key())
    return {c.path: (c, x) for c, x in zip(clips, store.load(fs.key(), clips), strict=True)}


def test_machine_folder_and_folder_of_machines(dataset, tmp_path):
    s = featurize([dataset / "bearing"], FS, tmp_path / "f.h5")
    assert set(s.machines) == {"bearing"} and s.new == 10
    s = featurize([dataset], FS, tmp_path / "f.h5")
    assert s.machines["bearing"].cached == 10 and s.machines["fan"].new == 10
    clips = stored(tmp_path / "f.h5")
    c, x = next(v for k, v in clips.items() if "fan/test" in k and "target_test_anomaly" in k)
    assert (c.machine, c.split, c.domain, c.label, c.section) == (
        "fan",
        "test",
        "target",
        "anomaly",
        "00",
    )
    assert x.shape == (32, 1 + 16000 // 512) and x.dtype == np.float32
    assert c.duration == pytest.approx(1.0) and c.sample_rate == 16000


def test_second_run_computes_nothing_and_changes_are_recomputed(dataset, tmp_path):
    store = tmp_path / "f.h5"
    featurize([dataset], FS, store)
    again = featurize([dataset], FS, store)
    assert again.new == 0 and again.cached == 20
    clip = sorted((dataset / "fan" / "train").glob("*.wav"))[0]
    before = stored(store)[str(clip)][1]
    write_clip(clip, seed=99)
    os.utime(clip, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = featurize([dataset], FS, store)
    assert changed.new == 1 and changed.cached == 19
    assert not np.array_equal(stored(store)[str(clip)][1], before)
    assert featurize([dataset], FS, store, force=True).new == 20
    assert len(stored(store)) == 20


def test_other_feature_settings_make_a_separate_set(dataset, tmp_path):
    store = tmp_path / "f.h5"
    featurize([dataset], FS, store)
    other = FS.model_copy(update={"n_mels": 16})
    assert featurize([dataset], other, store).new == 20
    sets = {s.key: s.n_clips for s in FeatureStore(store).feature_sets()}
    assert sets == {FS.key(): 20, other.key(): 20}


def test_workers_give_the_same_store(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "d", machines=("fan", "gear"), n_train=24, n_test=8)
    monkeypatch.setattr(featurize_module, "TASK_FILES", 2)  # 32 tasks: helpers get some
    slow = lambda done, total: time.sleep(0.01)  # noqa: E731 - a slow writer, as on real data
    contents = []
    for workers in (1, 2, 3):
        store = tmp_path / f"w{workers}.h5"
        assert featurize([data], FS, store, workers=workers, progress=slow).new == 64
        clips = FeatureStore(store).clips(FS.key())
        contents.append(([c.path for c in clips], FeatureStore(store).load(FS.key(), clips)))
    (paths, feats), *others = contents
    for other_paths, other_feats in others:
        assert other_paths == paths  # the same storage order, not only the same clips
        for x, y in zip(feats, other_feats, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("workers", [1, 2])
def test_journal_frames_are_written_by_a_thread_and_complete_before_a_batch_is_adopted(
    tmp_path, monkeypatch, workers
):
    """The journal writes run beside the computing, never ahead of the batch's JSON: a slow
    disk (each write 50 ms) must not let a batch be adopted before its frames are all there."""
    import threading

    import asdcli.store as store_module

    data = make_dataset(tmp_path / "d", machines=("fan",), n_train=12, n_test=4)
    monkeypatch.setattr(featurize_module, "TASK_FILES", 2)  # 8 tasks
    real_save, real_adopt = featurize_module.save_frames, store_module.StoreWriter.adopt_batch
    writers, adopted = [], []

    def slow_save(path, frames):
        writers.append(threading.current_thread().name)
        time.sleep(0.05)
        real_save(path, frames)

    def checked_adopt(self, frames_path, records, frames=None):
        on_disk = np.load(frames_path)
        assert on_disk.shape == (sum(r.n_frames for r in records), FS.n_mels)
        np.testing.assert_array_equal(on_disk, frames)
        adopted.append(frames_path)
        real_adopt(self, frames_path, records, frames)

    monkeypatch.setattr(featurize_module, "save_frames", slow_save)
    monkeypatch.setattr(store_module.StoreWriter, "adopt_batch", checked_adopt)
    store = tmp_path / "f.h5"
    assert featurize([data], FS, store, workers=workers).new == 16
    assert len(adopted) == 8
    # This process's tasks (at least the first) are written by its journal thread; a helper
    # writes its own (this test's patch does not reach it).
    assert 1 <= len(writers) <= 8 and (workers == 2 or len(writers) == 8)
    assert all(name.startswith("asd-journal") for name in writers)
    reference = tmp_path / "ref.h5"
    monkeypatch.setattr(featurize_module, "save_frames", real_save)
    featurize([data], FS, reference)
    a, b = stored(store), stored(reference)
    assert list(a) == list(b)
    for path, (_, x) in a.items():
        np.testing.assert_array_equal(x, b[path][1])


def test_a_helpers_frames_are_read_back_by_a_thread_before_they_are_adopted(tmp_path, monkeypatch):
    """While this process computes, a helper's finished frames file is read back by the
    reader thread: the store gets exactly the frames the helper wrote."""
    import threading

    import asdcli.store as store_module

    data = make_dataset(tmp_path / "d", machines=("fan",), n_train=12, n_test=4)
    monkeypatch.setattr(featurize_module, "TASK_FILES", 1)  # 16 tasks
    real_compute, real_load = featurize_module._compute_frames, featurize_module.load_frames
    real_adopt = store_module.StoreWriter.adopt_batch

    def slow_compute(*args, **kwargs):  # this process only: the helper finishes tasks first
        time.sleep(0.1)
        return real_compute(*args, **kwargs)

    readers, handed = [], []

    def load(path, buffer=None):
        readers.append(threading.current_thread().name)
        return real_load(path, buffer)

    def adopt(self, frames_path, records, frames=None):
        if frames is not None:
            np.testing.assert_array_equal(np.load(frames_path), frames)
            handed.append(frames_path)
        real_adopt(self, frames_path, records, frames)

    monkeypatch.setattr(featurize_module, "_compute_frames", slow_compute)
    monkeypatch.setattr(featurize_module, "load_frames", load)
    monkeypatch.setattr(store_module.StoreWriter, "adopt_batch", adopt)
    store = tmp_path / "f.h5"
    assert featurize([data], FS, store, workers=2).new == 16
    assert readers and all(name.startswith("asd-reader") for name in readers)
    assert len(handed) == 16 and len(readers) <= 16  # each read back at most once
    monkeypatch.setattr(featurize_module, "_compute_frames", real_compute)
    reference = tmp_path / "ref.h5"
    featurize([data], FS, reference)
    a, b = stored(store), stored(reference)
    assert list(a) == list(b)
    for path, (_, x) in a.items():
        np.testing.assert_array_equal(x, b[path][1])


def test_a_task_batches_equal_length_clips_and_keeps_the_order(tmp_path):
    d = tmp_path / "d" / "fan" / "train"
    files = []
    for i, seconds in enumerate([1.0, 1.0, 1.0, 0.5, 1.0, 1.0]):
        files.append(write_clip(d / f"section_00_source_train_normal_{i:04d}.wav", seconds, seed=i))
    (d / "section_00_source_train_normal_0099.wav").write_text("not audio")
    files.insert(2, d / "section_00_source_train_normal_0099.wav")
    frames_path = tmp_path / "batch.npy"
    out = featurize_module._compute([str(f) for f in files], FS.model_dump_json(), str(frames_path))
    assert [path for path, _, _ in out] == [str(f) for f in files]
    assert isinstance(out[2][2], str) and "not a readable audio file" in out[2][2]
    frames = np.load(frames_path)  # (frames, n_mels): the readable clips one after another
    start = 0
    for f, (_, facts, n) in zip(files, out, strict=True):
        if isinstance(n, str):
            continue
        alone = logmel(read_audio(f, FS.sample_rate).samples, FS)  # one clip, no batch
        assert n == alone.shape[1]
        np.testing.assert_array_equal(frames[start : start + n].T, alone)
        start += n
        assert facts["duration"] == sf.info(f).duration
    assert start == len(frames)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_reading_equals_libsndfile_float_conversion(tmp_path, subtype):
    path = write_clip(tmp_path / "x.wav", subtype=subtype)
    expected, sr = sf.read(path, dtype="float32")
    clip = read_audio(path, sr)
    assert clip.samples.dtype == np.float32
    np.testing.assert_array_equal(clip.samples, expected)


def test_featurize_does_not_import_torch(dataset, tmp_path):
    code = (
        "import sys; from pathlib import Path; from asdcli.featurize import featurize; "
        "from asdcli.settings import FeatureSettings; "
        f"featurize([Path({str(dataset)!r})], FeatureSettings(n_mels=32), "
        f"Path({str(tmp_path / 'f.h5')!r})); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unreadable_files_are_skipped_and_listed_or_stop_with_strict(dataset, tmp_path):
    bad = dataset / "fan" / "test"
    (bad / "section_00_source_test_normal_0100_vel_1.wav").write_text("not audio")
    (bad / "section_00_source_test_normal_0101_vel_1.wav").write_bytes(b"")
    sf.write(
        bad / "section_00_source_test_normal_0102_vel_1.wav",
        np.array([0.0, np.nan] * 2000, np.float32),
        16000,
        subtype="FLOAT",
    )
    write_clip(bad / "section_00_source_test_normal_0103_vel_1.wav", seconds=0.01)
    s = featurize([dataset], FS, tmp_path / "f.h5")
    reasons = dict(s.skipped)
    assert len(reasons) == 4 and s.new == 20
    assert any("not a readable audio file" in r for r in reasons.values())
    assert any("empty" in r for r in reasons.values())
    assert any("NaN or Inf" in r for r in reasons.values())
    assert any("shorter than one analysis window" in r for r in reasons.values())
    with pytest.raises(DataError, match="--strict"):
        featurize([dataset], FS, tmp_path / "g.h5", strict=True)


def test_resampling_multichannel_and_silence(tmp_path):
    d = tmp_path / "d" / "pump" / "train"
    write_clip(d / "section_00_source_train_normal_0000.wav", sr=8000)
    t = np.arange(16000) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 500 * t)], axis=1) * 0.3
    sf.write(d / "section_00_source_train_normal_0001.wav", stereo.astype(np.float32), 16000)
    sf.write(d / "section_00_source_train_normal_0002.wav", np.zeros(16000, np.float32), 16000)
    s = featurize([tmp_path / "d"], FS, tmp_path / "f.h5")
    assert s.resampled == {8000: 1} and s.multichannel == 1 and s.new == 3
    clips = {c.name: (c, x) for c, x in stored(tmp_path / "f.h5").values()}
    c, x = clips["section_00_source_train_normal_0000.wav"]
    assert c.sample_rate == 8000 and x.shape[1] == 1 + 16000 // 512
    mono = clips["section_00_source_train_normal_0001.wav"]
    assert mono[0].channels == 2
    assert np.all(clips["section_00_source_train_normal_0002.wav"][1] == FS.db_floor)


def test_missing_path_and_empty_folder_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        featurize([tmp_path / "nope"], FS, tmp_path / "f.h5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No .wav files"):
        featurize([tmp_path / "empty"], FS, tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


def test_machine_without_test_folder_is_a_warning(tmp_path):
    make_dataset(tmp_path / "d", machines=("valve",), n_test=0)
    s = featurize([tmp_path / "d"], FS, tmp_path / "f.h5")
    assert any("valve: train/ but no test/" in w for w in s.warnings)


def _batches(store):
    journal = store.with_name(store.name + ".journal")
    return len(list(journal.glob("*.json"))) if journal.is_dir() else 0


@pytest.mark.slow
def test_kill_9_at_several_moments_then_rerun_matches_uninterrupted(tmp_path):
    data = make_dataset(tmp_path / "d", machines=("fan", "gear"), n_train=40, n_test=20)
    ref = tmp_path / "ref.h5"
    featurize([data], FeatureSettings(), ref)
    expected = stored(ref, FeatureSettings())
    store = tmp_path / "f.h5"
    env = dict(os.environ, ASD_FEATURIZE__BATCH_CLIPS="4")
    cmd = [sys.executable, "-m", "asdcli", "featurize", str(data), "--store", str(store)]
    moments = {  # kill -9 as soon as each condition holds (polled), whatever the machine's speed
        "at start": lambda: True,
        "after the first journal batch": lambda: _batches(store) >= 1,
        "mid-way": lambda: _batches(store) >= 12,
        "while committing": lambda: _batches(store) >= 1 and any(tmp_path.glob("f.h5.tmp-*")),
    }
    interrupted = 0
    for ready in moments.values():
        if store.exists():
            store.unlink()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Once the writer has started (any journal batch exists) the store file exists too.
        if ready is not moments["at start"]:
            assert store.exists()
        if store.exists():  # whatever is there opens with plain h5py and holds whole clips only
            with h5py.File(store, "r") as f:
                assert f.attrs["layout_version"] == 1
            for path, (_, x) in stored(store, FeatureSettings()).items():
                np.testing.assert_array_equal(x, expected[path][1])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        interrupted += "All 120 clips were cached" not in done.stdout
        final = stored(store, FeatureSettings())
        assert final.keys() == expected.keys()
        for path, (_, x) in final.items():
            np.testing.assert_array_equal(x, expected[path][1])
    assert interrupted >= 3  # the kills landed mid-work, not after the end
