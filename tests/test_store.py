"""The HDF5 store: layout, caching keys, atomic commits, journal recovery, locking, bad files."""

import json

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
    journal = sorted((tmp_path / "f.h5.journal").glob("*.npy"))
    assert [len(np.load(b)) for b in journal] == [8, 4, 15]  # 4+4, 4, 15; 3+4 queued
    w.__exit__(None, None, None)
    store = FeatureStore(path)
    clips = store.clips("k")
    assert [c.n_frames for c in clips] == lengths
    for c, x in zip(clips, store.load("k", clips), strict=True):
        np.testing.assert_array_equal(x, feats(int(c.name[1:-4]), c.n_frames))


def _snapshot(path):
    """Every feature set's clip table and features, as plain values."""
    out = {}
    with h5py.File(path, "r") as f:
        keys = list(f["features"])
    store = FeatureStore(path)
    for key in keys:
        clips = store.clips(key)
        out[key] = {
            c.path: (c.n_frames, c.size, c.attributes, x.tolist())
            for c, x in zip(clips, store.load(key, clips), strict=True)
        }
    return out


def _build(path, *, stage: bool, monkeypatch):
    """Two commits into ``path``: the second supersedes a clip, adds one, and leaves another
    feature set alone; with ``stage`` False the second commit merges the journal instead."""
    with StoreWriter(path, "k1", SETTINGS, batch_clips=2) as w:
        for i, n in enumerate([3, 5, 2]):
            w.add(rec(i, n), feats(i, n))
    with StoreWriter(path, "k2", SETTINGS) as w:
        w.add(rec(9, 4), feats(9, 4))
    with monkeypatch.context() as m:
        if not stage:
            m.setattr(StoreWriter, "_room_to_stage", lambda self, nbytes: False)
        with StoreWriter(path, "k1", SETTINGS, batch_clips=1) as w:
            w.add(rec(1, 6), feats(7, 6))  # c1 again, other features
            w.add(rec(3, 1), feats(3, 1))
            assert isinstance(w._staging, store_module._Staging) is stage


def test_a_staged_commit_equals_merging_the_journal(tmp_path, monkeypatch):
    staged, merged = tmp_path / "staged.h5", tmp_path / "merged.h5"
    _build(staged, stage=True, monkeypatch=monkeypatch)
    _build(merged, stage=False, monkeypatch=monkeypatch)
    a, b = _snapshot(staged), _snapshot(merged)
    assert a == b
    assert a["k1"]["/d/fan/train/c1.wav"][3] == feats(7, 6).tolist()  # the newer version
    assert set(a["k1"]) == {f"/d/fan/train/c{i}.wav" for i in range(4)} and len(a["k2"]) == 1
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.journal"))


