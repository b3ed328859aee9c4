"""Issue 13, items 1 and 2: the folder decides the split; features.sample_rate: native."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_clip
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.errors import DataError, SettingsError, StoreError
from asdcli.featurize import featurize, resample_note
from asdcli.settings import FeatureSettings, load_settings
from asdcli.store import ClipRecord, FeatureStore, StoreWriter
from asdcli.train import training_clips

FS = FeatureSettings(n_mels=16)
NATIVE = FeatureSettings(n_mels=16, sample_rate="native")
runner = CliRunner()


def resplit(root: Path, n_named_test: int = 5) -> Path:
    """A machine folder re-split by moving files: train/ holds clips named ``_test_normal_``
    (and one named ``_train_``), test/ holds one clip named ``_train_``."""
    m = root / "pump"
    for i in range(n_named_test):
        write_clip(m / "train" / f"section_00_source_test_normal_{i:04d}_vel_1.wav", seed=i)
    write_clip(m / "train" / "section_00_source_train_normal_0100_vel_1.wav", seed=50)
    write_clip(m / "test" / "section_00_source_train_normal_0101_vel_1.wav", seed=51)
    write_clip(m / "test" / "section_00_target_test_anomaly_0000_vel_1.wav", seed=52)
    return root


# --------------------------------------------------------------------------- 1. split


def test_the_folder_decides_the_split_and_one_warning_counts_each_disagreement(
    tmp_path: Path,
) -> None:
    data = resplit(tmp_path / "data")
    s = featurize([data], FS, tmp_path / "f.h5")
    store = FeatureStore(tmp_path / "f.h5")
    splits = {Path(c.path).parent.name + "/" + c.name: c.split for c in store.clips(s.key)}
    assert all(split == folder.split("/")[0] for folder, split in splits.items()), splits
    crossed = [w for w in s.warnings if "the folder decides the split" in w]
    assert crossed == [
        "5 clip(s) named `_test_` are in train/ (pump): used for training (the folder decides "
        "the split).",
        "1 clip(s) named `_train_` are in test/ (pump): used as test clips (the folder decides "
        "the split).",
    ]
    # The name still gives everything else.
    clip = next(c for c in store.clips(s.key) if c.name.startswith("section_00_target_test"))
    assert (clip.domain, clip.label, clip.attributes) == ("target", "anomaly", {"vel": "1"})


def test_asd_train_uses_every_clip_in_train_with_one_warning(tmp_path: Path) -> None:
    """The issue's acceptance: train/ of clips named _test_normal_ trains on all of them."""
    data = resplit(tmp_path / "data", n_named_test=12)
    env = {"ASD_FEATURES__N_MELS": "16", "ASD_PATHS__RUNS": str(tmp_path / "runs")}
    r = runner.invoke(app, ["featurize", str(data)], env=env)
    assert r.exit_code == 0, r.output
    assert r.output.count("named `_test_` are in train/") == 1
    assert "12 clip(s) named `_test_` are in train/ (pump): used for training" in r.output
    r = runner.invoke(app, ["train", "lof"], env=env)
    assert r.exit_code == 0, r.output
    (manifest,) = (tmp_path / "runs").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["training_clips"] == {"pump": 13}


def test_anomalies_in_train_are_kept_but_not_trained_on(tmp_path: Path) -> None:
    d = tmp_path / "data" / "fan" / "train"
    write_clip(d / "section_00_source_train_normal_0000.wav", seed=0)
    write_clip(d / "section_00_source_test_normal_0001.wav", seed=1)
    write_clip(d / "section_00_source_test_anomaly_0002.wav", seed=2)
    s = featurize([tmp_path / "data"], FS, tmp_path / "f.h5")
    store = FeatureStore(tmp_path / "f.h5")
    assert {c.split for c in store.clips(s.key)} == {"train"}
    used = [c.name for c in training_clips(store, s.key)["fan"]]
    assert sorted(used) == [
        "section_00_source_test_normal_0001.wav",
        "section_00_source_train_normal_0000.wav",
    ]
    assert any("1 clip(s) named `_anomaly_` are in train/ (fan)" in w for w in s.warnings)


