"""Reports over the runs folder: a list of every run, and a ranking of the evaluated ones.

:func:`list_report` reads each run's manifest and, when the run was evaluated, its metrics
(written by :func:`asdcli.evaluate.evaluate_run`). A folder that cannot be read is listed with
the reason, never skipped. :func:`compare` ranks the evaluated runs by the DCASE official score
and writes ``report.md`` and ``comparison.png``. The rich tables of both are in
:mod:`asdcli.cli.render`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asdcli.display import fmt, params_text, seconds_text
from asdcli.errors import RunError
from asdcli.evaluate import METRICS_LAYOUT_VERSION
from asdcli.files import read_json, write_png, write_text
from asdcli.runs import Run, list_runs

REPORT_MD = "report.md"
COMPARISON_PNG = "comparison.png"


@dataclass
class RunRow:
    """One run folder as the report sees it.

    Attributes
    ----------
    path : Path
    detector : str or None
        ``None`` when the manifest cannot be read.
    machines : list of str
    run_status : str or None
        The manifest's ``status`` (``complete``, ``incomplete``, ``running``); ``None`` when
        the manifest cannot be read.
    evaluated : bool
        A readable ``metrics.json`` exists.
    official_score, auc_source, auc_target, pauc : float or None
        From ``metrics.json``: the official score and the harmonic means over sections.
    per_machine : dict ``machine -> official score``
    max_fpr : float or None
        The pAUC's false-positive-rate limit the run was evaluated with.
    train_seconds : float or None
        The manifest's ``train_seconds``.
    n_params : int or None
        Sum of the manifest's ``n_params`` over machine types.
    reason : str or None
        Why the run has no score: unreadable manifest or metrics, or not evaluated.
    """

    path: Path
    detector: str | None = None
    machines: list[str] = field(default_factory=list)
    run_status: str | None = None
    evaluated: bool = False
    official_score: float | None = None
    auc_source: float | None = None
    auc_target: float | None = None
    pauc: float | None = None
    per_machine: dict[str, float | None] = field(default_factory=dict)
    max_fpr: float | None = None
    train_seconds: float | None = None
    n_params: int | None = None
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        """``unreadable``, ``running``, ``incomplete``, ``not evaluated`` or ``complete``."""
        if self.run_status is None:
            return "unreadable"
        if self.run_status != "complete":
            return self.run_status
        return "complete" if self.evaluated else "not evaluated"


@dataclass
class Comparison:
    """Evaluated runs ranked by official score (best first), and the runs left out.

    ``ranked[i].per_machine`` holds the per-machine official scores over ``machines``;
    ``unranked`` rows carry their ``reason``. ``notes`` warn where the ranked scores are not
    like for like (other machine types, another pAUC range).
    """

    ranked: list[RunRow]
    unranked: list[RunRow]
    machines: list[str]
    report_md: Path
    figure: Path
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` for anything else (a hand-edited file must not crash us)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _read_metrics(run: Run) -> tuple[dict[str, Any] | None, str | None]:
    """``(metrics, None)``, or ``(None, reason)`` when the run is not (usably) evaluated."""
    path = run.metrics_json
    name = path.name
    if not path.is_file():
        return None, f"no {name}: run `asd evaluate {run.path}`"
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        return None, f"{name} cannot be read ({exc}); evaluate again"
    if not isinstance(data, dict):
        return None, f"{name} is not a metrics file; evaluate again"
    version = data.get("metrics_layout_version")
    if version != METRICS_LAYOUT_VERSION:
        return None, (
            f"{name} has layout {version}, this asd reads {METRICS_LAYOUT_VERSION}; evaluate again"
        )
    return data, None


def _row(path: Path, run: Run) -> RunRow:
    m = run.manifest
    n_params = m.get("n_params")
    params = None
    if isinstance(n_params, dict):
        counts = [v for v in n_params.values() if isinstance(v, int) and not isinstance(v, bool)]
        params = sum(counts) if counts else None
    row = RunRow(
        path=path,
        detector=run.detector,
        machines=run.machines,
        run_status=run.status,
        train_seconds=_number(m.get("train_seconds")),
        n_params=params,
    )
    metrics, reason = _read_metrics(run)
    if metrics is None:
        # An unfinished run says why it stopped, which matters more than "not evaluated".
        stopped = m.get("reason") if run.status != "complete" else None
        row.reason = f"{run.status}: {stopped}" if isinstance(stopped, str) and stopped else reason
        return row
    row.evaluated = True
    row.official_score = _number(metrics.get("official_score"))
    row.auc_source = _number(_get(metrics, "means", "auc_source", "harmonic"))
    row.auc_target = _number(_get(metrics, "means", "auc_target", "harmonic"))
    row.pauc = _number(_get(metrics, "means", "pauc", "harmonic"))
    row.max_fpr = _number(metrics.get("max_fpr"))
    per_machine = metrics.get("per_machine")
    if isinstance(per_machine, dict):
        row.per_machine = {
            str(k): _number(_get(v, "official_score")) for k, v in per_machine.items()
        }
    if row.official_score is None:
        row.reason = (
            f"evaluated, but no official score could be computed (see {run.metrics_json.name})"
        )
    return row


def list_report(runs_root: Path) -> list[RunRow]:
    """Every folder under ``runs_root``, in name (= start time) order, readable or not.

    Parameters
    ----------
    runs_root : Path
        The runs folder; a missing folder gives an empty list.

    Returns
    -------
    list of RunRow
        Unreadable folders have ``run_status`` ``None`` and the reason in ``reason``.
    """
    rows = []
    for path, run in list_runs(Path(runs_root)):
        if isinstance(run, str):
            rows.append(RunRow(path=path, reason=run))
        else:
            rows.append(_row(path, run))
    return rows


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------


def compare(runs_root: Path, out_md: Path | None = None, figure: Path | None = None) -> Comparison:
    """Rank the evaluated runs by official score; write a Markdown report and a figure.

    Parameters
    ----------
    runs_root : Path
        The runs folder.
    out_md : Path, optional
        Markdown report; default ``runs_root / "report.md"``.
    figure : Path, optional
        Grouped bars of the per-machine official scores, one bar per run; default
        ``runs_root / "comparison.png"``.

    Returns
    -------
    Comparison
        Ranked runs (official score descending, ties by name), and the others with reasons.

    Raises
    ------
    RunError
        If no run under ``runs_root`` has an official score.
    """
    from asdcli.plots import build_comparison

    runs_root = Path(runs_root)
    rows = list_report(runs_root)
    ranked = sorted(
        (r for r in rows if r.official_score is not None),
        key=lambda r: (-(r.official_score or 0.0), r.name),
    )
    unranked = [r for r in rows if r.official_score is None]
    if not ranked:
        raise RunError(
            f"No evaluated run under {runs_root} ({len(rows)} run folder(s)); evaluate runs "
            "with `asd evaluate RUN` first."
        )
    machines = sorted({m for r in ranked for m in r.per_machine})
    comparison = Comparison(
        ranked=ranked,
        unranked=unranked,
        machines=machines,
        report_md=Path(out_md) if out_md is not None else runs_root / REPORT_MD,
        figure=Path(figure) if figure is not None else runs_root / COMPARISON_PNG,
        notes=_caveats(ranked),
    )
    write_png(
        build_comparison(
            {r.name: r.per_machine for r in ranked},
            "Official score (hmean of AUC-s, AUC-t, pAUC)",
            "Per-machine official score by run",
        ),
        comparison.figure,
    )
    write_text(comparison.report_md, to_markdown(comparison))
    return comparison


def _caveats(ranked: list[RunRow]) -> list[str]:
    """Why the ranking may not be like for like; the official score is only comparable
    between runs evaluated on the same machine types with the same pAUC range."""
    notes = []
    if len({frozenset(r.per_machine) for r in ranked}) > 1:
        notes.append(
            "The runs were evaluated on different machine types: compare the official scores "
            "per machine type, the overall ones are not like for like."
        )
    if len({r.max_fpr for r in ranked}) > 1:
        fprs = ", ".join(sorted({"?" if r.max_fpr is None else f"{r.max_fpr:g}" for r in ranked}))
        notes.append(f"The runs were evaluated with different pAUC ranges (max FPR {fprs}).")
    return notes


def _md(text: str) -> str:
    """Table cell text: a ``|`` would end the cell."""
    return text.replace("|", "\\|")


def to_markdown(comparison: Comparison) -> str:
    """The ``report.md`` text: ranking, per-machine table (best in bold), runs left out."""
    fprs = {r.max_fpr for r in comparison.ranked}
    fpr = f"max FPR {fprs.pop():g}" if len(fprs) == 1 and None not in fprs else "see notes"
    lines = [
        "# Run comparison",
        "",
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')}. Official score: "
        f"harmonic mean of AUC (source), AUC (target) and pAUC ({fpr}) over every machine "
        "type and section (DCASE 2023 Task 2). AUC-s, AUC-t, pAUC: harmonic means over "
        "sections.",
        "",
        *(f"> **Note:** {n}\n" for n in comparison.notes),
        "## Ranking",
        "",
        "| rank | run | detector | official | AUC-s | AUC-t | pAUC | train s | params |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(comparison.ranked, start=1):
        cells = [
            str(i),
            _md(r.name),
            _md(r.detector or "?"),
            fmt(r.official_score),
            fmt(r.auc_source),
            fmt(r.auc_target),
            fmt(r.pauc),
            seconds_text(r.train_seconds),
            params_text(r.n_params),
        ]
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Official score per machine type", ""]
    lines.append("| run | " + " | ".join(_md(m) for m in comparison.machines) + " |")
    lines.append("|---|" + "---:|" * len(comparison.machines))
    best = {}
    for m in comparison.machines:
        values = [r.per_machine.get(m) for r in comparison.ranked]
        found = [v for v in values if v is not None]
        best[m] = max(found) if found else None
    for r in comparison.ranked:
        cells = [_md(r.name)]
        for m in comparison.machines:
            value = r.per_machine.get(m)
            text = fmt(value)
            cells.append(f"**{text}**" if value is not None and value == best[m] else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Best per machine type in bold; n/a: run not trained or not scored on it."]

    figure = os.path.relpath(comparison.figure, comparison.report_md.parent)
    lines += ["", f"![Per-machine official score by run]({Path(figure).as_posix()})"]

    if comparison.unranked:
        lines += ["", "## Not ranked", ""]
        for r in comparison.unranked:
            lines.append(f"- `{r.name}` ({r.status}): {r.reason}")
    return "\n".join(lines) + "\n"
