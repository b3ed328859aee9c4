"""Issue 14 item 4: fuzzing the file-name parser and the settings loader.

No input makes either raise anything but the project's user errors: the parser returns a
:class:`ClipInfo` the store can hold, the loader returns settings or raises SettingsError.
Inputs are built from the real vocabulary (DCASE tokens, setting names) mixed with noise, so
the examples reach the interesting branches; example counts stay modest for the suite's speed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asdcli.errors import SettingsError
from asdcli.naming import DOMAINS, LABELS, SPLITS, UNKNOWN, name_split, parse_name, parse_path
from asdcli.settings import Settings, _flatten, load_settings
from asdcli.store import ClipRecord, _record_row

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text without NUL (no OS accepts it in a file name or an environment variable).
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]))

# --------------------------------------------------------------------------- file names

TOKENS = st.sampled_from(
    ["section", "00", "01", "source", "target", "train", "test", "normal", "anomaly", "id"]
    + ["0000", "vel", "12", "loc", "A", "", "wav", ".wav", "\u0663", "\n", " "]
)
DIGITS = st.from_regex(r"[0-9]{1,40}", fullmatch=True) | st.just("9" * 5000)
NAMES = (
    st.lists(TOKENS | DIGITS | TEXT, min_size=1, max_size=10).map("_".join)
    | TEXT
    | st.lists(TOKENS | DIGITS, max_size=8).map(lambda t: "_".join(t) + ".wav")
)
INT64 = (-(2**63), 2**63 - 1)


def check_info(info: Any) -> None:
    assert info.split in (*SPLITS, UNKNOWN)
    assert info.label in (*LABELS, UNKNOWN)
    assert info.domain in (*DOMAINS, UNKNOWN)
    assert info.index == -1 or INT64[0] <= info.index <= INT64[1]  # the store's int64 column
    # What featurize does with it: a store row, its attributes as JSON.
    row = _record_row(ClipRecord(**vars(info), path="/d/" + info.name))
    json.loads(row["attributes"])
    np.array([row[k] for k in ("index", "offset", "n_frames")], dtype=np.int64)


@FUZZ
@given(NAMES, TEXT, st.sampled_from([*SPLITS, UNKNOWN, "", "eval"]) | TEXT)
@example("section_00_" + "9" * 5000, "fan", "test")  # once: int() of over 4300 digits raised
@example("section_00_source_train_normal_" + "9" * 19, "fan", "train")  # overflowed int64
def test_name_parser_returns_a_storable_clip_for_any_name(
    name: str, machine: str, folder: str
) -> None:
    info = parse_name(name, machine=machine, folder_split=folder)
    check_info(info)
    if folder in SPLITS:
        assert info.split == folder  # the folder decides
    assert name_split(name) in (*SPLITS, UNKNOWN)


@FUZZ
@given(st.lists(NAMES, min_size=1, max_size=5))
def test_path_parser_returns_a_storable_clip_for_any_path(parts: list[str]) -> None:
    check_info(parse_path(PurePath(*parts)))


# --------------------------------------------------------------------------- settings


def _setting_names() -> list[str]:
    return list(_flatten(Settings.model_construct().model_dump(mode="json")))


SETTING = st.sampled_from(_setting_names())
KEY = SETTING | SETTING.map(lambda k: k.rsplit(".", 1)[0]) | TEXT | st.just("features.n_mels.x")
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | st.sampled_from(["native", "16000", "cuda", "mean", "1e400", "[1, 2]", "{a: 1}", "-"])
)
VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
)
YAML_SNIPPETS = st.sampled_from(
    [
        "train: {epochs: 2020-13-45}\n",  # a timestamp the YAML resolver accepts, then rejects
        "features: 2001-02-30\n",
        "a: &x [*x]\n",  # a list that holds itself
        "train: &t {epochs: 3, more: *t}\n",
        "!!python/object/apply:os.system [echo no]\n",
        "features: !!binary AAAA\n",
        "? [1, 2]\n: 3\n",
        "features:\n  n_mels: 1e400\n",
        "[" * 2000,
        "\ufeff",
        "1: 2\n",
        "null: {a: 1}\n",
    ]
)


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Set ``variables`` for the block only (hypothesis reruns the body; no fixture)."""
    saved = {k: os.environ.get(k) for k in variables}
    try:
        os.environ.update(variables)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load(config: Path | None = None, overrides: dict[str, Any] | None = None) -> None:
    try:
        s, sources = load_settings(config, overrides)
    except SettingsError as exc:
        assert str(exc).strip()  # a message, not an empty error
        return
    assert isinstance(s, Settings) and all(isinstance(v, str) for v in sources.values())


@FUZZ
@given(
    YAML_SNIPPETS
    | TEXT
    | st.dictionaries(KEY, VALUE, max_size=4).map(lambda d: yaml.safe_dump(_tree(d)))
)
def test_any_yaml_file_loads_or_is_a_settings_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    load(path)


ENV_NAME = SETTING.map(lambda k: "ASD_" + k.upper().replace(".", "__")) | TEXT.map(
    lambda t: "ASD_" + t
).filter(lambda n: "=" not in n and n != "ASD_CONFIG")
ENV_VALUE = SCALAR.map(str) | st.sampled_from(["native", "[1,2]", '{"a": 1}', "", " ", "null"])


@FUZZ
@given(st.dictionaries(ENV_NAME, ENV_VALUE, max_size=3))
@example({"ASD_FEATURES": "[1, 2]"})  # a section given as a JSON list
@example({"ASD_FEATURES__N_MELS__X": "1", "ASD_DETECTORS": '{"lof": 3}'})
@example({"ASD_FEATURES__SAMPLE_RATE": "native", "ASD_FEATURES__F_MAX": "90000"})
def test_any_asd_variables_load_or_are_a_settings_error(variables: dict[str, str]) -> None:
    with environment(variables):
        load()


@FUZZ
@given(st.dictionaries(KEY, VALUE, max_size=4))
@example({"train": 5, "train.epochs": 3})  # a key that is both a value and a section
@example({"": 1})
def test_any_overrides_load_or_are_a_settings_error(overrides: dict[str, Any]) -> None:
    load(None, overrides)


def _tree(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested mappings, as a user would write them (conflicts: last wins)."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = child if isinstance(child, dict) else {}
            node = node[part]
        node[leaf] = value
    return tree
