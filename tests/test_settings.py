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
    s, src = load_settings(cfg, {"train.epochs": 9, "train.seed": None}, {"train.epochs": "--ep"})
    assert s.train.epochs == 9 and src["train.epochs"] == "--ep"  # the caller's own name
    assert s.train.seed == 0  # None means "flag not given"
    _, src = load_settings(cfg, {"train.epochs": 9})
    assert src["train.epochs"] == "the override train.epochs"  # never a guessed flag


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
        ({"ASD_FEATURES__SAMPLE_RATE": "natve"}, "expected a sample rate in Hz"),
        ({"ASD_FEATURES__SAMPLE_RATE": "8000", "ASD_FEATURES__F_MAX": "6000"}, "Nyquist"),
    ],
)
def test_impossible_values_are_named(monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert needle in str(exc.value)


@pytest.fixture(params=["libyaml", "pure-python"])
def yaml_parser(request, monkeypatch):
    """Settings files read by libyaml's parser (where PyYAML has it) and by PyYAML's own."""
    if request.param == "pure-python":
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    elif not hasattr(yaml, "CSafeLoader"):
        pytest.skip("this PyYAML has no libyaml")
    return request.param


def test_unknown_yaml_key_and_syntax_error_name_the_place(tmp_path, yaml_parser):
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


def test_shipped_config_yaml_holds_the_defaults(yaml_parser):
    path = Path(__file__).parent.parent / "conf" / "config.yaml"
    data = yaml.safe_load(path.read_text())
    s, _ = load_settings(path)
    assert s == Settings.model_validate(data)
    assert s.model_dump() == Settings().model_dump()
    # Every setting is in the file, with its description: regenerate it when a setting changes
    # (python -c "from asdcli.settings import default_config_text as t; print(t(), end='')").
    assert path.read_text() == default_config_text()


def test_native_sample_rate_is_a_value_and_checks_wait_for_the_rate():
    s, _ = load_settings(None, {"features.sample_rate": "native", "features.f_max": 20000.0})
    assert s.features.native  # f_max 20 kHz may well be below the files' Nyquist frequency
    assert s.features.at_rate(48000).sample_rate == 48000
    with pytest.raises(SettingsError, match="files are at 16000 Hz: f_max 20000.0 Hz is above"):
        s.features.at_rate(16000)
    with pytest.raises(SettingsError, match="f_min 9000.0 Hz must be below f_max 8000.0 Hz"):
        load_settings(
            None,
            {"features.sample_rate": "native", "features.f_min": 9000.0, "features.f_max": 8e3},
        )


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  epochs: 2020-13-45\n", "a value cannot be read (month must be in 1..12)"),
        ("1: 2\n", "key 1 is not a setting name"),
        ("train:\n  ~: 3\n", "key None under train is not a setting name"),
        ("train: &t {epochs: 3, more: *t}\n", "train.more.more... is nested too deeply"),
        ("[" * 3000, "nest"),  # "nested too deeply", or libyaml's "maximum nesting depth"
    ],
)
def test_yaml_that_cannot_be_settings_is_a_settings_error(tmp_path, text, needle, yaml_parser):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as exc:
        load_settings(cfg)
    assert needle in str(exc.value)


def test_a_key_given_as_a_value_and_as_a_section_is_a_settings_error():
    for flags in ({"train": 5, "train.epochs": 3}, {"train.epochs": 3, "train": 5}):
        with pytest.raises(SettingsError, match="train is given both as a value and as a section"):
            load_settings(None, flags)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n\tepochs: 3\n", "found character '\\t' that cannot start any token"),
        ("train: *base\n", "found undefined alias 'base'"),
        ("train: {epochs: 3: 4}\n", "expected ',' or '}', but got ':'"),
    ],
)
def test_a_syntax_error_reads_the_same_with_either_parser(tmp_path, monkeypatch, text, needle):
    """libyaml words some errors more vaguely; the message is PyYAML's own either way."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    messages = []
    for drop_libyaml in (False, True):
        with monkeypatch.context() as m:
            if drop_libyaml:
                m.delattr(yaml, "CSafeLoader", raising=False)
            with pytest.raises(SettingsError) as exc:
                load_settings(cfg)
            messages.append(str(exc.value))
    assert messages[0] == messages[1]
    assert needle in messages[0]
    assert ", column " in messages[0].split("YAML syntax error")[0]  # where: line and column
