"""Evaluation of a scored run, as the DCASE 2023 Task 2 evaluator does it.

Reads what ``asd score`` wrote in ``<run>/scores/``:

* ``anomaly_score_<machine>_section_<ss>_test.csv``: ``file.wav,score`` rows, no header;
* ``decision_result_<machine>_section_<ss>_test.csv``: ``file.wav,0|1`` rows (1 = anomaly).

The ground truth comes from the clip names (:func:`asdcli.naming.parse_name`: label and
domain are in DCASE development-set names), or from a folder laid out like the official
evaluator's (``--ground-truth``), for renamed evaluation clips such as ``section_00_0000.wav``::

    ground_truth_data/ground_truth_<machine>_section_<ss>_test.csv     file,label  (0/1)
    ground_truth_domain/ground_truth_<machine>_section_<ss>_test.csv   file,domain (0 source,
                                                                                     1 target)

Clips whose label is unknown are not evaluated; they are counted and noted. The metrics are
those of :mod:`asdcli.metrics`; this module only reads, matches, writes and draws:

* ``<run>/metrics.json``: everything (per section metrics with notes, per machine and overall
  official score, means, skipped values, thresholds, counts);
* ``<run>/metrics.csv``: one row per machine type and section, then a row ``all``;
* ``<run>/figures/``: ROC, confusion matrix, score histogram and training curve per machine.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from asdcli import metrics as M
from asdcli.errors import DataError, RunError
from asdcli.files import read_json, write_bytes, write_csv, write_json
from asdcli.naming import parse_name
from asdcli.runs import load_run

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

METRICS_LAYOUT_VERSION = 1
"""Version of the ``metrics.json`` layout; :mod:`asdcli.report` reads it."""

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
FIGURES_DIR = "figures"

SCORE_FILE = re.compile(r"^anomaly_score_(?P<machine>.+)_section_(?P<section>\d+)_test\.csv$")
"""Anchored on the end, so machine names may hold underscores (``toy_car``)."""

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
"""Columns of ``metrics.csv``. ``official_score`` is the harmonic mean of the row's available
``auc_source, auc_target, pauc`` (for the ``all`` row: the run's official score)."""

ORACLE_NOTE = (
    "oracle: chosen with the test labels to maximise F1; an upper bound for the decisions, "
    "not a threshold a deployed system could pick"
)

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
    figures : list of Path
        PNG files written under ``<run>/figures``.
    metrics_json, metrics_csv : Path
        The files written.
    thresholds : dict
        Per machine: the run's threshold and the oracle F1 threshold (see :data:`ORACLE_NOTE`).
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
    figures: list[Path] = field(default_factory=list)
    metrics_json: Path = Path(METRICS_JSON)
    metrics_csv: Path = Path(METRICS_CSV)
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
        return self.y != UNLABELED


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def find_score_files(scores_dir: Path) -> list[tuple[str, str, Path]]:
    """``(machine, section, path)`` of every ``anomaly_score_*_section_*_test.csv``, sorted."""
    if not scores_dir.is_dir():
        return []
    found = []
    for path in sorted(scores_dir.iterdir()):
        m = SCORE_FILE.match(path.name)
        if m and path.is_file():
            found.append((m["machine"], m["section"], path))
    return found


def _rows(path: Path, what: str) -> list[tuple[int, str, str]]:
    """``(line number, file, value)`` of a headerless two-column CSV; blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({exc}).") from None
    out = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise DataError(f"{path}, line {lineno}: expected `{what}`, got {','.join(row)!r}.")
        out.append((lineno, PurePath(row[0].strip()).name, row[1].strip()))
    return out


def _unique(rows: list[tuple[int, str, Any]], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lineno, name, value in rows:
        if name in out:
            raise DataError(f"{path}, line {lineno}: clip {name} is listed twice.")
        out[name] = value
    return out


def read_scores(path: Path) -> dict[str, float]:
    """``file -> score`` from an ``anomaly_score_*.csv`` (NaN allowed, noted by the metrics)."""
    parsed = []
    for lineno, name, value in _rows(path, "file,score"):
        try:
            parsed.append((lineno, name, float(value)))
        except ValueError:
            raise DataError(f"{path}, line {lineno}: score {value!r} is not a number.") from None
    return _unique(parsed, path)


def _read_01(path: Path, what: str) -> dict[str, int]:
    parsed = []
    for lineno, name, value in _rows(path, what):
        if value not in ("0", "1"):
            raise DataError(f"{path}, line {lineno}: expected 0 or 1, got {value!r}.")
        parsed.append((lineno, name, int(value)))
    return _unique(parsed, path)


def read_decisions(path: Path) -> dict[str, int]:
    """``file -> 0|1`` from a ``decision_result_*.csv`` (1 = decided anomalous)."""
    return _read_01(path, "file,decision")


def read_ground_truth(folder: Path, machine: str, section: str) -> dict[str, tuple[int, str]]:
    """``file -> (label 0|1, "source"|"target")`` from the official evaluator's CSV folders.

    Raises
    ------
    DataError
        If either CSV of this machine type and section is missing or malformed.
    """
    name = f"ground_truth_{machine}_section_{section}_test.csv"
    data_path = folder / "ground_truth_data" / name
    domain_path = folder / "ground_truth_domain" / name
    for path in (data_path, domain_path):
        if not path.is_file():
            raise DataError(
                f"Ground truth {path} is missing: {folder} has no ground truth for "
                f"{machine} section {section}, which the run scored."
            )
    labels = _read_01(data_path, "file,label")
    domains = _read_01(domain_path, "file,domain")
    if set(labels) != set(domains):
        odd = sorted(set(labels) ^ set(domains))
        raise DataError(
            f"{data_path} and {domain_path} list different clips ({len(odd)} differ, e.g. "
            f"{odd[0]})."
        )
    return {f: (labels[f], M.DOMAINS[domains[f]]) for f in labels}


def _load_section(
    machine: str, section: str, score_path: Path, ground_truth: Path | None, notes: list[str]
) -> _Section:
    scores = read_scores(score_path)
    files = list(scores)
    decision_path = score_path.with_name(
        "decision_result_" + score_path.name.removeprefix("anomaly_score_")
    )
    decisions: np.ndarray | None = None
    if decision_path.is_file():
        by_file = read_decisions(decision_path)
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
        truth = read_ground_truth(ground_truth, machine, section)
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


def _run_thresholds(run_dir: Path, notes: list[str]) -> dict[str, float | None]:
    path = run_dir / "thresholds.json"
    if not path.is_file():
        notes.append("thresholds.json missing: the run's thresholds are unknown")
        return {}
    try:
        raw = read_json(path)
        out: dict[str, float | None] = {}
        for machine, entry in raw.items():
            value = entry["threshold"] if isinstance(entry, dict) else entry
            out[machine] = None if value is None else float(value)
        return out
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # thresholds only label figures and sit beside the oracle; not worth failing for
        notes.append(f"thresholds.json cannot be read ({exc!r}): the run's thresholds unknown")
        return {}


def _float_or_none(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    return float(text)


def read_history(run_dir: Path, notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``machine -> [{"epoch", "loss", "val_loss", "seconds"}, ...]`` from ``history.csv``.

    Empty (header only, as for scikit-learn detectors) or missing gives ``{}``; an unreadable
    file adds a note and gives ``{}``, since the training curve is an extra.
    """
    path = run_dir / "history.csv"
    if not path.is_file():
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out.setdefault(row["machine"], []).append(
                    {
                        "epoch": int(float(row["epoch"])),
                        "loss": _float_or_none(row.get("loss")),
                        "val_loss": _float_or_none(row.get("val_loss")),
                        "seconds": _float_or_none(row.get("seconds")),
                    }
                )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"history.csv cannot be read ({exc!r}): no training curves")
        return {}
    return out


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _section_official(m: M.SectionMetrics) -> float | None:
    values = [v for v in m.official_values if v is not None]
    return M.official_score(values) if values else None


