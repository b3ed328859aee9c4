"""The HDF5 store: layout, caching keys, atomic commits, journal recovery, locking, bad files."""

import h5py
import numpy as np
import pytest

import asdcli.store as store_module
from asdcli.errors import StoreError
from asdcli.store import ClipRecord, FeatureStore, StoreLocked, StoreWriter

SETTINGS = {"n_mels": 4}


def rec(i: int, n_frames: int, machine="fan", split="train") -> ClipRecord:
    return ClipRecord(
        name=f"c{i}.wav",
        machine=machine,
        split=split,
        path=f"/d/{machine}/{split}/c{i}.wav",
        size=100 + i,
        mtime_ns=1000 + i,
        n_frames=n_frames,
        attributes={"vel": str(i)},
    )


def feats(i: int, n_frames: int) -> np.ndarray:
    return np.arange(4 * n_frames, dtype=np.float32).reshape(4, n_frames) + 1000 * i


def test_round_trip_and_plain_h5py_layout(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k1", SETTINGS) as w:
        for i, n in enumerate([3, 5, 2]):
            w.add(rec(i, n), feats(i, n))
    store = FeatureStore(path)
    clips = store.clips("k1")
    assert [c.name for c in clips] == ["c0.wav", "c1.wav", "c2.wav"]
    assert clips[1].attributes == {"vel": "1"}
    for c, x in zip(clips, store.load("k1", clips), strict=True):
        i = int(c.name[1])
        np.testing.assert_array_equal(x, feats(i, c.n_frames))
    # Documented layout: frames[offset : offset + n_frames].T is the clip.
    with h5py.File(path) as f:
        g = f["features/k1"]
        off, n = g["clips/offset"][1], g["clips/n_frames"][1]
        np.testing.assert_array_equal(g["frames"][off : off + n].T, feats(1, 5))
    assert not (tmp_path / "f.h5.journal").exists()


def test_second_commit_appends_and_replaces_same_path(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k1", SETTINGS) as w:
        w.add(rec(0, 3), feats(0, 3))
        w.add(rec(1, 3), feats(1, 3))
    with StoreWriter(path, "k1", SETTINGS) as w:
        assert w.known()[rec(0, 3).path] == (100, 1000)
        w.add(rec(1, 2), feats(7, 2))  # same path, recomputed
        w.add(rec(2, 4), feats(2, 4))
    store = FeatureStore(path)
    clips = store.clips("k1")
    assert sorted(c.name for c in clips) == ["c0.wav", "c1.wav", "c2.wav"]
    by_name = dict(zip([c.name for c in clips], store.load("k1", clips), strict=True))
    np.testing.assert_array_equal(by_name["c1.wav"], feats(7, 2))
    np.testing.assert_array_equal(by_name["c0.wav"], feats(0, 3))


def test_feature_sets_never_mix(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "a", SETTINGS) as w:
        w.add(rec(0, 3), feats(0, 3))
    with StoreWriter(path, "b", {"n_mels": 2}) as w:
        w.add(rec(0, 3), np.ones((2, 3), np.float32))
    store = FeatureStore(path)
    assert {s.key: s.settings["n_mels"] for s in store.feature_sets()} == {"a": 4, "b": 2}
    np.testing.assert_array_equal(store.load("a", store.clips("a"))[0], feats(0, 3))


def test_wrong_shape_is_refused(tmp_path):
    with StoreWriter(tmp_path / "f.h5", "k", SETTINGS) as w, pytest.raises(ValueError):
        w.add(rec(0, 3), np.zeros((5, 3), np.float32))


def test_interrupted_writer_leaves_old_store_and_journal_is_recovered(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k", SETTINGS) as w:
        w.add(rec(0, 3), feats(0, 3))
    before = path.read_bytes()
    # A writer that dies after journalling a batch but before committing (as kill -9 would).
    w = StoreWriter(path, "k", SETTINGS, batch_clips=1).__enter__()
    w.add(rec(1, 2), feats(1, 2))  # batch_clips=1: journalled at once
    w.batch_clips = 10
    w.add(rec(2, 2), feats(2, 2))  # queued, never journalled: lost work
    (tmp_path / "f.h5.tmp-999").write_bytes(b"half-written commit")
    w._unlock()
    assert path.read_bytes() == before  # the live file was never touched
    with pytest.warns(UserWarning, match="interrupted featurize"):
        assert [c.name for c in FeatureStore(path).clips("k")] == ["c0.wav"]
    with StoreWriter(path, "k", SETTINGS):  # the next writer merges the journal first
        pass
    assert [c.name for c in FeatureStore(path).clips("k")] == ["c0.wav", "c1.wav"]
    assert not list(tmp_path.glob("f.h5.tmp-*"))


def test_exception_inside_writer_still_commits_finished_clips(tmp_path):
    path = tmp_path / "f.h5"
    with pytest.raises(KeyboardInterrupt), StoreWriter(path, "k", SETTINGS) as w:
        w.add(rec(0, 3), feats(0, 3))
        raise KeyboardInterrupt
    assert len(FeatureStore(path).clips("k")) == 1


def test_second_writer_fails_with_clear_message(tmp_path):
    path = tmp_path / "f.h5"
    with (
        StoreWriter(path, "k", SETTINGS),
        pytest.raises(StoreLocked, match="Another asd process .* is writing"),
    ):
        StoreWriter(path, "k", SETTINGS).__enter__()
    with StoreWriter(path, "k", SETTINGS):  # released on exit
        pass


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"hello, I am text\n", "not an HDF5 feature store"),
        (b"", "not an HDF5 feature store"),
    ],
)
def test_bad_files_are_refused_and_left_alone(tmp_path, content, needle):
    path = tmp_path / "f.h5"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=needle):
        FeatureStore(path)
    with pytest.raises(StoreError, match=needle):
        StoreWriter(path, "k", SETTINGS).__enter__()
    assert path.read_bytes() == content


