"""Issue 14 item 4: a full disk during featurize is a clear user error, and nothing is lost.

The disk is "filled" by fault injection: journal batches after the first ``GOOD`` ones are
written to ``/dev/full`` (a real ENOSPC from the kernel) and, where the commit must fail too,
the HDF5 writing raises ENOSPC as h5py does. A re-run with the fault gone must finish.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

import asdcli.featurize as featurize_module
import asdcli.store as store_module
from asdcli.cli import app
from asdcli.errors import UserError
from asdcli.featurize import featurize
from asdcli.settings import FeatureSettings
from asdcli.store import FeatureStore, StoreFull

FS = FeatureSettings(n_mels=16)
BATCH = 4  # clips per journal batch
GOOD = 2  # journal batches written before the disk is full

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, good: int, commit_fails: bool) -> list[int]:
    """From the ``good + 1``-th journal batch on, writes fail with ENOSPC; with
    ``commit_fails`` the commit (a new HDF5 file) fails too. Returns the batch sizes written.

    A batch is in the journal once its JSON is written (whoever wrote its frames), so that is
    the write that fails.
    """
    save = store_module._save_meta
    written: list[int] = []

    def full_after(path: Path, meta: str) -> None:
        if len(written) >= good:
            with open("/dev/full", "w") as fh:  # raises OSError(ENOSPC) when flushed
                fh.write(meta)
        save(path, meta)
        written.append(len(json.loads(meta)["records"]))

    monkeypatch.setattr(store_module, "_save_meta", full_after)
    if commit_fails:

        def no_room(*args: object) -> None:
            raise OSError(errno.ENOSPC, "Can't write data (file write failed: errno = 28)")

        monkeypatch.setattr(store_module, "_write_table", no_room)  # merged or staged
    return written


def contents(path: Path) -> dict[str, np.ndarray]:
    store = FeatureStore(path)
    clips = store.clips(FS.key())
    return {c.path: x for c, x in zip(clips, store.load(FS.key(), clips), strict=True)}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data", machines=("fan", "pump"), n_train=6, n_test=4)


def test_full_disk_keeps_every_committed_clip_and_a_rerun_finishes(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = tmp_path / "ref.h5"
    featurize([data], FS, ref)
    expected = contents(ref)
    path = tmp_path / "f.h5"
    featurize([data / "fan"], FS, path)  # an earlier commit: 10 clips
    before = contents(path)

    fill_disk_after(monkeypatch, GOOD, commit_fails=False)
    with pytest.raises(StoreFull) as exc:
        featurize([data], FS, path, batch_clips=BATCH)  # fan cached, pump's clips new
    assert isinstance(exc.value, UserError) and exc.value.exit_code == 2
    msg = str(exc.value)
    assert "\n" not in msg and "is full" in msg and "run the same command again" in msg
    assert f"holds the {GOOD * BATCH} clip(s) saved before" in msg
    # The store opens; it holds the earlier commit and the batches written before the error.
    after = contents(path)
    assert set(before) < set(after) and len(after) == len(before) + GOOD * BATCH
    assert not list(tmp_path.glob("f.h5.tmp-*")) and not list(tmp_path.glob("f.h5.journal/*"))
    for p, x in after.items():
        np.testing.assert_array_equal(x, expected[p])

    monkeypatch.undo()  # space freed
    again = featurize([data], FS, path, batch_clips=BATCH)
    assert again.new == 10 - GOOD * BATCH and again.cached == 10 + GOOD * BATCH
    final = contents(path)
    assert set(final) == set(expected)
    for p, x in final.items():
        np.testing.assert_array_equal(x, expected[p])


def test_full_disk_during_the_commit_leaves_the_old_store_and_the_journal(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.h5"
    featurize([data / "fan"], FS, path)
    before = contents(path)
    fill_disk_after(monkeypatch, GOOD, commit_fails=True)
    with pytest.raises(StoreFull, match=f"{GOOD * BATCH} saved clip\\(s\\) wait in its journal"):
        featurize([data / "pump"], FS, path, batch_clips=BATCH)
    monkeypatch.undo()
    assert not list(tmp_path.glob("f.h5.tmp-*"))  # the half-written new file is gone
    with pytest.warns(UserWarning, match="not merged yet"):
        after = contents(path)
    assert after.keys() == before.keys()
    assert len(list((tmp_path / "f.h5.journal").glob("*.json"))) == GOOD
    again = featurize([data], FS, path, batch_clips=BATCH)
    assert again.new == 10 - GOOD * BATCH and again.cached == 10 + GOOD * BATCH
    assert len(contents(path)) == 20


def test_full_disk_before_the_first_batch_and_for_a_new_store(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk_after(monkeypatch, 0, commit_fails=False)
    with pytest.raises(StoreFull, match="is full: the store is intact. Free some space"):
        featurize([data], FS, tmp_path / "f.h5", batch_clips=BATCH)
    assert FeatureStore(tmp_path / "f.h5").clips(FS.key()) == []

    def no_room(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "Unable to synchronously create file")

    monkeypatch.setattr(h5py, "File", no_room)
    with pytest.raises(StoreFull):
        featurize([data], FS, tmp_path / "new.h5")
    monkeypatch.undo()
    assert not (tmp_path / "new.h5").exists() and not list(tmp_path.glob("new.h5.tmp-*"))


def test_cli_says_the_disk_is_full_in_one_line_with_exit_2(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk_after(monkeypatch, GOOD, commit_fails=True)
    store = tmp_path / "f.h5"
    env = {"ASD_FEATURES__N_MELS": "16", "ASD_FEATURIZE__BATCH_CLIPS": str(BATCH)}
    r = CliRunner().invoke(app, ["featurize", str(data), "--store", str(store)], env=env)
    assert r.exit_code == 2, r.output
    (line,) = [ln for ln in r.output.splitlines() if "error:" in ln]
    assert "is full" in line and "Free some space and run the same command again" in line
    assert "Traceback" not in r.output and "bug in asd" not in r.output
    monkeypatch.undo()
    r = CliRunner().invoke(app, ["featurize", str(data), "--store", str(store)], env=env)
    assert r.exit_code == 0, r.output
    assert f"{20 - GOOD * BATCH} computed, {GOOD * BATCH} cached" in r.output


def test_a_commit_that_cannot_fit_is_refused_before_hdf5_starts(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDF5 running out of space mid-write can leave h5py unable to close its file, so the
    room a commit needs (old store + journal) is checked first."""
    path = tmp_path / "f.h5"
    featurize([data / "fan"], FS, path)
    opened: list[str] = []
    h5file = h5py.File

    def spy(name: object, *args: object, **kwargs: object) -> object:
        opened.append(str(name))
        return h5file(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", spy)
    free = SimpleNamespace(f_blocks=1000, f_bavail=100, f_frsize=4096)  # 400 KiB free
    monkeypatch.setattr(os, "statvfs", lambda p: free)
    with pytest.raises(StoreFull, match="10 saved clip\\(s\\) wait in its journal"):
        featurize([data / "pump"], FS, path)
    assert not [p for p in opened if ".tmp-" in p]  # no new HDF5 file was begun
    with pytest.warns(UserWarning, match="not merged yet"):
        assert len(contents(path)) == 10
    # A file system that reports no size is not second-guessed.
    free.f_blocks = 0
    assert featurize([data], FS, path).cached == 20


def test_a_full_disk_while_the_journal_thread_writes_frames_is_the_store_full_error(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frames of this process's tasks are written by a thread: its ENOSPC must still
    reach the user as StoreFull, with the store as it was."""
    path = tmp_path / "f.h5"
    featurize([data / "fan"], FS, path)
    before = contents(path)

    def no_room(frames_path: Path, frames: np.ndarray) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(featurize_module, "save_frames", no_room)
    with pytest.raises(StoreFull, match="is full: the store is intact"):
        featurize([data], FS, path)
    assert contents(path).keys() == before.keys()


def test_a_full_disk_with_helpers_writing_frames_is_the_store_full_error(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Helpers write their frames themselves (in a thread, while they compute): their ENOSPC
    must reach the user as StoreFull too, with the store as it was; a re-run finishes."""
    path = tmp_path / "f.h5"
    featurize([data / "fan"], FS, path)
    before = contents(path)
    real_reserve = store_module.StoreWriter.reserve_batch

    helpers_got: list[Path] = []

    def onto_a_full_disk(self: store_module.StoreWriter) -> Path:
        frames = real_reserve(self)
        if sys._getframe(1).f_code.co_name == "_with_helpers":  # a helper's task, not ours
            frames.symlink_to("/dev/full")
            helpers_got.append(frames)
        return frames

    real_compute = featurize_module._compute_frames

    def slow_compute(*args: object, **kwargs: object) -> object:  # here: helpers get tasks
        time.sleep(0.2)
        return real_compute(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(featurize_module, "TASK_FILES", 1)
    monkeypatch.setattr(featurize_module, "_compute_frames", slow_compute)
    monkeypatch.setattr(store_module.StoreWriter, "reserve_batch", onto_a_full_disk)
    with pytest.raises(StoreFull, match="is full"):
        featurize([data], FS, path, workers=2)
    assert helpers_got  # only helpers' writes failed: the error came from one
    monkeypatch.undo()
    after = contents(path)
    assert set(after) >= set(before)
    for p, x in before.items():
        np.testing.assert_array_equal(after[p], x)
    again = featurize([data], FS, path, workers=2)  # space freed: the rest is done
    assert again.new + again.cached == 20 and not list(tmp_path.glob("f.h5.journal/*"))
