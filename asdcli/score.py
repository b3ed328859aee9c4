"""Scoring: a run's detectors on test clips, written as DCASE submission files.

For each machine type and section, in the run's scores folder (or ``--out``), the two
submission files of :mod:`asdcli.submission` (the scores, and the decisions: 1 when the score
is above the run's threshold for that machine), and ``scores.csv``: every clip with its
machine, section, path, domain, label, score, decision.

Before a model is loaded, the run's files are checked against the hashes in its manifest
(:meth:`asdcli.runs.Run.verify`): a model file changed after training is named and refused,
unless the user says ``trust_modified`` (``--trust-modified``).

The folder holds the latest scoring only: submission files an earlier call left there for other
machines or sections are removed (and reported), so `asd evaluate` never mixes two scorings.
A folder given with ``out`` is left as it is, apart from the files written.

The run's own feature settings are used, never the current ones: a store without features made
with those settings is refused (``--data`` featurizes the files with them first).

The submission files name clips by file name only, so two clips of one machine type and section
with the same name (the same data set featurized from two folders) are refused, not mixed up.
Clips whose name has no section go to section ``00``. Nothing is written until every machine
type is scored, and then all files are written or none (a full disk leaves the previous
scoring as it was).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asdcli import submission
from asdcli.detectors.base import Detector
from asdcli.errors import DataError, RunError
from asdcli.files import csv_text, write_files
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
    notes: list[str] = field(default_factory=list)  # featurize's notes on --data (resampling)


CLIP_TABLE = "scores.csv"
CLIP_TABLE_HEADER = ("machine", "section", "file", "path", "domain", "label", "score", "decision")


def run_features(run: Run) -> FeatureSettings:
    try:
        return FeatureSettings.model_validate(run.manifest["feature_settings"])
    except (KeyError, ValueError) as exc:
        raise RunError(
            f"{run.path} has no usable feature settings in its manifest ({exc})."
        ) from None


def _check_model_dir(run: Run, machine: str) -> None:
    model_dir = run.model_dir(machine)
    if not model_dir.is_dir():
        raise RunError(
            f"Run {run.name} has no model for {machine}: {model_dir} is missing. "
            "Train again, or restore the folder."
        )


def load_model(run: Run, machine: str, device: str | None = None) -> Detector:
    """The trained detector of ``machine`` in ``run`` (verify the run's hashes first).

    Raises
    ------
    RunError
        The model folder is missing, or its files are not what asd writes (nothing is run).
    """
    from asdcli.detectors import get_detector

    _check_model_dir(run, machine)
    try:
        return get_detector(run.detector).load(run.model_dir(machine), device=device)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise RunError(
            f"Run {run.name}: the model for {machine} cannot be loaded ({exc}). Train again."
        ) from None


def score_run(
    run_dir: Path,
    store_path: Path,
    data: Sequence[Path] | None = None,
    out: Path | None = None,
    allow_incomplete: bool = False,
    trust_modified: bool = False,
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
    out : folder for the CSV files (default: the run's scores folder).
    allow_incomplete : score an interrupted run with the models it saved.
    trust_modified : skip the check of the run's files against its manifest's hashes.

    Raises
    ------
    RunError
        An unusable run: incomplete, of another version, missing a model, or with a file
        changed after training.
    DataError
        No clips to score, or clips the submission files cannot hold apart.
    DiskFullError
        The disk filled up; the files of the previous scoring are as they were.
    """
    run = load_run(run_dir, require_complete=not allow_incomplete)
    fs = run_features(run)
    key = fs.key()
    if key != run.feature_key:
        raise RunError(f"{run.path}: manifest feature key does not match its feature settings.")

    wanted: set[str] | None = None
    notes: list[str] = []
    if data:
        from asdcli.featurize import discover, featurize

        summary = featurize(data, fs, store_path, workers=workers)
        notes = [*summary.warnings, *summary.resample_notes()]
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

    by_machine: dict[str, list[ClipRecord]] = {}
    for r in records:
        by_machine.setdefault(r.machine, []).append(r)
    result = ScoreResult(run, out or run.scores_dir, notes=notes)
    trained = set(run.completed_machines)
    scorable = {m: recs for m, recs in by_machine.items() if m in trained}
    result.skipped_machines = {m: len(r) for m, r in by_machine.items() if m not in trained}
    if not scorable:
        raise RunError(
            f"Run {run.name} has no model for machine(s) {', '.join(sorted(by_machine))} "
            f"(it was trained on {', '.join(sorted(trained)) or 'nothing'})."
        )

    _refuse_duplicate_names(scorable, run_dir)
    for machine in sorted(scorable):  # before anything is written: all or nothing
        _check_model_dir(run, machine)
    if not trust_modified:
        run.verify(sorted(scorable))
    thresholds = run.thresholds()

    table: list[list[Any]] = []
    outputs: dict[Path, bytes] = {}
    for machine, recs in sorted(scorable.items()):
        det = load_model(run, machine)
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
            for name, content in submission.section_files(machine, section, rows).items():
                outputs[result.out / name] = content
        result.counts[machine] = len(recs)
        if progress:
            progress(machine, len(recs), len(recs))
    outputs[result.out / CLIP_TABLE] = csv_text(table, header=CLIP_TABLE_HEADER).encode()
    # Written only once every machine is scored, and all files or none: a failure (a full
    # disk) leaves the old files as they were.
    written = write_files(outputs)
    result.files = [p for p in written if p.name != CLIP_TABLE]
    # The folder holds one scoring: submission files of an earlier call on other clips would be
    # mixed into `asd evaluate`, so they go (and the CLI says so).
    # Only in the run's own scores folder: a folder given with --out is the user's.
    if out is None:
        for p in submission.submission_files(result.out):
            if p not in result.files:
                p.unlink()
                result.replaced.append(p)
        # Metrics of the previous scoring no longer describe these scores: keep them aside.
        result.metrics_set_aside = run.set_metrics_aside()
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
