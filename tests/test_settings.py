from pathlib import Path

import pytest
import yaml

from asdcli.errors import SettingsError
from asdcli.settings import Settings, default_config_text, load_settings


def test_defaults_follow_the_dcase_baseline():
    s, sources = load_settings()
    f = s.features
    assert (f.sample_rate, f.n_fft, f.hop_length, f.n_mels, f.power) == (16000, 1024, 512, 128, 2.0)
    assert sources == {}


def test_precedence_defaults_yaml_env_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 4\n  batch_size: 8\n")
    s, src = load_settings(cfg)
    assert (s.train.epochs, s.train.batch_size) == (4, 8)
    assert src["train.epochs"] == str(cfg)
    monkeypatch.setenv("ASD_TRAIN__EPOCHS", "7")
    s, src = load_settings(cfg)
    assert (s.train.epochs, s.train.batch_size) == (7, 8)
    assert src["train.epochs"] == "ASD_TRAIN__EPOCHS"
    s, src = load_settings(cfg, {"train.epochs": 9, "train.seed": None})
    assert s.train.epochs == 9 and src["train.epochs"] == "--epochs"
    assert s.train.seed == 0  # None means "flag not given"


def test_default_config_file_in_working_directory(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("features:\n  n_mels: 64\n")
    s, src = load_settings()
    assert s.features.n_mels == 64 and src == {"features.n_mels": "conf/config.yaml"}


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"ASD_FEATURES__HOP_LENGTH": "4096"}, "hop_length 4096 is larger than n_fft 1024"),
        ({"ASD_FEATURES__N_MELS": "0"}, "features.n_mels"),
        ({"ASD_TRAIN__EPOCHS": "-1"}, "train.epochs"),
        ({"ASD_TRAIN__EPOCHS": "abc"}, "ASD_TRAIN__EPOCHS"),
        ({"ASD_TRAIN__EPOCH": "3"}, "train.epoch: unknown setting"),
        ({"ASD_FEATURES__N_MELS": "600"}, "exceeds the 513 FFT bins"),
    ],
)
def test_impossible_values_are_named(monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert needle in str(exc.value)


def test_unknown_yaml_key_and_syntax_error_name_the_place(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochz: 4\n")
    with pytest.raises(SettingsError, match=r"train\.epochz: unknown setting \(from .*c\.yaml\)"):
        load_settings(cfg)
    cfg.write_text("train:\n  epochs: 4\n  seed: [1,\n")
    with pytest.raises(SettingsError, match="line 4"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_feature_key_changes_with_any_feature_setting():
    a = Settings().features
    assert a.key() == Settings().features.key()
    assert a.key() != a.model_copy(update={"n_mels": 64}).key()
    assert a.key() != a.model_copy(update={"db_floor": -80.0}).key()


def test_shipped_config_yaml_holds_the_defaults():
    path = Path(__file__).parent.parent / "conf" / "config.yaml"
    data = yaml.safe_load(path.read_text())
    s, _ = load_settings(path)
    assert s == Settings.model_validate(data)
    assert s.model_dump() == Settings().model_dump()
    # Every setting is in the file, with its description: regenerate it when a setting changes
    # (python -c "from asdcli.settings import default_config_text as t; print(t(), end='')").
    assert path.read_text() == default_config_text()