def test_batches_of_frames_written_elsewhere_are_adopted_and_orphans_removed(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k", SETTINGS) as w:
        frames_path = w.reserve_batch()  # as a worker process does
        store_module.save_frames(frames_path, np.concatenate([feats(0, 3).T, feats(1, 2).T]))
        w.adopt_batch(frames_path, [rec(0, 3), rec(1, 2)])
        orphan = w.reserve_batch()  # a task whose results never came back
        store_module.save_frames(orphan, feats(2, 2).T.copy())
        wrong = w.reserve_batch()
        store_module.save_frames(wrong, feats(5, 2).T.copy())
        with pytest.raises(ValueError, match="not the records"):
            w.adopt_batch(wrong, [rec(5, 9)])  # frames that do not fit the records
    store = FeatureStore(path)
    clips = store.clips("k")
    assert [c.name for c in clips] == ["c0.wav", "c1.wav"]
    for c, x in zip(clips, store.load("k", clips), strict=True):
        np.testing.assert_array_equal(x, feats(int(c.name[1]), c.n_frames))
    assert orphan.exists()  # no batch JSON: not part of the store ...
    with StoreWriter(path, "k", SETTINGS):
        pass
    assert not orphan.exists()  # ... and the next writer removes it


def test_a_journal_left_by_asd_0_2_is_still_merged(tmp_path):
    """Batches were one .npz archive (frames and JSON) before 0.3."""
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k", SETTINGS) as w:
        w.add(rec(0, 3), feats(0, 3))
    jdir = tmp_path / "f.h5.journal"
    jdir.mkdir()
    row = store_module._record_row(rec(1, 2))
    meta = {"key": "k", "settings": json.dumps(SETTINGS, sort_keys=True), "records": [row]}
    with open(jdir / "00000000000000000001-1-000001.npz", "wb") as fh:
        np.savez(fh, frames=feats(1, 2).T, meta=np.array(json.dumps(meta)))
    with pytest.warns(UserWarning, match="1 batch"):
        FeatureStore(path)
    with StoreWriter(path, "k", SETTINGS):
        pass
    store = FeatureStore(path)
    clips = store.clips("k")
    assert [c.name for c in clips] == ["c0.wav", "c1.wav"]
    np.testing.assert_array_equal(store.load("k", clips)[1], feats(1, 2))
    assert not jdir.exists()


def test_stored_clips_read_on_access_what_load_reads(tmp_path):
    path = tmp_path / "f.h5"
    with StoreWriter(path, "k", SETTINGS) as w:
        for i, n in enumerate([3, 5, 2]):
            w.add(rec(i, n), feats(i, n))
    store = FeatureStore(path)
    clips = store.clips("k")
    with store.lazy("k", clips[::-1]) as lazy:
        assert len(lazy) == 3 and lazy.lengths.tolist() == [2, 5, 3]
        for x, y in zip(lazy, store.load("k", clips[::-1]), strict=True):
            np.testing.assert_array_equal(x, y)
            assert x.flags.c_contiguous and x.dtype == np.float32
        np.testing.assert_array_equal(lazy.window(1, 1, 3), feats(1, 5)[:, 1:4])
        with pytest.raises(IndexError):
            lazy.window(1, 3, 3)
    with StoreWriter(path, "k", SETTINGS) as w:  # rewritten: a new generation
        w.add(rec(4, 1), feats(4, 1))
    with pytest.raises(StoreError, match="rewritten"):
        store.lazy("k", clips)[0]


@pytest.mark.parametrize("shape", [(313, 128), (7, 40), (1, 3), (0, 128)])
@pytest.mark.parametrize("direct", [True, False])
def test_journal_frames_are_a_npy_whose_data_starts_on_a_block_with_or_without_direct_io(
    tmp_path, monkeypatch, shape, direct
):
    if not direct:  # as on a file system without O_DIRECT (tmpfs before Linux 6.6) or another OS
        monkeypatch.setattr(store_module, "_open_direct", lambda path, flags: None)
    frames = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    path = tmp_path / "b.npy"
    store_module.save_frames(path, frames[::1])  # any float32 (frames, n_mels) array
    assert path.stat().st_size == store_module.FRAMES_HEADER + frames.nbytes  # no padding left
    np.testing.assert_array_equal(np.load(path), frames)
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), frames)  # as a merge reads it
    with StoreWriter(tmp_path / "f.h5", "k", {"n_mels": shape[1]}) as w:
        np.testing.assert_array_equal(w._read_frames(path), frames)
        np.save(tmp_path / "plain.npy", frames)  # NumPy's own 128-byte header is read too
        np.testing.assert_array_equal(w._read_frames(tmp_path / "plain.npy"), frames)
        if frames.size:
            (tmp_path / "cut.npy").write_bytes(path.read_bytes()[:-4])
            with pytest.raises(ValueError, match="truncated"):
                w._read_frames(tmp_path / "cut.npy")


def test_journal_frames_use_direct_io_where_the_file_system_has_it(tmp_path):
    """O_DIRECT where the file system takes it; else (old tmpfs, /dev/full, no O_DIRECT) None."""
    import fcntl
    import os

    fd = store_module._open_direct(tmp_path / "x.npy", os.O_WRONLY | os.O_CREAT)
    if fd is None:
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        os.close(fd)
    assert store_module._open_direct(tmp_path, os.O_RDONLY) is None  # not a regular file


def _blocks(n_mels: int = 40) -> list[np.ndarray]:
    """Clips of uneven lengths, some as transposed (Fortran-ordered) views as featurize has
    them: their sizes are not whole blocks, so pieces end mid-clip."""
    rng = np.random.default_rng(1)
    out = []
    for i, n in enumerate([7, 313, 1, 50, 313, 2]):
        x = rng.standard_normal((n_mels, n)).astype(np.float32)
        out.append(x.T if i % 2 else x.T.copy())
    return out


@pytest.mark.parametrize("direct", [True, False])
def test_streamed_frames_are_the_same_file_as_frames_saved_at_once(tmp_path, monkeypatch, direct):
    import os
    import threading

    if not direct:
        monkeypatch.setattr(store_module, "_open_direct", lambda path, flags: None)
    monkeypatch.setattr(store_module, "STREAM_BYTES", 8192)  # several pieces per file
    blocks = _blocks()
    store_module.save_frames(tmp_path / "ref.npy", np.concatenate(blocks))  # at once
    real_write, pieces = store_module._write_all, []

    def recorded(fd, data, offset):
        pieces.append((offset, data.nbytes, threading.current_thread().name))
        return real_write(fd, data, offset)

    monkeypatch.setattr(store_module, "_write_all", recorded)
    with store_module.StreamedFrames(tmp_path / "s.npy", 40) as out:
        for b in blocks:
            out.append(b)
    assert (tmp_path / "s.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.concatenate(blocks))
    probe = store_module._open_direct(tmp_path / "probe", os.O_WRONLY | os.O_CREAT)
    if not direct or probe is None:
        assert pieces == []  # written normally, at the end
        return
    os.close(probe)
    early = [p for p in pieces if p[2].startswith("asd-frames")]
    assert len(early) >= 2  # while appending, in the writing thread
    assert all(off % store_module.FRAMES_HEADER == 0 and n % 4096 == 0 for off, n, _ in pieces)
    written = sorted((off, n) for off, n, _ in pieces)
    assert written[0] == (0, store_module.FRAMES_HEADER)  # the header, last of all
    assert pieces[-1][0] == 0
    for (a, n), (b, _) in zip(written, written[1:], strict=False):
        assert a + n == b  # every byte once, no gap


def test_a_streamed_write_refused_as_misaligned_is_done_normally(tmp_path, monkeypatch):
    import errno
    import os

    fd = store_module._open_direct(tmp_path / "probe", os.O_WRONLY | os.O_CREAT)
    if fd is None:
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    os.close(fd)
    monkeypatch.setattr(store_module, "STREAM_BYTES", 8192)
    calls = []

    def einval(fd, data, offset):
        calls.append(offset)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(store_module.os, "pwrite", einval)
    blocks = _blocks()
    with store_module.StreamedFrames(tmp_path / "s.npy", 40) as out:
        for b in blocks:
            out.append(b)
    assert len(calls) == 1  # the first piece is refused: direct I/O is off for the rest
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.concatenate(blocks))


