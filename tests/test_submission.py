"""The DCASE submission files: names both ways, what is written, and reading them back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from asdcli.errors import DataError
from asdcli.submission import (
    decision_file_name,
    decision_path,
    find_score_files,
    parse_file_name,
    read_decisions,
    read_ground_truth,
    read_scores,
    score_file_name,
    section_files,
    submission_files,
)


def test_names_as_the_dcase_evaluator_expects():
    assert score_file_name("fan", "00") == "anomaly_score_fan_section_00_test.csv"
    assert decision_file_name("fan", "00") == "decision_result_fan_section_00_test.csv"


@pytest.mark.parametrize("machine", ["fan", "toy_car", "fän ünit", "a_section_01_b"])
def test_names_parse_back(machine):
    assert parse_file_name(score_file_name(machine, "01")) == ("anomaly_score", machine, "01")
    assert parse_file_name(decision_file_name(machine, "02")) == ("decision_result", machine, "02")


@pytest.mark.parametrize(
    "name",
    ["scores.csv", "anomaly_score_fan_section_xx_test.csv", "anomaly_score_fan_test.csv", "x.png"],
)
def test_other_names_are_not_submission_files(name):
    assert parse_file_name(name) is None


def test_section_files_content():
    files = section_files("fan", "00", [("a.wav", 0.25, 0), ("b.wav", 1e-9, 1)])
    assert files == {
        "anomaly_score_fan_section_00_test.csv": b"a.wav,0.25\nb.wav,1e-09\n",
        "decision_result_fan_section_00_test.csv": b"a.wav,0\nb.wav,1\n",
    }


def test_written_files_read_back(tmp_path):
    rows = [("a.wav", 0.25, 0), ("b.wav", float("nan"), 1), ("c.wav", -3.0, 1)]
    for name, data in section_files("toy_car", "01", rows).items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "scores.csv").write_text("machine\n")
    ((machine, section, path),) = find_score_files(tmp_path)
    assert (machine, section) == ("toy_car", "01")
    scores = read_scores(path)
    assert list(scores) == ["a.wav", "b.wav", "c.wav"]
    assert scores["a.wav"] == 0.25 and scores["c.wav"] == -3.0 and math.isnan(scores["b.wav"])
    assert read_decisions(decision_path(path)) == {"a.wav": 0, "b.wav": 1, "c.wav": 1}
    assert [p.name for p in submission_files(tmp_path)] == [
        "anomaly_score_toy_car_section_01_test.csv",
        "decision_result_toy_car_section_01_test.csv",
    ]
    assert submission_files(tmp_path / "missing") == []


def test_paths_in_the_first_column_become_names(tmp_path):
    path = tmp_path / score_file_name("fan", "00")
    path.write_text("dev/fan/test/a.wav,0.5\n\n  \nb.wav, 1.5 \n")
    assert read_scores(path) == {"a.wav": 0.5, "b.wav": 1.5}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a.wav,high\n", "line 1: score 'high' is not a number"),
        ("a.wav,1,2\n", "line 1: expected `file,score`"),
        ("a.wav,1\nx/a.wav,2\n", "line 2: clip a.wav is listed twice"),
    ],
)
def test_malformed_score_files(tmp_path, text, needle):
    path = tmp_path / score_file_name("fan", "00")
    path.write_text(text)
    with pytest.raises(DataError, match=needle):
        read_scores(path)


def test_decisions_must_be_0_or_1(tmp_path):
    path = tmp_path / decision_file_name("fan", "00")
    path.write_text("a.wav,2\n")
    with pytest.raises(DataError, match="expected 0 or 1, got '2'"):
        read_decisions(path)
    with pytest.raises(ValueError, match="not an anomaly score file"):
        decision_path(path)


def write_truth(folder: Path, machine: str, labels: str, domains: str) -> None:
    name = f"ground_truth_{machine}_section_00_test.csv"
    (folder / "ground_truth_data").mkdir(parents=True, exist_ok=True)
    (folder / "ground_truth_domain").mkdir(parents=True, exist_ok=True)
    (folder / "ground_truth_data" / name).write_text(labels)
    (folder / "ground_truth_domain" / name).write_text(domains)


def test_ground_truth(tmp_path):
    write_truth(tmp_path, "fan", "s_0.wav,0\ns_1.wav,1\n", "s_0.wav,1\ns_1.wav,0\n")
    assert read_ground_truth(tmp_path, "fan", "00") == {
        "s_0.wav": (0, "target"),
        "s_1.wav": (1, "source"),
    }
    with pytest.raises(DataError, match="ground_truth_pump_section_00_test.csv is missing"):
        read_ground_truth(tmp_path, "pump", "00")
    write_truth(tmp_path, "gear", "s_0.wav,0\n", "s_9.wav,1\n")
    with pytest.raises(DataError, match="list different clips"):
        read_ground_truth(tmp_path, "gear", "00")
