"""asd tune: search spaces beside the detector parameters, their overrides, and the sampler."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from pydantic import ValidationError

from asdcli.detectors import get_detector, list_detectors, params_key
from asdcli.detectors.params import DetectorParams, TrainParams
from asdcli.detectors.torch_base import TorchDetector
from asdcli.errors import SettingsError
from asdcli.settings import Settings, load_settings
from asdcli.tune.objective import make_sampler, trial_seed
from asdcli.tune.settings import ParamSpace, TuneSettings, default_spaces
from asdcli.tune.space import apply_values, resolve_space, suggest

optuna.logging.set_verbosity(optuna.logging.ERROR)

SEARCHABLE = [name for name, _ in list_detectors() if name != "ensemble"]


def space_of(name: str, tune: TuneSettings | None = None) -> dict:
    neural = issubclass(get_detector(name), TorchDetector)
    space, _ = resolve_space(name, tune or TuneSettings(), neural)
    return space


def test_every_default_space_is_valid_data_of_its_parameters():
    spaces = default_spaces()
    assert set(spaces) == {"train", *DetectorParams.model_fields}
    assert set(spaces["train"]) == {"learning_rate", "epochs", "batch_size"}
    assert spaces["train"]["learning_rate"].log
    # plain data next to the parameters: no optuna object in params.py
    for cls in (TrainParams, *(f.annotation for f in DetectorParams.model_fields.values())):
        for spec in cls.space.values():
            assert set(spec) <= {"low", "high", "log", "step", "choices"}


@pytest.mark.parametrize("name", SEARCHABLE)
def test_every_detector_but_the_ensemble_has_a_space_whose_values_make_valid_settings(name):
    space = space_of(name)
    assert space
    neural = issubclass(get_detector(name), TorchDetector)
    assert any(k.startswith("train.") for k in space) == neural
    # the ends of every range and every choice are accepted by the settings
    for pick in (0, -1):
        values = {}
        for key, p in space.items():
            if p.kind == "categorical":
                values[key] = p.spec.choices[pick]
            else:
                values[key] = (p.spec.low, p.spec.high)[pick]
        apply_values(Settings(), values)


def test_what_the_issue_lists_is_searched():
    keys = {k for name in SEARCHABLE for k in space_of(name)}
    for wanted in (
        "train.learning_rate",
        "train.epochs",
        "train.batch_size",
        "detectors.fc_ae.hidden",  # widths
        "detectors.conv_ae.frames",  # window frames
        "detectors.lof.n_neighbors",
        "detectors.gmm.n_components",
        "detectors.knn.k",
        "detectors.emb_knn.embedding",
        "detectors.emb_knn.loss",
    ):
        assert wanted in keys, wanted


def test_a_detectors_own_batch_size_replaces_the_loops():
    space = space_of("dcase-ae")
    assert "detectors.dcase_ae.batch_size" in space and "train.batch_size" not in space
    assert "train.batch_size" in space_of("conv-ae")


def test_the_ensemble_has_nothing_to_search():
    with pytest.raises(SettingsError, match="tune.spaces.ensemble"):
        space_of("ensemble")


def test_overrides_replace_drop_and_add_entries():
    tune = TuneSettings(
        spaces={
            "lof": {"n_neighbors": {"low": 5, "high": 9}, "metric": {"choices": ["l1", "l2"]}},
            "train": {"epochs": None, "learning_rate": {"low": 1e-3, "high": 2e-3}},
            "conv_ae": {"frames": None},
        }
    )
    lof = space_of("lof", tune)
    assert (
        lof["detectors.lof.n_neighbors"].spec.low,
        lof["detectors.lof.n_neighbors"].spec.high,
    ) == (
        5,
        9,
    )
    assert lof["detectors.lof.metric"].kind == "categorical"
    conv = space_of("conv-ae", tune)
    assert "train.epochs" not in conv and "detectors.conv_ae.frames" not in conv
    assert (
        conv["train.learning_rate"].spec.high == 2e-3 and not conv["train.learning_rate"].spec.log
    )
    # train overrides do not apply to a detector that does not train with them
    _, notes = resolve_space("lof", tune, neural=False)
    assert any("tune.spaces.train.epochs" in n for n in notes)


@pytest.mark.parametrize(
    ("spaces", "message"),
    [
        ({"lofx": {}}, "lofx: unknown section"),
        ({"lof": {"n_neighbours": {"low": 2, "high": 5}}}, "lof.n_neighbours: unknown parameter"),
        ({"lof": {"n_neighbours": None}}, "lof.n_neighbours: unknown parameter"),
        ({"train": {"learning_rate": {"low": 1e-2, "high": 1e-4}}}, "low 0.01 is above high"),
        ({"train": {"learning_rate": {"low": 0, "high": 1, "log": True}}}, "log needs low above 0"),
        ({"knn": {"metric": {"choices": []}}}, "choices is empty"),
        ({"knn": {"k": {"low": 1, "high": 3, "choices": [1]}}}, "not both"),
        ({"knn": {"k": {"low": 1}}}, "give low and high"),
        ({"lof": {"n_neighbors": {"low": 0, "high": 3}}}, "low 0 is not a valid value"),
        ({"knn": {"metric": {"choices": ["euclidean", "hamming"]}}}, "'hamming' is not a valid"),
        ({"gmm": {"n_components": {"low": 1, "high": 5, "step": -1}}}, "step must be above 0"),
        ({"gmm": {"n_components": {"low": 1, "high": 6, "step": 2}}}, "not a multiple of step"),
        ({"fc_ae": {"hidden": {"low": 1, "high": 4}}}, "hidden is not a number; search it with"),
        ({"lof": {"n_neighbors": {"low": 2.5, "high": 5}}}, "n_neighbors is an integer"),
    ],
)
def test_impossible_spaces_are_refused_with_their_key(spaces, message):
    with pytest.raises(ValidationError, match=message):
        TuneSettings(spaces=spaces)


@pytest.mark.skipif(
    "tune" not in Settings.model_fields,
    reason="asdcli.settings.Settings has no `tune` section yet (the lead adds TuneSettings)",
)
def test_a_yaml_tune_section_with_a_bad_range_is_a_settings_error(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "tune:\n  spaces:\n    train:\n      learning_rate: {low: 1e-2, high: 1e-4}\n"
    )
    with pytest.raises(SettingsError, match=r"tune.spaces.train.learning_rate.*above high"):
        load_settings(config)
    config.write_text("tune:\n  spaces:\n    lof:\n      n_neighbors: {low: 3, high: 7}\n")
    settings, _ = load_settings(config)
    spec = settings.tune.spaces["lof"]["n_neighbors"]  # type: ignore[attr-defined]
    assert (spec.low, spec.high) == (3, 7)


def test_suggested_values_become_the_trials_settings():
    space = space_of("fc-ae")
    fixed = optuna.trial.FixedTrial(
        {
            "train.learning_rate": 5e-4,
            "train.epochs": 7,
            "train.batch_size": 128,
            "detectors.fc_ae.frames": 32,
            "detectors.fc_ae.hidden": "[512, 256]",  # a list choice is stored as its JSON
            "detectors.fc_ae.bottleneck": 64,
            "detectors.fc_ae.dropout": 0.1,
        }
    )
    values = suggest(fixed, space)
    assert values["detectors.fc_ae.hidden"] == [512, 256]
    base = Settings()
    settings = apply_values(base, values)
    assert settings.detectors.fc_ae.hidden == [512, 256]
    assert settings.train.epochs == 7 and settings.train.learning_rate == 5e-4
    assert base.train.epochs == TrainParams().epochs  # the base settings are left alone
    with pytest.raises(ValidationError):
        apply_values(base, {"detectors.lof.n_neighbors": 0})


def sample(study: optuna.Study, n: int) -> list[int]:
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(trial.suggest_int("x", 1, 1000))
        study.tell(trial, float(out[-1] % 7))
    return out


def test_the_sampler_is_seeded_per_trial_so_a_resumed_study_continues_the_same_sequence():
    one_go = optuna.create_study(direction="maximize", sampler=make_sampler(3, startup_trials=4))
    values = sample(one_go, 8)
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(
        storage=storage, study_name="s", direction="maximize", sampler=make_sampler(3, 4)
    )
    resumed = sample(first, 5)
    again = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(3, 4))
    resumed += sample(again, 3)
    assert resumed == values
    # a plain TPESampler(seed=3) restarted on resume repeats its first random draws
    assert len(set(values[:4])) == 4
    other = optuna.create_study(direction="maximize", sampler=make_sampler(4, startup_trials=4))
    assert sample(other, 8) != values
    assert trial_seed(3, 0) != trial_seed(3, 1)


def test_param_space_is_the_validated_form_of_the_plain_data():
    spec = ParamSpace.model_validate({"low": "1e-4", "high": 1e-2, "log": True})
    assert spec.low == pytest.approx(1e-4) and spec.is_range
    assert not ParamSpace(choices=["a"]).is_range
    assert params_key("emb-knn") in DetectorParams.model_fields
