"""Evaluation of a scored run, as the DCASE 2023 Task 2 evaluator does it.

Orchestration only: the submission files `asd score` left in the run's scores folder are read
with :mod:`asdcli.submission`; the ground truth comes from the clip names
(:func:`asdcli.naming.parse_name`: label and domain are in DCASE development-set names), or
from a folder laid out like the official evaluator's (``--ground-truth``, for renamed
evaluation clips such as ``section_00_0000.wav``). The metrics are those of
:mod:`asdcli.metrics`, the threshold comparison that of :mod:`asdcli.thresholds`, the figures
those of :mod:`asdcli.plots`. Clips whose label is unknown are not evaluated; they are counted
and noted.

Written into the run folder (names from :class:`asdcli.runs.Run`):

* the metrics JSON: everything (per section metrics with notes, per machine and overall
  official score, means, skipped values, thresholds, counts); :mod:`asdcli.report` reads it;
* the metrics CSV: one row per machine type and section, then a row ``all``;
* the figures folder: ROC, confusion matrix and score histogram per machine type (the
  training curve is drawn by `asd train`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from asdcli import metrics as M
from asdcli import submission
from asdcli.errors import DataError, RunError
from asdcli.files import write_csv, write_json, write_png
from asdcli.naming import clip_key, parse_name
from asdcli.runs import Run, load_run
from asdcli.thresholds import compare_thresholds

METRICS_LAYOUT_VERSION = 1
"""Version of the metrics JSON layout; :mod:`asdcli.report` reads it."""

CSV_FIELDS: tuple[str, ...] = (
    "auc_source",
    "auc_target",
    "pauc",
    "auc",
    "pauc_source",
    "pauc_target",
    "precision_source",
    "recall_source",
    "f1_source",
    "precision_target",
    "recall_target",
    "f1_target",
    "accuracy",
)
COUNT_FIELDS: tuple[str, ...] = ("tn", "fp", "fn", "tp")
CSV_HEADER: tuple[str, ...] = ("machine", "section", *CSV_FIELDS, *COUNT_FIELDS, "official_score")
"""Columns of the metrics CSV. ``official_score`` is the harmonic mean of the row's available
``auc_source, auc_target, pauc`` (for the ``all`` row: the run's official score)."""

UNLABELED = -1


@dataclass
class EvalResult:
    """What :func:`evaluate_run` computed and wrote.

    Attributes
    ----------
    run : Path
        The run folder.
    per_section : dict ``(machine, section) -> SectionMetrics``
        Sections with at least one labelled clip.
    summary : dict
        :func:`asdcli.metrics.summarize` of ``per_section``.
    official_score : float or None
        Harmonic mean of every section's AUC (source), AUC (target) and pAUC.
    metrics_json, metrics_csv : Path
        The files written.
    figures : list of Path
        PNG files written in the run's figures folder.
    thresholds : dict
        Per machine: the run's threshold and the oracle F1 threshold
        (see :data:`asdcli.thresholds.ORACLE_NOTE`).
    counts : dict
        ``evaluated`` and ``unlabeled`` clip counts, overall and per ``"machine/section"``.
    notes : list of str
        Run-level remarks (unlabelled clips, missing files, figures not drawn).
    max_fpr : float
    """

    run: Path
    per_section: dict[tuple[str, str], M.SectionMetrics]
    summary: dict[str, Any]
    official_score: float | None
    metrics_json: Path
    metrics_csv: Path
    figures: list[Path] = field(default_factory=list)
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_fpr: float = M.MAX_FPR


@dataclass
class _Section:
    """The clips of one scored section, with their ground truth (``y`` is -1 when unknown)."""

    machine: str
    section: str
    files: list[str]
    scores: np.ndarray
    decisions: np.ndarray | None
    y: np.ndarray
    domain: np.ndarray

    @property
    def labeled(self) -> np.ndarray:
        return np.asarray(self.y != UNLABELED)


def _load_section(
    machine: str, section: str, score_path: Path, ground_truth: Path | None, notes: list[str]
) -> _Section:
    """A section's scores and decisions, matched with its ground truth."""
    scores = submission.read_scores(score_path)
    files = list(scores)
    decision_path = submission.decision_path(score_path)
    decisions: np.ndarray | None = None
    if decision_path.is_file():
        by_file = submission.read_decisions(decision_path)
        if set(by_file) != set(scores):
            odd = sorted(set(by_file) ^ set(scores))
            raise DataError(
                f"{decision_path} and {score_path} list different clips ({len(odd)} differ, "
                f"e.g. {odd[0]}); score the run again with `asd score`."
            )
        decisions = np.array([by_file[f] for f in files], dtype=int)
    else:
        notes.append(f"{decision_path.name} missing: decision metrics not computed")

    y = np.full(len(files), UNLABELED, dtype=int)
    domain = np.full(len(files), "unknown", dtype=object)
    if ground_truth is not None:
        truth = submission.read_ground_truth(ground_truth, machine, section)
        for i, f in enumerate(files):
            if f in truth:
                y[i], domain[i] = truth[f]
        missing = len(set(truth) - set(files))
        if missing:
            notes.append(
                f"{machine}/{section}: {missing} clip(s) of the ground truth have no score"
            )
    else:
        for i, f in enumerate(files):
            info = parse_name(f, machine=machine)
            if info.label in ("normal", "anomaly"):
                y[i] = int(info.label == "anomaly")
            domain[i] = info.domain
    return _Section(
        machine,
        section,
        files,
        np.array([scores[f] for f in files], dtype=float),
        decisions,
        y,
        domain.astype(str),
    )


def _run_thresholds(run: Run, notes: list[str]) -> dict[str, float]:
    """The run's thresholds; they only label figures and sit beside the oracle, so a missing
    or unreadable file is noted, not fatal."""
    if not run.thresholds_path.is_file():
        notes.append(f"{run.thresholds_path.name} missing: the run's thresholds are unknown")
        return {}
    try:
        return run.thresholds()
    except RunError as exc:
        notes.append(f"{exc} The run's thresholds are unknown.")
        return {}


def _only(sections: list[_Section], clips: Collection[str]) -> tuple[list[_Section], int]:
    """``sections`` with only the clips named in ``clips`` (:func:`asdcli.naming.clip_key`),
    sections left empty dropped; and how many clips were left out."""
    kept, left_out = [], 0
    for s in sections:
        keep = np.array([clip_key(s.machine, f) in clips for f in s.files], dtype=bool)
        left_out += int((~keep).sum())
        if keep.any():
            kept.append(
                _Section(
                    s.machine,
                    s.section,
                    [f for f, k in zip(s.files, keep, strict=True) if k],
                    s.scores[keep],
                    None if s.decisions is None else s.decisions[keep],
                    s.y[keep],
                    s.domain[keep],
                )
            )
    return kept, left_out


def _pooled(sections: list[_Section]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels and domains of the labelled clips of ``sections``, concatenated."""
    return (
        np.concatenate([s.scores[s.labeled] for s in sections]),
        np.concatenate([s.y[s.labeled] for s in sections]),
        np.concatenate([s.domain[s.labeled] for s in sections]),
    )


def _confusion(metrics: list[M.SectionMetrics]) -> tuple[int, int, int, int] | None:
    """``(tn, fp, fn, tp)`` summed over sections; None when any lacks decisions."""
    if not metrics or any(m.tp is None for m in metrics):
        return None
    tn, fp, fn, tp = (sum(getattr(m, k) or 0 for m in metrics) for k in COUNT_FIELDS)
    return tn, fp, fn, tp


def evaluate_run(
    run_dir: Path,
    ground_truth: Path | None = None,
    max_fpr: float = M.MAX_FPR,
    figures: bool = True,
    clips: Collection[str] | None = None,
) -> EvalResult:
    """Evaluate a scored run: metrics per machine type and section, official score, figures.

    Parameters
    ----------
    run_dir : Path
        A run folder scored by ``asd score``.
    ground_truth : Path, optional
        Folder with the official evaluator's ``ground_truth_data/`` and
        ``ground_truth_domain/`` CSVs. Default: labels and domains from the clip names.
    max_fpr : float, default 0.1
        False-positive-rate limit of the pAUC.
    figures : bool, default True
        Draw the figures in the run's figures folder.
    clips : collection of str, optional
        Evaluate only these clips, named ``"<machine>/<file name>"``
        (:func:`asdcli.naming.clip_key`; ``asd tune`` passes its search clips, so that a
        trial's metrics never include its holdout). The others are left out, counted in
        ``counts["left_out"]`` and noted.

    Returns
    -------
    EvalResult
        Also written to the run's metrics JSON and CSV.

    Raises
    ------
    RunError
        If the folder is not a run, or it has no score files.
    DataError
        If a score, decision or ground-truth file is malformed or missing, or no scored clip
        has a known label.
    """
    run = load_run(Path(run_dir), require_complete=False)
    found = submission.find_score_files(run.scores_dir)
    if not found:
        raise RunError(f"no scores in {run.scores_dir}; run `asd score {run.path}` first")
    if ground_truth is not None and not Path(ground_truth).is_dir():
        raise DataError(f"Ground-truth folder {ground_truth} does not exist.")

    notes: list[str] = []
    sections = [
        _load_section(machine, section, path, ground_truth, notes)
        for machine, section, path in found
    ]
    left_out = 0
    if clips is not None:
        sections, left_out = _only(sections, clips)
        if not sections:
            raise DataError(
                f"None of the {len(clips)} clip(s) to evaluate is scored in {run.name}."
            )
        if left_out:
            notes.append(f"{left_out} scored clip(s) left out: not in the clips to evaluate")
    n_eval = sum(int(s.labeled.sum()) for s in sections)
    n_unlabeled = sum(int((~s.labeled).sum()) for s in sections)
    if n_eval == 0:
        example = sections[0].files[0] if sections[0].files else "(empty score file)"
        raise DataError(
            f"No scored clip of {run.name} has a known label (e.g. {example}); pass "
            "--ground-truth FOLDER with the evaluator's ground_truth_data/ and "
            "ground_truth_domain/ CSVs."
        )

    per_section: dict[tuple[str, str], M.SectionMetrics] = {}
    section_counts: dict[str, dict[str, int]] = {}
    for s in sections:
        key = f"{s.machine}/{s.section}"
        lab = s.labeled
        section_counts[key] = {"evaluated": int(lab.sum()), "unlabeled": int((~lab).sum())}
        if not lab.any():
            notes.append(f"{key}: no clip has a known label; section not evaluated")
            continue
        m = M.section_metrics(
            s.scores[lab],
            s.y[lab],
            s.domain[lab],
            None if s.decisions is None else s.decisions[lab],
            max_fpr=max_fpr,
        )
        if not lab.all():
            example = s.files[int(np.flatnonzero(~lab)[0])]
            m.notes.append(
                f"{int((~lab).sum())} clip(s) without a known label not evaluated (e.g. {example})"
            )
        per_section[(s.machine, s.section)] = m
    if n_unlabeled:
        notes.append(
            f"{n_unlabeled} clip(s) without a known label were not evaluated"
            + ("" if ground_truth is not None else "; --ground-truth gives their labels")
        )

    summary = M.summarize(per_section)
    run_thresholds = _run_thresholds(run, notes)
    # A machine type's labelled sections: one threshold per machine, so its figures and
    # threshold comparison pool them.
    by_machine: dict[str, list[_Section]] = {}
    for s in sections:
        if s.labeled.any():
            by_machine.setdefault(s.machine, []).append(s)
    thresholds = {}
    for machine, secs in by_machine.items():
        scores, y, _ = _pooled(secs)
        thresholds[machine] = compare_thresholds(
            scores,
            y,
            run_thresholds.get(machine),
            _confusion([per_section[(s.machine, s.section)] for s in secs]),
        )

    result = EvalResult(
        run=run.path,
        per_section=per_section,
        summary=summary,
        official_score=summary["official_score"],
        metrics_json=run.metrics_json,
        metrics_csv=run.metrics_csv,
        thresholds=thresholds,
        counts={
            "evaluated": n_eval,
            "unlabeled": n_unlabeled,
            "left_out": left_out,
            "per_section": section_counts,
        },
        notes=notes,
        max_fpr=float(max_fpr),
    )
    if figures:
        result.figures = _draw_figures(run, by_machine, result)

    write_json(
        result.metrics_json,
        _metrics_document(result, run.name, run.detector, ground_truth, section_counts),
    )
    write_csv(result.metrics_csv, _csv_rows(per_section, summary), header=CSV_HEADER)
    return result


def _draw_figures(
    run: Run, by_machine: dict[str, list[_Section]], result: EvalResult
) -> list[Path]:
    """Each machine type's figures (:func:`asdcli.plots.evaluation_figures`), written as PNGs."""
    from asdcli.plots import evaluation_figures

    paths: list[Path] = []
    for machine, secs in by_machine.items():
        scores, y, domain = _pooled(secs)
        where = "all sections" if len(secs) > 1 else f"section {secs[0].section}"
        confusion = _confusion([result.per_section[(s.machine, s.section)] for s in secs])
        if confusion is None:
            result.notes.append(f"{machine}: no decisions, no confusion matrix drawn")
        built = evaluation_figures(
            f"{run.detector} on {machine} ({where})",
            scores,
            y,
            domain,
            confusion,
            result.thresholds[machine]["run_threshold"],
            result.max_fpr,
        )
        for kind, fig in built.items():
            paths.append(write_png(fig, run.figures_dir / f"{kind}_{machine}.png"))
    return paths


def _metrics_document(
    result: EvalResult,
    run_name: str,
    detector: str,
    ground_truth: Path | None,
    section_counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """The metrics JSON content; :mod:`asdcli.report` reads it (see its layout version)."""
    summary = result.summary
    per_section: dict[str, dict[str, Any]] = {}
    for (machine, section), m in sorted(result.per_section.items()):
        per_section.setdefault(machine, {})[section] = {
            **m.to_dict(),
            "official_score": m.official_score,
            **section_counts[f"{machine}/{section}"],
        }
    document: dict[str, Any] = _json_safe(
        {
            "metrics_layout_version": METRICS_LAYOUT_VERSION,
            "run": run_name,
            "detector": detector,
            "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "labels_from": str(ground_truth) if ground_truth is not None else "file names",
            "max_fpr": result.max_fpr,
            "official_score": summary["official_score"],
            "n_official_values": summary["n_official_values"],
            "means": summary["means"],
            "per_machine": summary["per_machine"],
            "per_section": per_section,
            "skipped": summary["skipped"],
            "thresholds": result.thresholds,
            "counts": result.counts,
            "notes": result.notes,
            "figures": [str(p.relative_to(result.run)) for p in result.figures],
        }
    )
    return document


def _json_safe(value: Any) -> Any:
    """Plain JSON: NaN and infinity become null (``json.dumps`` would write invalid JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _csv_rows(
    per_section: dict[tuple[str, str], M.SectionMetrics], summary: dict[str, Any]
) -> list[list[Any]]:
    rows = []
    for (machine, section), m in sorted(per_section.items()):
        rows.append(
            [
                machine,
                section,
                *(_cell(getattr(m, k)) for k in (*CSV_FIELDS, *COUNT_FIELDS)),
                _cell(m.official_score),
            ]
        )
    totals = []
    for k in COUNT_FIELDS:
        values = [getattr(m, k) for m in per_section.values() if getattr(m, k) is not None]
        totals.append(sum(values) if values else None)
    rows.append(
        [
            "all",
            "",
            *(_cell(summary["means"][k]["harmonic"]) for k in CSV_FIELDS),
            *(_cell(t) for t in totals),
            _cell(summary["official_score"]),
        ]
    )
    return rows
