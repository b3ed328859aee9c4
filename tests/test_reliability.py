"""Reliability (issue 5): every bad input gets a clear answer, nothing saved is ever lost.

User errors exit 2 with one or two lines naming the file or value and no traceback; unreadable
clips are skipped and listed; writes are atomic; nothing saved is corrupted or overwritten.

Rows already covered elsewhere (not repeated here):

- text / empty / NaN / too-short WAV skipped with a reason, ``--strict`` stops:
  test_featurize.py::test_unreadable_files_are_skipped_and_listed_or_stop_with_strict
- one other sample rate, multi-channel mix-down, silence:
  test_featurize.py::test_resampling_multichannel_and_silence
- missing path, folder without WAVs: test_featurize.py::test_missing_path_and_empty_folder_...,
  test_cli.py::test_user_errors_exit_2_with_one_message_and_no_traceback
- kill -9 during featurize at several moments, re-run completes:
  test_featurize.py::test_kill_9_at_several_moments_then_rerun_matches_uninterrupted
- store that is text, empty, truncated, other HDF5, other layout version, missing:
  test_store.py::test_bad_files_are_refused_and_left_alone, ::test_truncated_store_other_hdf5_...,
  ::test_missing_store_says_how_to_make_one, test_cli.py::test_store_that_is_not_hdf5_is_...
- atomic commits, journal recovery, second writer locked out: test_store.py::test_interrupted_...,
  ::test_exception_inside_writer_still_commits_finished_clips, ::test_second_writer_fails_...
- impossible settings values, unknown keys, YAML syntax errors, a scalar ASD_ of the wrong type:
  test_settings.py::test_impossible_values_are_named, ::test_unknown_yaml_key_and_syntax_error_...
- Ctrl-C during training (in process), incomplete run refused unless --allow-incomplete:
  test_train.py::test_ctrl_c_marks_run_incomplete_and_keeps_weights
- store without the run's features, run without a machine's model (trained on fewer machines),
  unknown detector, no CUDA, bad --param: test_train.py::test_scoring_a_store_without_the_runs_...,
  ::test_run_missing_a_machine_is_reported, ::test_cli_user_errors
- malformed score / decision CSVs, unlabeled clips counted: test_evaluate.py::test_malformed_...,
  ::test_decisions_for_other_clips_are_a_data_error, ::test_unlabeled_clips_counted_not_evaluated

Rows here: 1 unreadable WAVs (random bytes, truncated header, cut mid-data); 2 mixed sample rates;
3 spaces and non-ASCII paths end to end; 4 duplicate clip names across folders; 5 names of no
DCASE pattern end to end; 6 runs whose training process died; 7 kill -9 during `asd train`;
8 Ctrl-C during `asd featurize`; 9 run folders of another version or missing a model;
10 settings round-trip through YAML (property test); 11 ASD_ list variables of the wrong type.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset, write_clip
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.errors import DataError, RunError
from asdcli.featurize import featurize
from asdcli.files import read_json, write_json
from asdcli.runs import (
    DEAD_PROCESS_REASON,
    RUN_LAYOUT_VERSION,
    list_runs,
    load_run,
    process_start,
    start_run,
)
from asdcli.settings import FeatureSettings, Settings, load_settings
from asdcli.store import FeatureStore

FS = FeatureSettings(n_mels=32)
# Small features; a wide console so no message is wrapped in the middle of a path.
SMALL = {"ASD_FEATURES__N_MELS": "32", "COLUMNS": "4000"}
runner = CliRunner()


def asd(*args: object, env: dict[str, str] | None = None):
    """Run ``asd ARGS`` in process (working directory: the test's tmp_path)."""
    return runner.invoke(app, [str(a) for a in args], env={**SMALL, **(env or {})})


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def user_error(result, *needles: str) -> str:
    """Exit 2, a message of one or two lines holding every needle, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.output[result.output.index("error:") :].strip()
    assert len(message.splitlines()) <= 2, message
    for needle in needles:
        assert needle in message, message
    return message


def clips_by_name(store: Path, fs: FeatureSettings = FS) -> dict[str, object]:
    return {c.name: c for c in FeatureStore(store).clips(fs.key())}


def csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text(encoding="utf-8").splitlines()))


def the_run(runs: Path = Path("runs")) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


# --------------------------------------------------------------------------- 1. unreadable WAVs


def test_random_bytes_and_truncated_wavs(tmp_path):
    data = make_dataset(tmp_path / "data", machines=("fan",), n_train=3, n_test=2)
    test = data / "fan" / "test"
    whole = write_clip(tmp_path / "whole.wav").read_bytes()  # 1 s PCM_16, 16 kHz
    noise = test / "section_00_source_test_normal_0100.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    header = test / "section_00_source_test_normal_0101.wav"
    header.write_bytes(whole[:30])
    # Cut mid-data, soundfile decodes the samples that are there: simply a shorter clip.
    (test / "section_00_source_test_normal_0102.wav").write_bytes(whole[: len(whole) // 2])

    out = ok(asd("featurize", data))
    skipped = {line.split()[1]: line for line in out.splitlines() if line.startswith("skipped:")}
    assert set(skipped) == {str(noise), str(header)}
    assert "is not a readable audio file (Format not recognised" in skipped[str(noise)]
    assert "is not a readable audio file" in skipped[str(header)]
    assert "6 computed, 0 cached, 2 skipped" in out

    clips = clips_by_name(Path("features.h5"))
    assert len(clips) == 6 and noise.name not in clips and header.name not in clips
    assert 0.4 < clips["section_00_source_test_normal_0102.wav"].duration < 0.6
    again = ok(asd("featurize", data))  # skipped files are retried, still skipped; nothing lost
    assert (
        "0 computed, 6 cached, 2 skipped" in again and len(clips_by_name(Path("features.h5"))) == 6
    )


# --------------------------------------------------------------------------- 2. sample rates


def test_mixed_sample_rates_are_resampled_and_listed(tmp_path):
    train = tmp_path / "data" / "pump" / "train"
    for i, sr in enumerate((8000, 22050, 16000)):
        write_clip(train / f"section_00_source_train_normal_{i:04d}.wav", sr=sr, seed=i)
    out = ok(asd("featurize", tmp_path / "data"))
    assert "resampled 1 file(s) 8 kHz -> 16 kHz: upsampled" in out
    assert "resampled 1 file(s) 22.05 kHz -> 16 kHz: content above 8 kHz is dropped" in out
    assert "resampled 1 file(s) 16 kHz" not in out
    clips = clips_by_name(Path("features.h5"))
    assert sorted(c.sample_rate for c in clips.values()) == [8000, 16000, 22050]
    assert {c.n_frames for c in clips.values()} == {1 + 16000 // 512}  # all 1 s at 16 kHz


# --------------------------------------------------------------------------- 3. non-ASCII paths


def test_spaces_and_non_ascii_paths_end_to_end(tmp_path):
    root = make_dataset(tmp_path / "dätä set", machines=("fän ünit",), n_train=6, n_test=4)
    write_clip(root / "fän ünit" / "train" / "section_00_source_train_normal_0099_ort_Zürich.wav")
    env = {"ASD_PATHS__STORE": "dätä set/fëatures ü.h5", "ASD_PATHS__RUNS": "rüns dir"}
    assert "11 computed" in ok(asd("featurize", root, env=env))
    ok(asd("train", "lof", "-p", "n_neighbors=3", env=env))
    run = the_run(Path("rüns dir"))
    ok(asd("score", "--latest", env=env))
    scores = run / "scores" / "anomaly_score_fän ünit_section_00_test.csv"
    assert len(csv_rows(scores)) == 4
    out = ok(asd("evaluate", "--latest", env=env))
    metrics = read_json(run / "metrics.json")
    assert metrics["counts"]["evaluated"] == 4 and "fän ünit" in metrics["per_machine"]
    assert any("fän ünit" in p.name for p in (run / "figures").iterdir())
    assert "Metrics in" in out
    assert "complete" in ok(asd("report", env=env))


# --------------------------------------------------------------------------- 4. duplicate names


def test_duplicate_clip_names_across_folders(tmp_path):
    a = make_dataset(tmp_path / "copy a", machines=("fan",), n_train=4, n_test=4)
    b = make_dataset(tmp_path / "copy b", machines=("fan",), n_train=4, n_test=4)
    out = ok(asd("featurize", a, b))
    first = "section_00_source_test_anomaly_0002_vel_1.wav"  # the first name of fan/test
    warned = [line for line in out.splitlines() if first in line]
    assert len(warned) == 1 and "warning:" in warned[0]
    assert f"{a / 'fan' / 'test'} and {b / 'fan' / 'test'}" in warned[0]
    assert "(and 3 more name(s))" in warned[0] and "--data FOLDER" in warned[0]
    assert any(line.startswith("warning: fan train:") for line in out.splitlines())

    ok(asd("train", "lof", "-p", "n_neighbors=3"))
    run = the_run()
    message = user_error(asd("score", run), "fan section 00: clip name", "--data FOLDER", "--store")
    assert re.search(r"clip name section_00_\S+\.wav is in both", message)
    assert str(a / "fan" / "test") in message and str(b / "fan" / "test") in message
    assert not (run / "scores").exists()  # refused before anything was written
    out = ok(asd("score", run, "--data", a / "fan" / "test"))
    assert "Scored 4 clip(s)" in out
    assert len(csv_rows(run / "scores" / "anomaly_score_fan_section_00_test.csv")) == 4


def test_duplicates_with_clips_already_in_the_store_are_noted(tmp_path):
    a = make_dataset(tmp_path / "a", machines=("fan",), n_train=2, n_test=2)
    b = make_dataset(tmp_path / "b", machines=("fan",), n_train=2, n_test=2)
    store = tmp_path / "f.h5"
    assert featurize([a], FS, store).warnings == []
    notes = featurize([b], FS, store).warnings
    assert len(notes) == 2  # fan train and fan test
    assert all(str(a / "fan") in n and str(b / "fan") in n for n in notes)
    # Cached clips are still noted on the next call, and a folder alone is not a duplicate.
    assert len(featurize([b], FS, store).warnings) == 2
    assert featurize([a], FS, tmp_path / "g.h5").warnings == []


# --------------------------------------------------------------------------- 5. other names


def test_names_of_no_dcase_pattern_end_to_end(tmp_path):
    data = make_dataset(tmp_path / "data", machines=("fan",), n_train=4, n_test=4)
    write_clip(data / "fan" / "train" / "recording one.wav", seed=40)
    write_clip(data / "fan" / "train" / "take2.wav", seed=41)
    write_clip(data / "fan" / "test" / "mystery clip.wav", seed=42)
    for i in range(4):  # a machine whose clips all have free names
        write_clip(data / "pump" / "train" / f"pump take {i}.wav", seed=50 + i)
    write_clip(data / "pump" / "test" / "pump check.wav", seed=60)

    assert "16 computed" in ok(asd("featurize", data))
    clips = clips_by_name(Path("features.h5"))
    odd = clips["mystery clip.wav"]
    assert (odd.machine, odd.split, odd.label, odd.section, odd.pattern) == (
        "fan",
        "test",
        "unknown",
        "unknown",
        "unknown",
    )

    ok(asd("train", "lof", "-p", "n_neighbors=3"))
    run = the_run()
    assert read_json(run / "manifest.json")["training_clips"] == {"fan": 6, "pump": 4}
    ok(asd("score", run))
    fan = dict(csv_rows(run / "scores" / "anomaly_score_fan_section_00_test.csv"))
    assert "mystery clip.wav" in fan and len(fan) == 5
    assert list(dict(csv_rows(run / "scores" / "anomaly_score_pump_section_00_test.csv"))) == [
        "pump check.wav"
    ]

    out = ok(asd("evaluate", run, "--no-figures"))
    assert "without a known label not evaluated" in out
    metrics = read_json(run / "metrics.json")
    assert metrics["counts"]["evaluated"] == 4 and metrics["counts"]["unlabeled"] == 2
    assert "pump" not in metrics["per_machine"]

    # Only free names scored: evaluate says how to give the labels instead of crashing.
    shutil.rmtree(run / "scores")  # else the fan files scored above are evaluated too
    ok(asd("score", run, "--data", data / "pump" / "test"))
    user_error(asd("evaluate", run, "--no-figures"), "known label", "--ground-truth")


# --------------------------------------------------------------------------- 6. dead runs


def _running_manifest(root: Path, pid: int, **extra: object) -> Path:
    path = root / "2024-01-01T00-00-00_lof"
    path.mkdir(parents=True)
    manifest = {
        "run_layout_version": RUN_LAYOUT_VERSION,
        "detector": "lof",
        "status": "running",
        "pid": pid,
        "hostname": socket.gethostname(),
        "machines": ["fan"],
        **extra,
    }
    write_json(path / "manifest.json", manifest)
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_run_records_host_and_process(tmp_path):
    run = start_run(tmp_path / "runs", "lof", {"machines": ["fan"]})
    m = read_json(run.path / "manifest.json")
    assert m["hostname"] == socket.gethostname() and m["pid"] == os.getpid()
    assert m["pid_start"] == process_start(os.getpid())
    assert load_run(run.path, require_complete=False).status == "running"  # this process lives


def test_run_whose_process_died_is_incomplete(tmp_path):
    path = _running_manifest(tmp_path / "runs", _dead_pid())
    run = load_run(path, require_complete=False)
    assert run.status == "incomplete" and run.manifest["reason"] == DEAD_PROCESS_REASON
    ((_, listed),) = list_runs(tmp_path / "runs")
    assert not isinstance(listed, str) and listed.status == "incomplete"
    with pytest.raises(RunError, match=f"is incomplete \\({DEAD_PROCESS_REASON}\\)"):
        load_run(path)
    assert read_json(path / "manifest.json")["status"] == "running"  # reading never writes


def test_run_whose_process_lives_stays_running(tmp_path):
    path = _running_manifest(tmp_path / "runs", os.getpid(), pid_start=process_start(os.getpid()))
    assert load_run(path, require_complete=False).status == "running"
    with pytest.raises(RunError, match="still running"):
        load_run(path)


def test_pid_of_another_host_is_not_judged(tmp_path):
    path = _running_manifest(tmp_path / "runs", _dead_pid(), hostname="another-host")
    assert load_run(path, require_complete=False).status == "running"


@pytest.mark.skipif(process_start(os.getpid()) is None, reason="needs /proc")
def test_pid_reused_by_another_process_is_dead(tmp_path):
    path = _running_manifest(tmp_path / "runs", os.getpid(), pid_start="1")
    assert load_run(path, require_complete=False).status == "incomplete"


# --------------------------------------------------------------------------- 7. kill -9 train


@pytest.mark.slow
def test_kill_9_during_train_leaves_an_incomplete_run_and_the_store_intact(tmp_path):
    data = make_dataset(tmp_path / "data", machines=("fan",), n_train=6, n_test=4)
    store = tmp_path / "features.h5"
    featurize([data], FS, store)
    before = store.read_bytes()
    env = dict(
        os.environ,
        ASD_FEATURES__N_MELS="32",
        ASD_TRAIN__PATIENCE="100000",
        ASD_TRAIN__DEVICE="cpu",
    )
    cmd = [sys.executable, "-m", "asdcli", "train", "dcase-ae", "--epochs", "100000"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any(runs.glob("*/settings.yaml")):
            time.sleep(1.0)  # well into the epochs
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stderr:
        proc.stderr.close()

    run = the_run(runs)
    assert read_json(run / "manifest.json")["status"] == "running"  # as the process left it
    out = ok(asd("report"))
    assert run.name in out and "incomplete" in out
    user_error(asd("score", run), "is incomplete", DEAD_PROCESS_REASON, "--allow-incomplete")
    assert store.read_bytes() == before
    assert len(FeatureStore(store).clips(FS.key())) == 10


# --------------------------------------------------------------------------- 8. Ctrl-C featurize


def _journal_batches(store: Path) -> int:
    journal = store.with_name(store.name + ".journal")
    return len(list(journal.glob("*.json"))) if journal.is_dir() else 0


@pytest.mark.slow
def test_ctrl_c_during_featurize_saves_finished_clips_and_a_rerun_finishes(tmp_path):
    data = make_dataset(tmp_path / "data", machines=("fan", "gear"), n_train=90, n_test=30)
    total = 240
    store = tmp_path / "features.h5"
    env = dict(os.environ, ASD_FEATURES__N_MELS="32", ASD_FEATURIZE__BATCH_CLIPS="4")
    cmd = [sys.executable, "-m", "asdcli", "featurize", str(data)]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and _journal_batches(store) < 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    output = stdout.decode() + stderr.decode()
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    saved = int(re.search(r"Interrupted: (\d+) new clip\(s\) were saved", output)[1])
    assert 8 <= saved < total

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no journal left behind: everything saved is committed
        assert len(FeatureStore(store).clips(FS.key())) == saved
    out = ok(asd("featurize", data))
    assert f"{total - saved} computed, {saved} cached, 0 skipped" in out
    assert len(FeatureStore(store).clips(FS.key())) == total


# --------------------------------------------------------------------------- 9. bad run folders


@pytest.fixture
def trained_run(tmp_path) -> Path:
    data = make_dataset(tmp_path / "data", machines=("bearing", "fan"), n_train=4, n_test=2)
    featurize([data], FS, Path("features.h5"))
    ok(asd("train", "lof", "-p", "n_neighbors=2"))
    return the_run()


def test_run_of_another_layout_version_is_refused(trained_run):
    manifest = read_json(trained_run / "manifest.json")
    write_json(trained_run / "manifest.json", {**manifest, "run_layout_version": 99})
    for command in ("score", "evaluate"):
        user_error(asd(command, trained_run), "another asd version", "run layout 99")


def test_run_missing_a_model_folder_is_refused_before_writing(trained_run):
    shutil.rmtree(trained_run / "models" / "fan")
    user_error(asd("score", trained_run), "has no model for fan", "models/fan is missing")
    assert not (trained_run / "scores").exists()  # not even bearing's files


def test_run_with_an_unreadable_model_is_refused(trained_run):
    (trained_run / "models" / "fan" / "detector.json").write_text("{ half a file")
    user_error(asd("score", trained_run), "models/fan/detector.json was changed")
    user_error(asd("score", trained_run, "--trust-modified"), "the model for fan cannot be loaded")
    assert not (trained_run / "scores").exists()


def test_score_refuses_duplicates_in_the_api_too(trained_run, tmp_path):
    copy = tmp_path / "copy" / "fan" / "test"
    shutil.copytree(tmp_path / "data" / "fan" / "test", copy)
    featurize([copy], FS, Path("features.h5"))
    from asdcli.score import score_run

    with pytest.raises(DataError, match="is in both"):
        score_run(trained_run, Path("features.h5"))


# --------------------------------------------------------------------------- 10. settings YAML

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def valid_settings(draw) -> dict[str, object]:
    n_fft = draw(st.sampled_from([16, 64, 256, 512, 1024, 2048]))
    return {
        "features.n_fft": n_fft,
        "features.n_mels": draw(st.integers(1, n_fft // 2 + 1)),
        "features.hop_length": draw(st.integers(1, n_fft)),
        "features.db_floor": draw(st.floats(max_value=-1e-6, min_value=-1e6)),
        "features.mel_scale": draw(st.sampled_from(["slaney", "htk"])),
        "features.center": draw(st.booleans()),
        "train.epochs": draw(st.integers(0, 10**6)),
        "train.learning_rate": draw(
            st.floats(min_value=0, max_value=1e6, exclude_min=True, allow_subnormal=True)
        ),
        "train.threshold_percentile": draw(st.floats(0, 1, exclude_min=True, exclude_max=True)),
        "train.device": draw(st.sampled_from(["auto", "cpu", "cuda"])),
        "detectors.lof.n_neighbors": draw(st.integers(1, 10**4)),
        "detectors.fc_ae.hidden": draw(st.lists(st.integers(1, 4096), max_size=4)),
        "detectors.iforest.max_samples": draw(st.one_of(st.just("auto"), st.integers(1, 10**6))),
        "paths.store": Path(draw(_text)),
    }


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flags=valid_settings())
def test_valid_settings_round_trip_through_yaml(tmp_path, flags):
    settings, _ = load_settings(None, flags)
    assert settings.features.n_mels == flags["features.n_mels"]
    path = tmp_path / "round trip.yaml"
    path.write_text(settings.to_yaml(), encoding="utf-8")
    loaded, _ = load_settings(path)
    assert isinstance(loaded, Settings)
    assert loaded == settings


# --------------------------------------------------------------------------- 11. ASD_ lists


@pytest.mark.parametrize(
    "value, needles",
    [
        ("abc", ["ASD_DETECTORS__FC_AE__HIDDEN = 'abc'", "expected a JSON value"]),
        ("[64, x]", ["ASD_DETECTORS__FC_AE__HIDDEN", "expected a JSON value"]),
        ('[64, "x"]', ["detectors.fc_ae.hidden", "ASD_DETECTORS__FC_AE__HIDDEN"]),
        ("64", ["Input should be a valid list", "ASD_DETECTORS__FC_AE__HIDDEN"]),
    ],
)
def test_asd_list_variable_of_the_wrong_type(value, needles):
    for command in (["config"], ["train", "fc-ae"]):
        user_error(asd(*command, env={"ASD_DETECTORS__FC_AE__HIDDEN": value}), *needles)
