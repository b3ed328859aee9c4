"""The run folder API: one reader and writer per file, strict parsing, recorded hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asdcli.errors import RunError
from asdcli.files import read_json, sha256_of
from asdcli.runs import (
    RUN_LAYOUT_VERSION,
    Run,
    find_run,
    is_run_folder,
    list_runs,
    load_run,
    start_run,
)

FIT = {"percentile": 0.9, "method": "gamma", "shape": 2.0, "loc": 0.0, "scale": 1.0, "note": ""}


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return start_run(tmp_path / "runs", "lof", {"machines": ["fan", "pump"], "feature_key": "k"})


def save_model(run: Run, machine: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = run.model_dir(machine) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def trained(run: Run) -> Run:
    """Both machines saved and completed, as training leaves them."""
    run.write_training_outputs(
        {"fan": {"threshold": 0.5, **FIT}, "pump": {"threshold": 2, **FIT}},
        [["fan", 1, 1.0, 0.9, 0.1], ["fan", 2, 0.5, None, 0.1]],
        [["fan", "00", "source", "a.wav", 0.25], ["pump", "01", "target", "b.wav", -1.5]],
    )
    save_model(run, "fan", {"detector.json": b"{}", "model.npz": b"fan weights"})
    save_model(run, "pump", {"detector.json": b"{}", "members/0/detector.json": b"{}"})
    run.complete_machine("fan", 10)
    run.complete_machine("pump", 20)
    return run


# --- the manifest -------------------------------------------------------------------------


def test_paths_and_file_names(run):
    assert run.manifest_path.name == "manifest.json" and run.manifest_path.is_file()
    assert run.thresholds_path == run.path / "thresholds.json"
    assert run.model_dir("fan") == run.path / "models" / "fan"
    assert run.scores_dir == run.path / "scores" and run.figures_dir == run.path / "figures"
    assert run.metrics_json.name == "metrics.json" and run.metrics_csv.name == "metrics.csv"
    assert run.training_curve_path("fan").name == "training_curve_fan.png"
    assert read_json(run.manifest_path)["run_layout_version"] == RUN_LAYOUT_VERSION


def test_completed_machines(run):
    assert run.completed_machines == ["fan", "pump"]  # not listed: every machine (old runs)
    save_model(run, "fan", {"detector.json": b"{}"})
    run.complete_machine("fan", 7)
    on_disk = load_run(run.path, require_complete=False)
    assert on_disk.completed_machines == ["fan"]
    assert on_disk.manifest["n_params"] == {"fan": 7}
    run.complete_machine("fan", 7)  # twice: listed once
    assert run.completed_machines == ["fan"]


def test_find_run_by_path_or_name(run, tmp_path):
    root = run.path.parent
    assert is_run_folder(run.path) and not is_run_folder(tmp_path)
    assert find_run(run.name, root) == root / run.name
    assert find_run(str(run.path), tmp_path / "elsewhere") == run.path
    assert find_run("lof", root) is None


def test_start_run_leaves_no_empty_folder_when_the_manifest_cannot_be_written(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(TypeError):  # a manifest value that cannot be written
        start_run(root, "lof", {"machines": ["fan"], "bad": Unwritable()})
    assert list(root.iterdir()) == []


class Unwritable:
    def __str__(self) -> str:
        raise TypeError("not serialisable")


def test_layout_1_runs_are_still_listed(tmp_path):
    folder = tmp_path / "runs" / "old"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"run_layout_version": 1, "detector": "lof", "status": "complete"})
    )
    ((_, listed),) = list_runs(tmp_path / "runs")
    assert isinstance(listed, Run) and listed.status == "complete"


# --- thresholds, history, training scores -----------------------------------------------------


def test_training_outputs_read_back(run):
    trained(run)
    assert run.thresholds() == {"fan": 0.5, "pump": 2.0}
    assert run.history() == {
        "fan": [
            {"epoch": 1, "loss": 1.0, "val_loss": 0.9, "seconds": 0.1},
            {"epoch": 2, "loss": 0.5, "val_loss": None, "seconds": 0.1},
        ]
    }
    assert run.train_scores() == {
        "fan": [{"section": "00", "domain": "source", "file": "a.wav", "score": 0.25}],
        "pump": [{"section": "01", "domain": "target", "file": "b.wav", "score": -1.5}],
    }


def test_no_files_read_as_empty(run):
    assert run.thresholds() == {} and run.history() == {} and run.train_scores() == {}


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{ half", "cannot be read"),
        ("[1, 2]", "not a thresholds file"),
        ('{"fan": {"threshold": null}}', "threshold of fan is None"),
        ('{"fan": {"threshold": "0.5"}}', "threshold of fan is '0.5'"),
        ('{"fan": {"threshold": true}}', "threshold of fan is True"),
        ('{"fan": 0.5}', "threshold of fan is None"),  # not the layout train writes
        ('{"fan": {"threshold": NaN}}', "not a finite number"),
    ],
)
def test_a_bad_thresholds_file_is_a_run_error(run, content, needle):
    run.thresholds_path.write_text(content)
    with pytest.raises(RunError, match=needle):
        run.thresholds()


def test_a_bad_history_row_is_a_run_error(run):
    run.history_path.write_text("machine,epoch,loss,val_loss,seconds\nfan,one,1.0,,0.1\n")
    with pytest.raises(RunError, match="line 2"):
        run.history()
    run.history_path.write_text("machine,loss\nfan,1.0\n")
    with pytest.raises(RunError, match="expected"):
        run.history()
    run.train_scores_path.write_text("machine,section,domain,file,score\nfan,00,source,a,x\n")
    with pytest.raises(RunError, match="score 'x' is not a number"):
        run.train_scores()


def test_metrics_are_set_aside(run):
    run.metrics_json.write_text("{}")
    moved = run.set_metrics_aside()
    assert [p.name for p in moved] == ["metrics.previous.json"]
    assert not run.metrics_json.exists() and moved[0].read_text() == "{}"
    assert run.set_metrics_aside() == []


# --- hashes -----------------------------------------------------------------------------------


def test_complete_machine_records_every_model_file_and_the_thresholds(run):
    trained(run)
    files = load_run(run.path, require_complete=False).manifest["files"]
    assert sorted(files) == [
        "models/fan/detector.json",
        "models/fan/model.npz",
        "models/pump/detector.json",
        "models/pump/members/0/detector.json",
        "thresholds.json",
    ]
    assert files["models/fan/model.npz"] == sha256_of(run.model_dir("fan") / "model.npz")
    run.verify(["fan", "pump"])  # unchanged: no error


def test_retraining_a_machine_replaces_its_hashes(run):
    trained(run)
    (run.model_dir("fan") / "model.npz").unlink()
    save_model(run, "fan", {"model.pt": b"new weights"})
    run.complete_machine("fan", 10)
    assert "models/fan/model.npz" not in run.manifest["files"]
    run.verify(["fan"])


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: (r.model_dir("fan") / "model.npz").write_bytes(b"fan weightz"), "changed"),
        (lambda r: (r.model_dir("fan") / "model.npz").unlink(), "is missing"),
        (lambda r: (r.model_dir("fan") / "extra.pt").write_bytes(b"x"), "was added"),
        (lambda r: r.thresholds_path.write_text('{"fan": {"threshold": 9}}'), "changed"),
    ],
)
def test_verify_names_the_changed_file(run, change, needle):
    trained(run)
    change(run)
    with pytest.raises(RunError, match=needle) as caught:
        run.verify(["fan"])
    assert "--trust-modified" in str(caught.value)
    with pytest.raises(RunError) as caught:
        run.verify(["fan"], override=None)
    assert "--trust-modified" not in str(caught.value)


def test_verify_only_checks_the_machines_asked_for(run):
    trained(run)
    (run.model_dir("pump") / "detector.json").write_text("changed")
    run.verify(["fan"])
    with pytest.raises(RunError, match="models/pump/detector.json was changed"):
        run.verify(["fan", "pump"])


def test_verify_without_hashes(run):
    save_model(run, "fan", {"detector.json": b"{}"})
    with pytest.raises(RunError, match="records no file hashes for fan"):
        run.verify(["fan"])
    run.manifest["run_layout_version"] = 1
    with pytest.raises(RunError, match="earlier asd") as caught:
        run.verify(["fan"])
    assert "train it again with `asd train DETECTOR` (this run's detector: lof)" in str(
        caught.value
    )
