"""Verified run folders (issue 14): a model or state file changed after training is refused by
`asd score`, naming the file; ``--trust-modified`` scores a run changed on purpose."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset
from typer.testing import CliRunner

from asdcli.cli import app
from asdcli.featurize import featurize
from asdcli.files import read_json, write_json
from asdcli.settings import load_settings
from asdcli.train import train

runner = CliRunner()
MACHINE = "fan"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One torch run (dcase-ae) and one scikit-learn run (lof), trained once for the module."""
    root = tmp_path_factory.mktemp("verify")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # no conf/config.yaml of the developer
        for name in [n for n in os.environ if n.startswith("ASD_")]:
            mp.delenv(name)
        data = make_dataset(root / "data", machines=(MACHINE,), n_train=6, n_test=4)
        settings, _ = load_settings(
            None,
            {
                "paths.store": root / "f.h5",
                "paths.runs": root / "runs",
                "features.n_mels": 32,
                "train.epochs": 1,
                "train.device": "cpu",
                "detectors.dcase_ae.hidden": 16,
                "detectors.lof.n_neighbors": 2,
            },
        )
        featurize([data], settings.features, settings.paths.store)
        runs = {name: train(settings, name).run.path for name in ("dcase-ae", "lof")}
    return {"store": root / "f.h5", **runs}


@pytest.fixture
def copy_of(trained, tmp_path):
    """A fresh copy of a trained run (each test edits its own)."""

    def copy(detector: str) -> Path:
        return Path(shutil.copytree(trained[detector], tmp_path / "runs" / trained[detector].name))

    return copy


def asd(trained, *args: object):
    env = {"ASD_PATHS__STORE": str(trained["store"]), "ASD_FEATURES__N_MELS": "32"}
    return runner.invoke(app, [str(a) for a in args], env={**env, "COLUMNS": "4000"})


def refused(result, *needles: str) -> str:
    """Exit 2 with a message of at most two lines holding every needle, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.output[result.output.index("error:") :].strip()
    assert len(message.splitlines()) <= 2, message
    for needle in needles:
        assert needle in message, message
    return message


def weights_file(run: Path) -> str:
    """The detector's own state file, as its detector.json lists it (not a hard-coded name)."""
    (name,) = read_json(run / "models" / MACHINE / "detector.json")["files"]
    return f"models/{MACHINE}/{name}"


def target(run: Path, which: str) -> str:
    return {
        "weights": weights_file(run),
        "detector.json": f"models/{MACHINE}/detector.json",
        "thresholds.json": "thresholds.json",
    }[which]


CASES = [
    ("dcase-ae", "weights"),  # torch: model.pt
    ("lof", "weights"),  # scikit-learn model file
    ("lof", "detector.json"),
    ("dcase-ae", "thresholds.json"),
]


@pytest.mark.parametrize(("detector", "which"), CASES)
def test_one_changed_byte_is_refused_naming_the_file(trained, copy_of, detector, which):
    run = copy_of(detector)
    rel = target(run, which)
    data = bytearray((run / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (run / rel).write_bytes(bytes(data))
    refused(asd(trained, "score", run), f"{rel} was changed after training", "--trust-modified")
    assert not (run / "scores").exists()  # refused before anything was loaded or written


def edit_on_purpose(path: Path) -> None:
    """A valid change a user could make: the run still loads and scores."""
    if path.suffix == ".pt":
        import torch

        blob = torch.load(path, weights_only=True)
        name = next(k for k, v in blob["model"].items() if v.is_floating_point())
        blob["model"][name] = blob["model"][name] * 1.01
        torch.save(blob, path)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        name = next(k for k, v in arrays.items() if v.dtype.kind == "f")
        arrays[name] = arrays[name] * 1.0 + 1e-9
        np.savez(path, **arrays)
    elif path.name == "thresholds.json":
        thresholds = read_json(path)
        thresholds[MACHINE]["threshold"] = -1e9  # every clip decided anomalous
        write_json(path, thresholds)
    else:  # detector.json: the same content, laid out otherwise
        path.write_text(json.dumps(read_json(path), indent=4))


@pytest.mark.parametrize(("detector", "which"), CASES)
def test_trust_modified_scores_a_run_changed_on_purpose(trained, copy_of, detector, which):
    run = copy_of(detector)
    rel = target(run, which)
    edit_on_purpose(run / rel)
    refused(asd(trained, "score", run), f"{rel} was changed after training")
    result = asd(trained, "score", run, "--trust-modified")
    assert result.exit_code == 0, result.output
    decisions = (run / "scores" / f"decision_result_{MACHINE}_section_00_test.csv").read_text()
    assert len(decisions.splitlines()) == 4
    if which == "thresholds.json":  # the changed file is the one used
        assert {line.split(",")[1] for line in decisions.splitlines()} == {"1"}


def test_added_and_removed_files_are_named(trained, copy_of):
    run = copy_of("lof")
    extra = run / "models" / MACHINE / "extra.bin"
    extra.write_bytes(b"\x00")
    refused(asd(trained, "score", run), f"models/{MACHINE}/extra.bin was added after training")
    extra.unlink()
    (run / weights_file(run)).unlink()
    refused(asd(trained, "score", run), f"{weights_file(run)} is missing")


def test_a_run_written_before_the_hashes_says_how_to_retrain(trained, copy_of):
    run = copy_of("lof")
    manifest = read_json(run / "manifest.json")
    del manifest["files"]
    write_json(run / "manifest.json", {**manifest, "run_layout_version": 1})
    refused(
        asd(trained, "score", run),
        "did not record file hashes",
        "train it again with `asd train DETECTOR` (this run's detector: lof)",
    )
    assert asd(trained, "score", run, "--trust-modified").exit_code == 0
    assert asd(trained, "evaluate", run, "--no-figures").exit_code == 0  # still readable


def test_an_ensemble_refuses_a_changed_member_run(trained, copy_of):
    run = copy_of("lof")
    rel = weights_file(run)
    data = bytearray((run / rel).read_bytes())
    data[-1] ^= 0x01
    (run / rel).write_bytes(bytes(data))
    message = refused(
        asd(trained, "train", "ensemble", "--members", run, "--runs", run.parent),
        f"{rel} was changed after training",
    )
    assert "--trust-modified" not in message  # train has no such option