def test_a_store_holding_the_names_split_is_corrected_by_the_next_featurize(tmp_path: Path) -> None:
    """Stores written before the folder decided kept the name's split: the clip is redone."""
    data = resplit(tmp_path / "data", n_named_test=2)
    path = tmp_path / "f.h5"
    featurize([data], FS, path)
    wrong = next(c for c in FeatureStore(path).clips(FS.key()) if "_test_normal_0000" in c.name)
    assert wrong.split == "train"
    fields = {k: v for k, v in vars(wrong).items() if k != "split"}
    with StoreWriter(path, FS.key(), FS.model_dump(mode="json")) as w:  # as the old parser did
        w.add(ClipRecord(split="test", **fields), np.zeros((16, wrong.n_frames), np.float32))
    assert wrong.name in {c.name for c in FeatureStore(path).select(FS.key(), split="test")}
    again = featurize([data], FS, path)
    assert again.new == 1 and again.cached == again.machines["pump"].clips - 1
    fixed = next(c for c in FeatureStore(path).clips(FS.key()) if c.name == wrong.name)
    assert fixed.split == "train"
    assert featurize([data], FS, path).new == 0


# --------------------------------------------------------------------------- 2. sample rate


def test_resample_note_says_what_is_lost() -> None:
    assert (
        resample_note(12, 48000, 16000)
        == "resampled 12 file(s) 48 kHz -> 16 kHz: content above 8 kHz is dropped "
        "(features.sample_rate: native keeps it)"
    )
    assert resample_note(1, 22050, 16000).startswith("resampled 1 file(s) 22.05 kHz -> 16 kHz")
    assert resample_note(1, 8000, 16000) == (
        "resampled 1 file(s) 8 kHz -> 16 kHz: upsampled, the files hold nothing above 4 kHz"
    )


def test_featurize_warns_with_the_rates_and_the_lost_band(tmp_path: Path) -> None:
    write_clip(tmp_path / "d" / "pump" / "train" / "a.wav", sr=48000)
    write_clip(tmp_path / "d" / "pump" / "train" / "b.wav", sr=48000, seed=1)
    s = featurize([tmp_path / "d"], FS, tmp_path / "f.h5")
    assert s.sample_rate == 16000 and s.resample_notes() == [
        "resampled 2 file(s) 48 kHz -> 16 kHz: content above 8 kHz is dropped "
        "(features.sample_rate: native keeps it)"
    ]