def _threshold_entry(
    sections: list[_Section],
    run_threshold: float | None,
    per_section: dict[tuple[str, str], M.SectionMetrics],
) -> dict[str, Any]:
    """The run's threshold and F1, beside the oracle F1 threshold, for one machine type.

    ``sections`` are the machine's sections with labelled clips; both F1 values pool them,
    as the run has one threshold per machine type.
    """
    entry: dict[str, Any] = {"run_threshold": run_threshold, "run_f1": None}
    found = [per_section[(s.machine, s.section)] for s in sections]
    if found and all(m.tp is not None for m in found):
        tp = sum(m.tp or 0 for m in found)
        wrong = sum((m.fp or 0) + (m.fn or 0) for m in found)
        entry["run_f1"] = 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0
    s = np.concatenate([sec.scores[sec.labeled] for sec in sections])
    y = np.concatenate([sec.y[sec.labeled] for sec in sections])
    ok = np.isfinite(s)
    entry["oracle_f1_threshold"] = None
    entry["oracle_f1"] = None
    if ok.any():
        threshold, f1 = M.oracle_f1_threshold(s[ok], y[ok])
        entry["oracle_f1_threshold"] = threshold
        entry["oracle_f1"] = f1
        entry["oracle_note"] = ORACLE_NOTE + (
            f" ({int((~ok).sum())} non-finite scores left out)" if not ok.all() else ""
        )
    else:
        entry["oracle_note"] = "oracle: not computable, no labelled clip with a finite score"
    return entry


