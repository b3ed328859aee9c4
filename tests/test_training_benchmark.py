"""benchmarks.training: the reference tree, the side processes and the summary (the timed
ranking runs themselves are the benchmark, not a test)."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks import training


def _git(repo, *args):
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_export_tree_writes_the_commit_not_the_working_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("VERSION = 'old'\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-qm", "old")
    old = _git(repo, "rev-parse", "HEAD")
    (repo / "code.py").write_text("VERSION = 'new'\n")
    _git(repo, "commit", "-qam", "new")
    (repo / "code.py").write_text("VERSION = 'uncommitted'\n")

    assert training.export_tree(repo, "HEAD~1", tmp_path / "ref") == old
    assert (tmp_path / "ref" / "code.py").read_text() == "VERSION = 'old'\n"
    assert not (tmp_path / "ref" / ".git").exists()


def test_export_tree_says_what_to_do_about_a_missing_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    with pytest.raises(training.BenchmarkError, match="unshallow"):
        training.export_tree(repo, "0" * 40, tmp_path / "ref")
    assert not (tmp_path / "ref").exists()


def _stdout(tree, code):
    return training.side_run(tree, code, capture_output=True, text=True, check=True).stdout


def test_a_side_imports_the_package_of_its_own_tree(tmp_path):
    # The test environment has asdcli installed in editable mode from this checkout: a side
    # must still get the tree's package, or the reference would time this checkout's code.
    tree = tmp_path / "tree"
    (tree / "asdcli").mkdir(parents=True)
    (tree / "asdcli" / "__init__.py").write_text("WHERE = 'the tree'\n")
    out = _stdout(tree, "import asdcli, numpy; print(asdcli.WHERE, asdcli.__file__)")
    assert out.startswith("the tree ") and out.split()[-1].startswith(str(tree))
    # A module only this checkout has must not be found: without `python -S` the editable
    # install's finder serves it from the checkout.
    probe = (
        "try:\n import asdcli.allocator as m\n print(m.__file__)\n"
        "except ImportError:\n print('absent')"
    )
    assert _stdout(tree, probe).strip() == "absent"


def _rounds(ref_epochs, new_epochs, ref_official=0.5, new_official=0.5):
    def result(epochs, official):
        return {
            "emb-knn": {
                "epoch_seconds": epochs,
                "official": official,
                "auc_source": 0.6,
                "auc_target": 0.4,
                "pauc": 0.5,
                "train_seconds": sum(epochs) + 1.0,
            }
        }

    return {
        "reference": [result(e, ref_official) for e in ref_epochs],
        "this checkout": [result(e, new_official) for e in new_epochs],
    }


def test_summary_is_the_median_over_every_epoch_and_the_ratio_of_medians():
    summary = training.summarise(_rounds([[2.0, 4.0, 3.0], [3.0]], [[1.0, 1.5], [1.5, 2.0]]))
    e = summary["emb-knn"]
    assert e["reference"]["epoch_s_median"] == 3.0  # median of 2, 4, 3, 3
    assert e["this checkout"]["epoch_s_median"] == 1.5  # median of 1, 1.5, 1.5, 2
    assert e["speedup"] == 2.0
    assert e["reference"]["epochs"] == [3, 1] and e["this checkout"]["epochs"] == [2, 2]
    assert not e["reference"]["scores_differ"]
    assert "conv-ae" in summary and "speedup" not in summary["conv-ae"]  # not run: no ratio
    md = training.markdown(
        summary,
        {"command": "c", "machine": "m", "date": "d", "reference": "a" * 40, "checkout": "b" * 40,
         "rounds": 2},
    )  # fmt: skip
    row = next(line for line in md.splitlines() if line.startswith("| emb-knn |"))
    assert "| 3.00 | 1.50 | 2.00x | 3,1 / 2,2 |" in row
    assert not any(line.startswith("| conv-ae |") for line in md.splitlines())


def test_a_round_with_other_scores_is_flagged():
    rounds = _rounds([[1.0]], [[1.0], [1.0]])
    rounds["this checkout"][1]["emb-knn"]["official"] = 0.7
    summary = training.summarise(rounds)
    assert summary["emb-knn"]["this checkout"]["scores_differ"]
    assert not summary["emb-knn"]["reference"]["scores_differ"]
    assert summary["emb-knn"]["this checkout"]["official"] == 0.5  # the first round's


def test_side_result_reads_the_ranking_and_each_runs_history(tmp_path):
    run = tmp_path / "work" / "runs" / "emb-knn-1"
    run.mkdir(parents=True)
    (run / "label.txt").write_text("emb-knn\n")
    (run / "history.csv").write_text("epoch,loss,val_loss,seconds\n1,2.0,1.9,4.5\n2,1.5,1.6,3.5\n")
    other = tmp_path / "work" / "runs" / "knn-1"  # ranked, but not a timed label
    other.mkdir()
    (other / "label.txt").write_text("knn\n")
    out = tmp_path / "out"
    out.mkdir()
    rows = [
        {"detector": "emb-knn", "official": 0.61, "auc_source": 0.7, "auc_target": 0.55,
         "pauc": 0.58, "train_seconds": 9.0},
        {"detector": "knn", "official": 0.5, "auc_source": 0.5, "auc_target": 0.5,
         "pauc": 0.5, "train_seconds": 0.1},
    ]  # fmt: skip
    (out / "ranking.json").write_text(json.dumps({"meta": {}, "rows": rows}))
    result = training.side_result(tmp_path / "work", out)
    assert set(result) == {"emb-knn"}
    assert result["emb-knn"]["epoch_seconds"] == [4.5, 3.5]
    assert result["emb-knn"]["official"] == 0.61 and result["emb-knn"]["train_seconds"] == 9.0


def test_rounds_below_one_are_refused(capsys):
    with pytest.raises(SystemExit) as caught:
        training.main(["--rounds", "0"])
    assert caught.value.code == 2 and "--rounds" in capsys.readouterr().err


def _stub_tree(tmp_path, exit_code=0):
    """A tree whose ``benchmarks.ranking`` only records the seed and arguments it was given."""
    tree = tmp_path / "tree"
    (tree / "benchmarks").mkdir(parents=True)
    (tree / "benchmarks" / "__init__.py").write_text("")
    (tree / "benchmarks" / "ranking.py").write_text(
        "import json, pathlib\n"
        "SEED = 0\n"
        "def main(argv):\n"
        "    out = pathlib.Path(argv[argv.index('--out') + 1])\n"
        "    out.mkdir(parents=True)\n"
        "    data = pathlib.Path(argv[argv.index('--work') + 1]) / 'data'\n"
        "    seen = {'seed': SEED, 'argv': argv, 'data': str(data.resolve())}\n"
        "    (out / 'seen.json').write_text(json.dumps(seen))\n"
        f"    return {exit_code}\n"
    )
    return tree


def test_a_side_runs_its_trees_ranking_with_the_seed_on_the_shared_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    work = tmp_path / "work"
    out = training.run_side(
        _stub_tree(tmp_path), work, data, quick=True, seed=3, log=tmp_path / "side.log"
    )
    seen = json.loads((out / "seen.json").read_text())
    assert seen["seed"] == 3 and seen["data"] == str(data.resolve())
    argv = seen["argv"]
    assert argv[argv.index("--only") + 1] == "conv-ae,emb-knn" and "--quick" in argv


def test_a_failing_side_names_its_log(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "side.log"
    with pytest.raises(training.BenchmarkError, match="exit 1") as caught:
        training.run_side(_stub_tree(tmp_path, 1), tmp_path / "w", data, False, 0, log)
    assert str(log) in str(caught.value)


def test_a_work_folder_with_an_earlier_run_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "round1-reference").mkdir()
    assert training.main(["--work", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "reference").exists() and not (tmp_path / "out").exists()
