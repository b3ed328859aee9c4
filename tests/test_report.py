"""Run list and comparison over hand-built run folders (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from rich.console import Console

from asdcli.cli.render import comparison_table, runs_table
from asdcli.errors import RunError
from asdcli.evaluate import evaluate_run
from asdcli.report import compare, list_report
from asdcli.runs import RUN_LAYOUT_VERSION

# Two clips per domain and label; the scores decide the AUCs, hence the ranking.
CLIPS = [
    f"section_00_{d}_test_{lab}_{i:04d}.wav"
    for i, (d, lab) in enumerate(
        [(d, lab) for d in ("source", "target") for lab in ("normal", "anomaly") for _ in range(2)]
    )
]
PERFECT = [0.1, 0.2, 0.8, 0.9, 0.15, 0.25, 0.7, 0.95]  # every anomaly above every normal
MIXED = [0.1, 0.6, 0.5, 0.9, 0.3, 0.8, 0.2, 0.95]


def make_run(
    root: Path,
    name: str,
    detector: str,
    scores: dict[str, list[float]] | None = None,
    status: str = "complete",
) -> Path:
    """A run folder with a manifest and, when ``scores`` are given, DCASE score files."""
    run = root / name
    run.mkdir(parents=True)
    machines = sorted(scores or {"fan": []})
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "run_layout_version": RUN_LAYOUT_VERSION,
                "detector": detector,
                "machines": machines,
                "status": status,
                "train_seconds": 3.25,
                "n_params": {m: 100 * (i + 1) for i, m in enumerate(machines)},
                "feature_key": "abc",
                "started": "2024-01-01T00:00:00+00:00",
            }
        )
    )
    for machine, values in (scores or {}).items():
        (run / "scores").mkdir(exist_ok=True)
        for kind, rows in (
            ("anomaly_score", zip(CLIPS, values, strict=True)),
            ("decision_result", ((f, int(s > 0.5)) for f, s in zip(CLIPS, values, strict=True))),
        ):
            path = run / "scores" / f"{kind}_{machine}_section_00_test.csv"
            with path.open("w", newline="") as fh:
                csv.writer(fh, lineterminator="\n").writerows(rows)
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Three runs: a weaker and a better evaluated one, and one with a corrupt manifest."""
    root = tmp_path / "runs"
    weak = make_run(root, "2024-01-01T00-00-00_iforest", "iforest", {"fan": MIXED, "pump": MIXED})
    good = make_run(root, "2024-01-02T00-00-00_dcase_ae", "dcase_ae", {"fan": PERFECT})
    evaluate_run(weak, figures=False)
    evaluate_run(good, figures=False)
    bad = root / "2024-01-03T00-00-00_broken"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    return root


def text_of(table) -> str:
    console = Console(record=True, width=250)
    console.print(table)
    return console.export_text()


def test_list_shows_every_run_with_reasons(runs):
    rows = list_report(runs)
    assert [r.name for r in rows] == [
        "2024-01-01T00-00-00_iforest",
        "2024-01-02T00-00-00_dcase_ae",
        "2024-01-03T00-00-00_broken",
    ]
    weak, good, bad = rows
    assert good.status == "complete" and good.evaluated
    assert good.official_score == pytest.approx(1.0)
    assert good.auc_source == good.auc_target == good.pauc == pytest.approx(1.0)
    assert weak.official_score is not None and weak.official_score < 1.0
    assert weak.machines == ["fan", "pump"]
    assert weak.per_machine.keys() == {"fan", "pump"}
    assert weak.train_seconds == 3.25
    assert weak.n_params == 100 + 200  # summed over machine types
    assert bad.status == "unreadable"
    assert bad.detector is None and bad.official_score is None
    assert "cannot be read" in bad.reason

    text = text_of(runs_table(rows))
    assert "2024-01-03T00-00-00_broken" in text and "cannot be read" in text
    assert "unreadable" in text and "dcase_ae" in text and "1.000" in text


def test_status_of_unevaluated_and_incomplete_runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", "lof")
    make_run(root, "b", "lof", status="incomplete")
    make_run(root, "c", "lof", status="running")
    rows = {r.name: r for r in list_report(root)}
    assert rows["a"].status == "not evaluated"
    assert "asd evaluate" in rows["a"].reason
    assert rows["b"].status == "incomplete"
    assert rows["c"].status == "running"
    assert all(r.official_score is None for r in rows.values())


def test_compare_ranks_and_writes(runs):
    comparison = compare(runs)
    assert [r.detector for r in comparison.ranked] == ["dcase_ae", "iforest"]
    scores = [r.official_score for r in comparison.ranked]
    assert scores == sorted(scores, reverse=True)
    assert [r.name for r in comparison.unranked] == ["2024-01-03T00-00-00_broken"]
    assert comparison.machines == ["fan", "pump"]
    # one run covers fan and pump, the other fan only: the overall scores are not like for like
    assert any("different machine types" in n for n in comparison.notes)

    md = (runs / "report.md").read_text()
    assert comparison.report_md == runs / "report.md"
    first = md.index("| 1 | 2024-01-02T00-00-00_dcase_ae |")
    second = md.index("| 2 | 2024-01-01T00-00-00_iforest |")
    assert first < second
    assert "| rank | run | detector | official | AUC-s | AUC-t | pAUC | train s | params |" in md
    assert "| run | fan | pump |" in md
    assert "**1.0000**" in md  # best fan score in bold
    assert "2024-01-03T00-00-00_broken" in md and "cannot be read" in md
    assert "![" in md and "(comparison.png)" in md
    assert "different machine types" in md and "max FPR 0.1" in md

    png = runs / "comparison.png"
    assert comparison.figure == png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = text_of(comparison_table(comparison))
    assert text.index("dcase_ae") < text.index("iforest")
    assert "not ranked" in text


def test_compare_custom_paths(runs, tmp_path):
    out = tmp_path / "elsewhere"
    comparison = compare(runs, out_md=out / "r.md", figure=out / "fig" / "c.png")
    assert (out / "r.md").is_file() and (out / "fig" / "c.png").is_file()
    assert "(fig/c.png)" in (out / "r.md").read_text()
    assert not (runs / "report.md").exists()
    assert comparison.report_md == out / "r.md"


def test_compare_without_evaluated_runs_is_a_run_error(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", "lof")
    with pytest.raises(RunError, match="asd evaluate RUN"):
        compare(root)
    with pytest.raises(RunError, match="asd evaluate RUN"):
        compare(tmp_path / "nothing-here")
    assert not (root / "report.md").exists()
