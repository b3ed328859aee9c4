"""benchmarks.ranking --data: every detector ranked on real-recording folders (tiny here)."""

from __future__ import annotations

import json
import platform

import pytest
from conftest import make_dataset

from benchmarks import ranking
from benchmarks.__main__ import cpu_model


@pytest.mark.slow
def test_ranking_on_data_folders_writes_one_table_per_set_and_a_summary(tmp_path):
    a = make_dataset(tmp_path / "set_a", machines=("fan",), n_train=8, n_test=8)
    b = make_dataset(tmp_path / "set_b", machines=("pump",), n_train=8, n_test=8)
    out = tmp_path / "out"
    code = ranking.main(
        [
            "--quick",
            "--data",
            str(a),
            str(b),
            "--only",
            "knn,gmm",
            "--work",
            str(tmp_path / "w"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "ranking_real.json").read_text())
    assert set(result["sets"]) == {"set_a", "set_b"}
    # The processor by name (scores differ between processors), not only "x86_64".
    assert result["meta"]["machine"].split(",")[0] == (cpu_model() or platform.machine())
    for rows in result["sets"].values():
        assert sorted(r["detector"] for r in rows) == ["gmm", "knn"]
        assert all(0.0 <= r["official"] <= 1.0 for r in rows)
        assert [r["rank"] for r in rows] == [1, 2]
        assert rows[0]["official"] >= rows[1]["official"]
    md = (out / "ranking_real.md").read_text()
    assert "--data set_a set_b" in md and "### set_a" in md and "### set_b" in md
    # The summary row of each ranked detector holds both sets' scores and their mean.
    knn = next(line for line in md.splitlines() if line.startswith("| knn |"))
    cells = [c.strip() for c in knn.strip("|").split("|")]
    scores = {r["detector"]: r["official"] for r in result["sets"]["set_a"]}
    assert cells[1] == f"{scores['knn']:.3f}" and cells[3] != "n/a"


def test_ranking_refuses_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        ranking.main(["--data", str(tmp_path / "nope")])
    assert caught.value.code == 2 and "not a folder" in capsys.readouterr().err