def evaluate_run(
    run_dir: Path,
    ground_truth: Path | None = None,
    max_fpr: float = M.MAX_FPR,
    figures: bool = True,
) -> EvalResult:
    """Evaluate a scored run: metrics per machine type and section, official score, figures.

    Parameters
    ----------
    run_dir : Path
        A run folder with ``scores/`` written by ``asd score``.
    ground_truth : Path, optional
        Folder with the official evaluator's ``ground_truth_data/`` and
        ``ground_truth_domain/`` CSVs. Default: labels and domains from the clip names.
    max_fpr : float, default 0.1
        False-positive-rate limit of the pAUC.
    figures : bool, default True
        Draw the figures in ``<run>/figures``.

    Returns
    -------
    EvalResult
        Also written to ``<run>/metrics.json`` and ``<run>/metrics.csv``.

    Raises
    ------
    RunError
        If the folder is not a run, or it has no score files.
    DataError
        If a score, decision or ground-truth file is malformed or missing, or no scored clip
        has a known label.
    """
    run = load_run(Path(run_dir), require_complete=False)
    scores_dir = run.path / "scores"
    found = find_score_files(scores_dir)
    if not found:
        raise RunError(f"no scores in {scores_dir}; run `asd score {run.path}` first")
    if ground_truth is not None and not Path(ground_truth).is_dir():
        raise DataError(f"Ground-truth folder {ground_truth} does not exist.")

    notes: list[str] = []
    sections = [
        _load_section(machine, section, path, ground_truth, notes)
        for machine, section, path in found
    ]
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
    run_thresholds = _run_thresholds(run.path, notes)
    by_machine: dict[str, list[_Section]] = {}
    for s in sections:
        by_machine.setdefault(s.machine, []).append(s)
    thresholds = {
        machine: _threshold_entry(
            [s for s in secs if s.labeled.any()], run_thresholds.get(machine), per_section
        )
        for machine, secs in by_machine.items()
        if any(s.labeled.any() for s in secs)
    }

    result = EvalResult(
        run=run.path,
        per_section=per_section,
        summary=summary,
        official_score=summary["official_score"],
        metrics_json=run.path / METRICS_JSON,
        metrics_csv=run.path / METRICS_CSV,
        thresholds=thresholds,
        counts={"evaluated": n_eval, "unlabeled": n_unlabeled, "per_section": section_counts},
        notes=notes,
        max_fpr=float(max_fpr),
    )
    if figures:
        result.figures = _draw_figures(run.path, run.detector, by_machine, result, notes)

    write_json(
        result.metrics_json,
        _metrics_document(result, run.name, run.detector, ground_truth, section_counts),
    )
    write_csv(result.metrics_csv, _csv_rows(per_section, summary), header=CSV_HEADER)
    return result


