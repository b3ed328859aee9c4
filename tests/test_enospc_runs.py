"""A full disk during `asd train` and `asd score` (issue 14): a clear error, earlier runs and
scorings intact, and a re-run after space is freed completes.

The fault is injected where every run file is written: ``asdcli.files`` sees ``os.fsync``
raise ENOSPC once a given number of files has been flushed, and for every file after that,
until the test "frees space".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from asdcli import files
from asdcli.cli import app
from asdcli.errors import RunError
from asdcli.featurize import featurize
from asdcli.files import DiskFullError, write_bytes, write_files
from asdcli.runs import load_run
from asdcli.settings import FeatureSettings

FS = FeatureSettings(n_mels=32)
runner = CliRunner()


class FullDisk:
    """Stands in for ``os`` in :mod:`asdcli.files`: ``fsync`` fails after ``room`` files."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= 1
        os.fsync(fd)


@pytest.fixture
def full_disk(monkeypatch):
    """``fill(room)`` makes the disk full after ``room`` more files; ``free()`` frees it."""

    class Control:
        def fill(self, room: int) -> None:
            monkeypatch.setattr(files, "os", FullDisk(room))

        def free(self) -> None:
            monkeypatch.setattr(files, "os", os)

    return Control()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def asd(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"ASD_FEATURES__N_MELS": "32"})


def disk_full_message(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.output[result.output.index("error:") :].strip()
    assert "The disk is full" in message and "Free some space" in message, message
    assert len(message.splitlines()) <= 2, message
    return message


# --- the writers ------------------------------------------------------------------------------


def test_write_bytes_on_a_full_disk_keeps_the_old_file(tmp_path, full_disk):
    path = tmp_path / "a.json"
    path.write_text("old")
    full_disk.fill(0)
    with pytest.raises(DiskFullError, match="a.json could not be written"):
        write_bytes(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left


def test_write_files_is_all_or_nothing(tmp_path, full_disk):
    targets = [tmp_path / f"{i}.csv" for i in range(4)]
    for p in targets:
        p.write_text("old")
    full_disk.fill(2)  # the third file does not fit
    with pytest.raises(DiskFullError, match="2.csv"):
        write_files({p: b"new" for p in targets})
    assert [p.read_text() for p in targets] == ["old"] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in targets]
    full_disk.free()
    assert write_files({p: b"new" for p in targets}) == targets
    assert [p.read_text() for p in targets] == ["new"] * 4


# --- train and score ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Path:
    data = make_dataset(tmp_path / "data", machines=("bearing", "fan"), n_train=4, n_test=4)
    featurize([data], FS, Path("features.h5"))
    return data


# lof writes, per run: manifest, settings, then per machine model, detector.json, thresholds,
# history, training scores, manifest; then the final manifest. These cut it at the start, in
# the first machine and in the second.
@pytest.mark.parametrize("room", [0, 1, 3, 10])
def test_full_disk_during_train(store, full_disk, room):
    assert asd("train", "lof", "-p", "n_neighbors=2").exit_code == 0
    (earlier,) = Path("runs").iterdir()
    before = snapshot(earlier)

    full_disk.fill(room)
    disk_full_message(asd("train", "lof", "-p", "n_neighbors=2"))
    assert snapshot(earlier) == before  # the earlier run is untouched and still scores
    failed = [p for p in Path("runs").iterdir() if p != earlier]
    for run in failed:  # none at all when not even the manifest could be written
        assert load_run(run, require_complete=False).status != "complete"
        with pytest.raises(RunError):
            load_run(run)
        assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))

    full_disk.free()
    assert asd("train", "lof", "-p", "n_neighbors=2").exit_code == 0
    (done,) = [p for p in Path("runs").iterdir() if p != earlier and p not in failed]
    assert load_run(done).status == "complete"
    assert asd("score", earlier).exit_code == 0
    assert asd("score", done).exit_code == 0


@pytest.mark.parametrize("room", [0, 2, 4])
def test_full_disk_during_score_keeps_the_previous_scoring(store, full_disk, room):
    assert asd("train", "lof", "-p", "n_neighbors=2").exit_code == 0
    (run,) = Path("runs").iterdir()
    assert asd("score", run, "--data", store / "bearing" / "test").exit_code == 0
    assert asd("evaluate", run, "--no-figures").exit_code == 0
    before = snapshot(run / "scores")
    assert sorted(before) == [
        "anomaly_score_bearing_section_00_test.csv",
        "decision_result_bearing_section_00_test.csv",
        "scores.csv",
    ]

    full_disk.fill(room)  # scoring both machines writes 5 files: none of them fits whole
    disk_full_message(asd("score", run))
    assert snapshot(run / "scores") == before  # not one new file, not one removed
    assert (run / "metrics.json").is_file()  # the metrics still describe those scores

    full_disk.free()
    assert asd("score", run).exit_code == 0
    after = snapshot(run / "scores")
    assert "anomaly_score_fan_section_00_test.csv" in after and len(after) == 5
    assert (run / "metrics.previous.json").is_file() and not (run / "metrics.json").exists()
