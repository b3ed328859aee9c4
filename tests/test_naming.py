from pathlib import PurePath

from hypothesis import given
from hypothesis import strategies as st

from asdcli.naming import format_attributes, name_split, parse_attributes, parse_name, parse_path


def test_dcase2023_development_name():
    info = parse_name("section_00_target_test_anomaly_0007_vel_12_loc_A.wav", machine="bearing")
    assert (info.machine, info.section, info.domain, info.split, info.label, info.index) == (
        "bearing",
        "00",
        "target",
        "test",
        "anomaly",
        7,
    )
    assert info.attributes == {"vel": "12", "loc": "A"}
    assert info.pattern == "dcase2023"


def test_dcase2023_name_without_attributes_and_odd_attribute_token():
    assert parse_name("section_01_source_train_normal_0003.wav").attributes == {}
    assert parse_name("section_01_source_train_normal_0003_a_1_noise.wav").attributes == {
        "a": "1",
        "extra": "noise",
    }


def test_unlabeled_evaluation_name_takes_split_from_folder():
    info = parse_path(PurePath("eval_data/fan/test/section_00_0123.wav"))
    assert (info.machine, info.split, info.section, info.index) == ("fan", "test", "00", 123)
    assert info.label == "unknown" and info.domain == "unknown"


def test_dcase2020_names():
    info = parse_path(PurePath("dev/slider/train/normal_id_00_00000012.wav"))
    assert (info.machine, info.split, info.label, info.section, info.index, info.domain) == (
        "slider",
        "train",
        "normal",
        "00",
        12,
        "source",
    )
    assert parse_name("anomaly_id_04_00000001.wav").label == "anomaly"
    assert parse_name("id_02_00000001.wav").label == "unknown"


def test_unknown_pattern_is_kept_as_unknown():
    info = parse_path(PurePath("pump/train/recording 1 (copy).wav"))
    assert info.machine == "pump" and info.split == "train"
    assert info.label == "unknown" and info.pattern == "unknown"


def test_file_without_split_folder():
    info = parse_path(PurePath("clips/section_00_source_test_normal_0001.wav"))
    assert info.machine == "clips" and info.split == "test"


@given(st.text())
def test_parser_never_raises(name):
    info = parse_name(name)
    assert info.label in ("normal", "anomaly", "unknown")
    assert info.domain in ("source", "target", "unknown")


@given(
    st.dictionaries(
        st.from_regex(r"[a-z]{1,5}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9]{1,4}", fullmatch=True),
        max_size=4,
    )
)
def test_attributes_round_trip(attrs):
    assert parse_attributes(format_attributes(attrs)) == attrs


def test_the_folder_decides_the_split_the_name_only_where_the_folder_says_nothing():
    moved = parse_path(PurePath("pump/train/section_00_source_test_normal_0001_vel_3.wav"))
    assert (moved.split, moved.label, moved.domain, moved.attributes) == (
        "train",
        "normal",
        "source",
        {"vel": "3"},
    )
    assert parse_path(PurePath("pump/test/section_00_source_train_normal_0001.wav")).split == (
        "test"
    )
    assert name_split("section_00_source_test_normal_0001.wav") == "test"
    assert name_split("section_00_0001.wav") == "unknown"


def test_indices_too_long_for_the_store_are_not_dcase_names():
    info = parse_name("section_00_source_train_normal_" + "1" * 19 + ".wav")
    assert info.pattern == "unknown" and info.index == -1
    assert parse_name("section_00_" + "0" * 5000).pattern == "unknown"  # int() would refuse it
    assert parse_name("section_00_source_train_normal_\u0661\u0662.wav").pattern == "unknown"