def test_truncated_store_other_hdf5_and_other_layout_version(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k", SETTINGS) as w:
        w.add(rec(0, 300), feats(0, 300))
    data = path.read_bytes()
    trunc = tmp_path / "t.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="truncated"):
        FeatureStore(trunc).clips("k")
    other = tmp_path / "o.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="not an asd feature store"):
        FeatureStore(other)
    with h5py.File(path, "a") as f:
        f.attrs["layout_version"] = 99
    with pytest.raises(StoreError, match="layout version 99"):
        FeatureStore(path)


def test_missing_store_says_how_to_make_one(tmp_path):
    with pytest.raises(StoreError, match="asd featurize"):
        FeatureStore(tmp_path / "nope.h5")


def test_reader_refuses_offsets_from_a_store_rewritten_meanwhile(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k", SETTINGS) as w:
        w.add(rec(0, 3), feats(0, 3))
    store = FeatureStore(path)
    clips = store.clips("k")
    with StoreWriter(path, "k", SETTINGS) as w:  # another featurize commits a new file
        w.add(rec(1, 2), feats(1, 2))
    with pytest.raises(StoreError, match="rewritten by another featurize"):
        store.load("k", clips)
    assert len(FeatureStore(path).clips("k")) == 2  # a fresh reader sees the new store


def test_a_new_store_exists_and_opens_from_the_writers_first_moment(tmp_path):
    path = tmp_path / "f.h5"
    w = StoreWriter(path, "k", SETTINGS).__enter__()
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "asdcli-features"
    assert FeatureStore(path).clips("k") == []
    w.__exit__(None, None, None)


def test_batches_are_bounded_in_bytes_and_a_long_clip_still_fits(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "JOURNAL_BATCH_BYTES", 10 * 4 * 4)  # 10 frames of 4 mels
    path = tmp_path / "f.h5"
    lengths = [4, 4, 4, 15, 3, 4]  # the 15-frame clip is a batch of its own
    w = StoreWriter(path, "k", SETTINGS, batch_clips=100).__enter__()
    for i, n in enumerate(lengths):
        w.add(rec(i, n), feats(i, n))
    journal = sorted((tmp_path / "f.h5.journal").glob("*.npz"))
    assert [len(np.load(b)["frames"]) for b in journal] == [8, 4, 15]  # 4+4, 4, 15; 3+4 queued
    w.__exit__(None, None, None)
    store = FeatureStore(path)
    clips = store.clips("k")
    assert [c.n_frames for c in clips] == lengths
    for c, x in zip(clips, store.load("k", clips), strict=True):
        np.testing.assert_array_equal(x, feats(int(c.name[1:-4]), c.n_frames))
