"""Scoring: a run's detectors on test clips, written as DCASE submission files.

For each machine type and section, in ``<run>/scores/`` (or ``--out``):

* ``anomaly_score_<machine>_section_<ss>_test.csv``: ``file.wav,score`` rows, no header;
* ``decision_result_<machine>_section_<ss>_test.csv``: ``file.wav,0|1`` rows (1 = anomaly,
  score above the run's threshold for that machine);
* ``scores.csv``: every clip with its machine, section, path, domain, label, score, decision.

The folder holds the latest scoring only: submission files an earlier call left there for other
machines or sections are removed (and reported), so `asd evaluate` never mixes two scorings.
A folder given with ``out`` is left as it is, apart from the files written.

The run's own feature settings are used, never the current ones: a store without features made
with those settings is refused (``--data`` featurizes the files with them first).

The submission files name clips by file name only, so two clips of one machine type and section
with the same name (the same data set featurized from two folders) are refused, not mixed up.
Clips whose name has no section go to section ``00``. Nothing is written until every machine
type is scored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asdcli.errors import DataError, RunError
from asdcli.files import read_json, write_csv
from asdcli.naming import UNKNOWN
from asdcli.runs import Run, load_run
from asdcli.settings import FeatureSettings
from asdcli.store import ClipRecord, FeatureStore


@dataclass
class ScoreResult:
    run: Run
    out: Path
    files: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # machine -> clips scored
    skipped_machines: dict[str, int] = field(default_factory=dict)  # no model -> clips
    replaced: list[Path] = field(default_factory=list)  # earlier submission files removed
    metrics_set_aside: list[Path] = field(default_factory=list)  # metrics of the last scoring


def _run_features(run: Run) -> FeatureSettings:
    try:
        return FeatureSettings.model_validate(run.manifest["feature_settings"])
    except (KeyError, ValueError) as exc:
        raise RunError(
            f"{run.path} has no usable feature settings in its manifest ({exc})."
        ) from None


def score_run(
    run_dir: Path,
    store_path: Path,
    data: Sequence[Path] | None = None,
    out: Path | None = None,
    allow_incomplete: bool = False,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> ScoreResult:
    """Score test clips with the run's models and write the submission files.

    Parameters
    ----------
    run_dir : the run folder.
    store_path : the feature store holding (or receiving, with ``data``) the clips.
    data : files or folders to score; they are featurized into the store first (cached).
        Default: every test clip in the store of the run's machine types.
    out : folder for the CSV files (default ``<run>/scores``).
    """
    run = load_run(run_dir, require_complete=not allow_incomplete)
    fs = _run_features(run)
    key = fs.key()
    if key != run.manifest.get("feature_key"):
        raise RunError(f"{run.path}: manifest feature key does not match its feature settings.")

    wanted: set[str] | None = None
    if data:
        from asdcli.featurize import discover, featurize

        featurize(data, fs, store_path, workers=workers)
        wanted = {str(p) for p in discover(data)}

    store = FeatureStore(store_path)
    if not store.has(key):
        raise DataError(
            f"{store_path} holds no features made with this run's feature settings (key {key}); "
            f"featurize the test data with them, e.g. `asd score {run_dir} --data DATA`."
        )
    records = [
        r
        for r in store.clips(key)
        if (r.path in wanted if wanted is not None else r.split == "test")
    ]
    if not records:
        where = "the given --data" if data else f"{store_path} (split test)"
        raise DataError(f"No clips to score in {where}.")

    thresholds = _thresholds(run)
    by_machine: dict[str, list[ClipRecord]] = {}
    for r in records:
        by_machine.setdefault(r.machine, []).append(r)
    result = ScoreResult(run, out or run.path / "scores")
    trained = set(run.manifest.get("completed_machines", run.machines))
    scorable = {m: recs for m, recs in by_machine.items() if m in trained}
    result.skipped_machines = {m: len(r) for m, r in by_machine.items() if m not in trained}
    if not scorable:
        raise RunError(
            f"Run {run.name} has no model for machine(s) {', '.join(sorted(by_machine))} "
            f"(it was trained on {', '.join(sorted(trained)) or 'nothing'})."
        )

    _refuse_duplicate_names(scorable, run_dir)
    for machine in sorted(scorable):  # before anything is written: all or nothing
        model_dir = run.model_dir(machine)
        if not model_dir.is_dir():
            raise RunError(
                f"Run {run.name} has no model for {machine}: {model_dir} is missing. "
                "Train again, or restore the folder."
            )

    from asdcli.detectors import get_detector

    cls = get_detector(run.detector)
    table: list[list[Any]] = []
    outputs: list[tuple[str, list[tuple[str, Any]]]] = []
    for machine, recs in sorted(scorable.items()):
        model_dir = run.model_dir(machine)
        try:
            det = cls.load(model_dir)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise RunError(
                f"Run {run.name}: the model for {machine} cannot be loaded ({exc}). Train again."
            ) from None
        if progress:
            progress(machine, 0, len(recs))
        scores = det.score(store.load(key, recs), recs)
        threshold = thresholds.get(machine)
        decisions = (
            (scores > threshold).astype(int) if threshold is not None else np.zeros(len(recs), int)
        )
        sections: dict[str, list[tuple[str, float, int]]] = {}
        for r, s, d in zip(recs, scores, decisions, strict=True):
            section = _section(r)
            sections.setdefault(section, []).append((r.name, float(s), int(d)))
            table.append([machine, section, r.name, r.path, r.domain, r.label, float(s), int(d)])
        for section, rows in sorted(sections.items()):
            stem = f"{machine}_section_{section}_test.csv"
            outputs.append((f"anomaly_score_{stem}", [(n, s) for n, s, _ in rows]))
            outputs.append((f"decision_result_{stem}", [(n, d) for n, _, d in rows]))
        result.counts[machine] = len(recs)
        if progress:
            progress(machine, len(recs), len(recs))
    # Written only once every machine is scored: a failure leaves the old files as they were.
    for name, pairs in outputs:
        result.files.append(write_csv(result.out / name, pairs))
    # The folder holds one scoring: submission files of an earlier call on other clips would be
    # mixed into `asd evaluate`, so they go (and the CLI says so).
    # Only in the run's own scores/ folder: a folder given with --out is the user's.
    stale = [
        p
        for p in sorted(result.out.glob("*_section_*_test.csv"))
        if p not in result.files and p.name.startswith(("anomaly_score_", "decision_result_"))
    ]
    for p in stale if out is None else []:
        p.unlink()
        result.replaced.append(p)
    if out is None:
        # Metrics of the previous scoring no longer describe these scores: keep them aside.
        for name in ("metrics.json", "metrics.csv"):
            old_metrics = run.path / name
            if old_metrics.is_file():
                aside = old_metrics.with_name(name.replace("metrics.", "metrics.previous."))
                os.replace(old_metrics, aside)
                result.metrics_set_aside.append(aside)
    write_csv(
        result.out / "scores.csv",
        table,
        header=["machine", "section", "file", "path", "domain", "label", "score", "decision"],
    )
    return result


def _section(record: ClipRecord) -> str:
    """The section of the submission file a clip goes to (names without one: ``00``)."""
    return record.section if record.section != UNKNOWN else "00"


def _refuse_duplicate_names(by_machine: dict[str, list[ClipRecord]], run_dir: Path) -> None:
    """A submission file names clips by file name only: two clips of one file must differ.

    Raises
    ------
    DataError
        Naming one duplicate and its two folders, e.g. when the store holds two copies of a
        data set featurized from different folders.
    """
    for machine, recs in sorted(by_machine.items()):
        seen: dict[tuple[str, str], ClipRecord] = {}
        dups: list[tuple[ClipRecord, ClipRecord]] = []
        for r in recs:
            first = seen.setdefault((_section(r), r.name), r)
            if first is not r:
                dups.append((first, r))
        if dups:
            a, b = dups[0]
            more = f" ({len(dups)} clip names in all)" if len(dups) > 1 else ""
            raise DataError(
                f"{machine} section {_section(a)}: clip name {a.name} is in both "
                f"{Path(a.path).parent} and {Path(b.path).parent}{more}; one submission file "
                f"cannot hold both.\nScore one folder with `asd score {run_dir} --data FOLDER`, "
                "or featurize each folder into its own --store."
            )


def _thresholds(run: Run) -> dict[str, float]:
    path = run.path / "thresholds.json"
    if not path.is_file():
        return {}
    return {m: float(v["threshold"]) for m, v in read_json(path).items()}