@pytest.mark.parametrize("direct", [True, False])
def test_a_streamed_frames_file_is_removed_when_the_disk_is_full_or_the_caller_fails(
    tmp_path, monkeypatch, direct
):
    import errno

    if not direct:
        monkeypatch.setattr(store_module, "_open_direct", lambda path, flags: None)
    monkeypatch.setattr(store_module, "STREAM_BYTES", 8192)
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_room(*args):
        raise full

    monkeypatch.setattr(store_module.os, "pwrite", no_room)
    monkeypatch.setattr(store_module, "open", no_room, raising=False)  # the normal write
    path = tmp_path / "s.npy"
    with pytest.raises(OSError, match="No space"), store_module.StreamedFrames(path, 40) as out:
        for b in _blocks():
            out.append(b)
    assert not path.exists()
    # The caller's error is not hidden by the write's.
    with (
        pytest.raises(KeyError, match="the caller's"),
        store_module.StreamedFrames(path, 40) as out,
    ):
        for b in _blocks()[:2]:  # the second starts a write, whose error is not seen yet
            out.append(b)
        raise KeyError("the caller's")
    assert not path.exists()
    with store_module.StreamedFrames(path, 40):
        pass  # nothing appended (no readable clip): no file
    assert not path.exists()
    with pytest.raises(ValueError, match="expected"):
        store_module.StreamedFrames(path, 40).append(np.zeros((3, 41), dtype=np.float32))


def test_a_write_the_file_system_refuses_as_misaligned_is_done_normally(tmp_path, monkeypatch):
    import errno
    import os

    fd = store_module._open_direct(tmp_path / "probe", os.O_WRONLY | os.O_CREAT)
    if fd is None:
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    os.close(fd)
    real_write = os.pwrite

    def einval(fd, data, offset):
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data, offset)

    monkeypatch.setattr(store_module.os, "pwrite", einval)
    frames = np.arange(12, dtype=np.float32).reshape(3, 4)
    store_module.save_frames(tmp_path / "b.npy", frames)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), frames)
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(
        store_module.os, "pwrite", lambda fd, data, offset: (_ for _ in ()).throw(disk_full)
    )
    with pytest.raises(OSError, match="No space"):
        store_module.save_frames(tmp_path / "c.npy", frames)  # a full disk is not retried


@pytest.mark.parametrize(
    "sizes", [[3, 5], [1024], [1000, 30, 2100, 1024, 7], [4096, 1], [1023, 1, 1025]]
)
def test_frames_staged_in_whole_chunks_are_the_frames_a_merge_writes(tmp_path, sizes):
    """Staging writes whole HDF5 chunks itself and holds the rest until a chunk is full; the
    store must hold exactly what folding the journal into a new file gives, old clips after."""

    def block(i, n):
        return (np.arange(4 * n, dtype=np.float32).reshape(4, n) * 0.5 + i).astype(np.float32)

    contents = []
    for staged in (True, False):
        path = tmp_path / f"{staged}.h5"
        with StoreWriter(path, "k", SETTINGS) as w:
            w.add(rec(100, 9), block(100, 9))  # an old clip, kept by the next commit
        with StoreWriter(path, "k", SETTINGS, batch_clips=1) as w:
            if not staged:
                w._staging = False  # as after a staging error: the commit merges the journal
            for i, n in enumerate(sizes):
                w.add(rec(i, n), block(i, n))
            assert isinstance(w._staging, store_module._Staging) == staged
        store = FeatureStore(path)
        clips = store.clips("k")
        contents.append(([c.path for c in clips], store.load("k", clips)))
        with h5py.File(path) as f:
            assert f["features/k/frames"].shape == (9 + sum(sizes), 4)
    (paths, staged_x), (merged_paths, merged_x) = contents
    assert paths == merged_paths and len(paths) == len(sizes) + 1
    for x, y in zip(staged_x, merged_x, strict=True):
        np.testing.assert_array_equal(x, y)
    for p, x in zip(paths, staged_x, strict=True):
        i = 100 if p.endswith("c100.wav") else int(p.rsplit("c", 1)[1].split(".")[0])
        np.testing.assert_array_equal(x, block(i, x.shape[1]))