def test_native_rate_keeps_the_files_rate_and_names_the_set_by_it(tmp_path: Path) -> None:
    for i in range(2):
        write_clip(tmp_path / "d" / "mill" / "train" / f"c{i}.wav", sr=48000, seed=i)
    s = featurize([tmp_path / "d"], NATIVE, tmp_path / "f.h5")
    at48 = FeatureSettings(n_mels=16, sample_rate=48000)
    assert s.key == at48.key() and s.sample_rate == 48000
    assert s.resampled == {} and s.resample_notes() == []
    clips = FeatureStore(tmp_path / "f.h5").clips(s.key)
    assert {c.n_frames for c in clips} == {1 + 48000 // 512}  # 1 s at 48 kHz
    with h5py.File(tmp_path / "f.h5") as f:  # the store knows the real rate
        assert json.loads(f[f"features/{s.key}"].attrs["settings"])["sample_rate"] == 48000
    # The same files with sample_rate: 48000 are the same feature set: all cached.
    assert featurize([tmp_path / "d"], at48, tmp_path / "f.h5").cached == 2


def test_native_rate_refuses_mixed_rates_naming_them_and_a_file(tmp_path: Path) -> None:
    write_clip(tmp_path / "d" / "mill" / "train" / "a.wav", sr=48000)
    write_clip(tmp_path / "d" / "mill" / "train" / "b.wav", sr=16000)
    write_clip(tmp_path / "d" / "mill" / "train" / "c.wav", sr=16000)
    with pytest.raises(DataError) as exc:
        featurize([tmp_path / "d"], NATIVE, tmp_path / "f.h5")
    msg = str(exc.value)
    assert "16 kHz: 2 file(s), e.g." in msg and "48 kHz: 1 file(s), e.g." in msg
    assert "a.wav" in msg and "b.wav" in msg
    assert not (tmp_path / "f.h5").exists()


def test_native_rate_checks_f_max_once_the_rate_is_known(tmp_path: Path) -> None:
    write_clip(tmp_path / "d" / "mill" / "train" / "a.wav", sr=16000)
    fs = FeatureSettings(n_mels=16, sample_rate="native", f_max=12000.0)  # fine at 48 kHz
    with pytest.raises(SettingsError, match="files are at 16000 Hz: f_max 12000.0 Hz is above"):
        featurize([tmp_path / "d"], fs, tmp_path / "f.h5")
    with pytest.raises(SettingsError, match="native stands for the files' rate"):
        fs.key()  # a native rate names no feature set by itself


def test_store_resolves_native_to_the_one_stored_rate(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    write_clip(tmp_path / "a" / "mill" / "train" / "a.wav", sr=48000)
    featurize([tmp_path / "a"], FeatureSettings(n_mels=8), path)  # another set only
    with pytest.raises(StoreError, match="no features for the current feature settings"):
        FeatureStore(path).resolve(NATIVE)
    featurize([tmp_path / "a"], NATIVE, path)
    resolved = FeatureStore(path).resolve(NATIVE)
    assert resolved == FeatureSettings(n_mels=16, sample_rate=48000)
    assert FeatureStore(path).resolve(FS) is FS  # a rate in Hz is used as it is
    write_clip(tmp_path / "b" / "mill" / "train" / "b.wav", sr=22050)
    featurize([tmp_path / "b"], NATIVE, path)
    with pytest.raises(StoreError, match="at 22050 Hz and 48000 Hz"):
        FeatureStore(path).resolve(NATIVE)


def test_new_files_are_resampled_to_the_rate_a_native_set_was_made_at(tmp_path: Path) -> None:
    """What `asd score --data` does: the run records the resolved rate, new files follow it."""
    path = tmp_path / "f.h5"
    write_clip(tmp_path / "train" / "mill" / "train" / "a.wav", sr=48000)
    featurize([tmp_path / "train"], NATIVE, path)
    trained = FeatureStore(path).resolve(NATIVE)
    write_clip(tmp_path / "new" / "mill" / "test" / "x.wav", sr=16000)
    s = featurize([tmp_path / "new"], trained, path)
    assert s.key == trained.key() and s.resampled == {16000: 1}
    assert "16 kHz -> 48 kHz: upsampled" in s.resample_notes()[0]
    (x,) = FeatureStore(path).select(s.key, split="test")
    assert x.n_frames == 1 + 48000 // 512


def test_native_is_a_setting_shown_by_asd_config(tmp_path: Path) -> None:
    r = runner.invoke(app, ["config"], env={"ASD_FEATURES__SAMPLE_RATE": "native"})
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if "features.sample_rate" in line)
    assert "'native'" in row and "ASD_FEATURES__SAMPLE_RATE" in row
    cfg = tmp_path / "c.yaml"
    cfg.write_text("features:\n  sample_rate: native\n")
    s, sources = load_settings(cfg)
    assert s.features.native and sources == {"features.sample_rate": str(cfg)}
    r = runner.invoke(app, ["config"], env={"ASD_FEATURES__SAMPLE_RATE": "nativ"})
    assert r.exit_code == 2 and "at least 1000) or native" in r.output


def test_native_rate_is_recorded_by_a_run_and_new_files_are_resampled_to_it(tmp_path):
    """native at 48 kHz: the run's manifest holds 48000, and scoring 16-kHz files resamples
    them up to it (their frames are those of a 48-kHz clip)."""
    data = tmp_path / "data" / "pump"
    for i in range(4):
        write_clip(data / "train" / f"section_00_source_train_normal_{i:04d}.wav", sr=48000, seed=i)
    new = tmp_path / "new" / "pump" / "test"
    for i in range(2):
        write_clip(new / f"section_00_source_test_normal_{i:04d}.wav", sr=16000, seed=10 + i)
    env = {"ASD_FEATURES__SAMPLE_RATE": "native"}
    runner = CliRunner()
    assert runner.invoke(app, ["featurize", str(tmp_path / "data")], env=env).exit_code == 0
    r = runner.invoke(app, ["train", "lof", "--runs", "runs"], env=env)
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["feature_settings"]["sample_rate"] == 48000
    r = runner.invoke(app, ["score", str(run), "--data", str(tmp_path / "new")], env=env)
    assert r.exit_code == 0, r.output
    store = FeatureStore(Path("features.h5"))
    clips = [c for c in store.clips(manifest["feature_key"]) if c.split == "test"]
    assert len(clips) == 2 and {c.n_frames for c in clips} == {1 + 48000 // 512}