def _metrics_document(
    result: EvalResult,
    run_name: str,
    detector: str,
    ground_truth: Path | None,
    section_counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """The ``metrics.json`` content; :mod:`asdcli.report` reads it (see its layout version)."""
    summary = result.summary
    per_section: dict[str, dict[str, Any]] = {}
    for (machine, section), m in sorted(result.per_section.items()):
        per_section.setdefault(machine, {})[section] = {
            **m.to_dict(),
            "official_score": _section_official(m),
            **section_counts[f"{machine}/{section}"],
        }
    return _json_safe(
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
                _cell(_section_official(m)),
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


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def write_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at :data:`asdcli.plots.DPI`; return the path.

    Goes through :func:`asdcli.files.write_bytes` (unlike :func:`asdcli.plots.save_figure`),
    so a reader, or a re-evaluation interrupted half way, never leaves half a PNG.
    """
    from asdcli.plots import DPI

    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    return write_bytes(path, buf.getvalue())


def _draw_figures(
    run_dir: Path,
    detector: str,
    by_machine: dict[str, list[_Section]],
    result: EvalResult,
    notes: list[str],
) -> list[Path]:
    from asdcli import plots

    out = run_dir / FIGURES_DIR
    history = read_history(run_dir, notes)
    paths: list[Path] = []
    for machine, secs in by_machine.items():
        secs = [s for s in secs if s.labeled.any()]
        if not secs:
            continue
        s = np.concatenate([x.scores[x.labeled] for x in secs])
        y = np.concatenate([x.y[x.labeled] for x in secs])
        dom = np.concatenate([x.domain[x.labeled] for x in secs])
        where = "all sections" if len(secs) > 1 else f"section {secs[0].section}"
        title = f"{detector} on {machine} ({where})"

        # the evaluator's selections: a domain's normals plus every anomaly
        curves = {}
        for d in M.DOMAINS:
            sel = (dom == d) | (y == 1)
            curves[f"{d}: its normals + all anomalies"] = (s[sel], y[sel])
        paths.append(
            write_png(
                plots.build_roc(curves, f"{title}: ROC", result.max_fpr),
                out / f"roc_{machine}.png",
            )
        )

        metrics = [result.per_section[(x.machine, x.section)] for x in secs]
        if all(m.tp is not None for m in metrics):
            tn, fp, fn, tp = (sum(getattr(m, k) for m in metrics) for k in COUNT_FIELDS)
            paths.append(
                write_png(
                    plots.build_confusion(tn, fp, fn, tp, f"{title}: decisions"),
                    out / f"confusion_{machine}.png",
                )
            )
        else:
            notes.append(f"{machine}: no decisions, no confusion matrix drawn")

        threshold = result.thresholds.get(machine, {}).get("run_threshold")
        paths.append(
            write_png(
                plots.build_score_histogram(s, y, dom, threshold, f"{title}: anomaly scores"),
                out / f"scores_{machine}.png",
            )
        )
        if history.get(machine):
            paths.append(
                write_png(
                    plots.build_training_curve(
                        history[machine], f"{detector} on {machine}: training curve"
                    ),
                    out / f"training_{machine}.png",
                )
            )
    return paths


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric for display: ``n/a`` when not computable."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def rich_table(result: EvalResult) -> Table:
    """Per-section AUC (source/target), pAUC, F1 (source/target), then the official score."""
    from rich.table import Table

    table = Table(
        title=f"Evaluation of {result.run.name} (pAUC max FPR {result.max_fpr:g})",
        caption=(
            f"{result.counts.get('evaluated', 0)} clip(s) evaluated"
            + (
                f", {result.counts['unlabeled']} without a known label not evaluated"
                if result.counts.get("unlabeled")
                else ""
            )
            + "; official score = harmonic mean of every AUC-s, AUC-t and pAUC"
        ),
    )
    table.add_column("Machine")
    table.add_column("Section")
    for name in ("AUC-s", "AUC-t", "pAUC", "F1-s", "F1-t", "Official"):
        table.add_column(name, justify="right")
    for (machine, section), m in sorted(result.per_section.items()):
        table.add_row(
            machine,
            section,
            *(fmt(getattr(m, k)) for k in ("auc_source", "auc_target", "pauc")),
            *(fmt(getattr(m, k)) for k in ("f1_source", "f1_target")),
            fmt(_section_official(m)),
        )
    means = result.summary.get("means", {})
    table.add_section()
    table.add_row(
        "official score",
        "hmean",
        *(
            fmt(means.get(k, {}).get("harmonic"))
            for k in ("auc_source", "auc_target", "pauc", "f1_source", "f1_target")
        ),
        fmt(result.official_score),
        style="bold",
    )
    return table
