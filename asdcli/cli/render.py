"""Everything the CLI shows: rich tables, progress bars and messages.

The ``*_table`` functions are pure builders (a result in, a rich renderable out), so a notebook
or the demo can use the same tables. The ``*_bar`` functions return a rich ``Progress`` and the
callback the library's progress hooks take. The ``print_*`` functions write a result's
messages to the two consoles (results on stdout, warnings and notes on stderr).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from asdcli.display import fmt, params_text, seconds_text

if TYPE_CHECKING:
    from asdcli.evaluate import EvalResult
    from asdcli.featurize import FeaturizeSummary
    from asdcli.monitor.history import Entry as HistoryEntry
    from asdcli.monitor.watch import Handled
    from asdcli.report import Comparison, RunRow
    from asdcli.score import ScoreResult
    from asdcli.synth import SynthSummary
    from asdcli.train import TrainResult
    from asdcli.tune.study import StudyRow, TuneResult


def evaluation_table(result: EvalResult) -> Table:
    """Per-section AUC (source/target), pAUC, F1 (source/target), then the official score."""
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
            fmt(m.official_score),
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


_STATUS_STYLE = {
    "complete": "green",
    "not evaluated": "yellow",
    "running": "cyan",
    "incomplete": "yellow",
    "unreadable": "red",
}


def runs_table(rows: list[RunRow]) -> Table:
    """Every run: detector, machines, status, scores, training time, parameters.

    Why a run has no score goes in the caption, one line per run, so the table stays narrow
    enough for an 80-column terminal.
    """
    reasons = [f"{r.name}: {r.reason}" for r in rows if r.reason]
    table = Table(
        title="Runs",
        caption="\n".join(["scores: harmonic means over sections", *reasons]),
        caption_justify="left",
    )
    # The run name holds the detector; machines are listed per run in `asd report --compare`.
    table.add_column("Run", overflow="fold", min_width=12)
    for name in ("Official", "AUC-s", "AUC-t", "pAUC", "Train s", "Params"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        style = _STATUS_STYLE.get(r.status, "")
        status = f"[{style}]{r.status}[/]" if style else r.status
        table.add_row(
            f"{r.name}\n{status} · {len(r.machines)} machines",
            fmt(r.official_score, 3),
            fmt(r.auc_source, 3),
            fmt(r.auc_target, 3),
            fmt(r.pauc, 3),
            seconds_text(r.train_seconds),
            params_text(r.n_params),
        )
    return table


def comparison_table(comparison: Comparison) -> Group:
    """The ranking, then the official score per machine type (one column per ranked run)."""
    table = Table(title="Runs ranked by official score", caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("Run", no_wrap=True)
    table.add_column("Official", justify="right", style="bold")
    for name in ("AUC-s", "AUC-t", "pAUC"):
        table.add_column(name, justify="right")
    for i, r in enumerate(comparison.ranked, start=1):
        table.add_row(
            str(i), r.name, fmt(r.official_score), fmt(r.auc_source), fmt(r.auc_target), fmt(r.pauc)
        )
    if comparison.unranked:
        table.add_section()
        for r in comparison.unranked:
            table.add_row("-", r.name, "n/a", "", "", "", style="dim")
    per_machine = Table(title="Official score per machine type (columns: rank)")
    per_machine.add_column("Machine")
    for i in range(1, len(comparison.ranked) + 1):
        per_machine.add_column(f"#{i}", justify="right")
    for m in comparison.machines:
        per_machine.add_row(m, *(fmt(r.per_machine.get(m)) for r in comparison.ranked))
    lines = [*comparison.notes, *(f"not ranked, {r.name}: {r.reason}" for r in comparison.unranked)]
    if lines:
        table.caption = "\n".join(lines)
    return Group(table, per_machine)


# --------------------------------------------------------------------------- progress bars


def count_bar(
    label: str, console: Console, rate: bool = False
) -> tuple[Progress, Callable[[int, int], None]]:
    """A bar for ``progress(done, total)`` hooks (synth, featurize); ``rate`` adds clips/s."""
    columns: list[Any] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    bar = Progress(*columns, TimeRemainingColumn(), console=console)
    task = bar.add_task(label, total=None, rate="")

    def progress(done: int, total: int) -> None:
        speed = bar.tasks[0].speed if rate else None
        bar.update(task, completed=done, total=total, rate=f"{speed:.0f} clips/s" if speed else "")

    return bar, progress


def train_bar(
    console: Console, joint: str
) -> tuple[Progress, Callable[[str, dict[str, Any]], None]]:
    """One bar per machine type for :func:`asdcli.train.train`'s ``progress(machine, event)``;
    a joint detector trains once under the machine name ``joint``."""
    bar = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}

    def progress(machine: str, event: dict[str, Any]) -> None:
        if event.get("event") == "start":
            tasks[machine] = bar.add_task(machine, total=event["epochs"] or None, losses="")
        elif event.get("event") == "done":
            task = tasks[machine] if machine in tasks else tasks[joint]
            bar.update(task, total=max(event["epochs"], 1), completed=max(event["epochs"], 1))
        else:
            val = event.get("val_loss")
            losses = f"loss {event['loss']:.4f}" + (f"  val {val:.4f}" if val is not None else "")
            bar.update(tasks[machine], completed=event["epoch"], losses=losses)

    return bar, progress


# --------------------------------------------------------------------------- tables


def synth_table(summary: SynthSummary, out_dir: Path) -> Table:
    table = Table(title=f"Synthetic dataset in {out_dir}")
    for col in ("machine", "train source", "train target", "test source n/a", "test target n/a"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for machine, c in summary.counts.items():
        table.add_row(
            machine,
            str(c["train_source"]),
            str(c["train_target"]),
            f"{c['test_source_normal']}/{c['test_source_anomaly']}",
            f"{c['test_target_normal']}/{c['test_target_anomaly']}",
        )
    return table


def featurize_table(summary: FeaturizeSummary, store: Path) -> Table:
    table = Table(title=f"{store} · feature set {summary.key}")
    for col in ("machine", "clips", "new", "cached", "skipped"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for machine, c in sorted(summary.machines.items()):
        table.add_row(machine, str(c.clips), str(c.new), str(c.cached), str(c.skipped))
    return table


def detectors_table(detectors: list[tuple[str, str]]) -> Table:
    table = Table(title="Detectors")
    table.add_column("name")
    table.add_column("description")
    for name, description in detectors:
        table.add_row(name, description)
    return table


def train_table(result: TrainResult) -> Table:
    table = Table(title=f"{result.run.detector} · {result.run.path}")
    for col in ("machine", "epochs", "seconds", "parameters", "threshold"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for name, m in result.machines.items():
        table.add_row(
            name,
            str(m["epochs"]),
            f"{m['seconds']:.1f}",
            f"{m['n_params']:,}",
            f"{m['threshold']:.4g}",
        )
    return table


def settings_table(rows: list[tuple[str, Any, str]]) -> Table:
    """``(dotted key, value, where it came from)`` rows."""
    table = Table()
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from")
    for key, value, source in rows:
        table.add_row(key, repr(value), source)
    return table


# --------------------------------------------------------------------------- messages


def warn(err: Console, text: str, kind: str = "warning") -> None:
    err.print(f"[yellow]{kind}:[/] {text}", highlight=False)


def print_featurize(summary: FeaturizeSummary, store: Path, out: Console, err: Console) -> None:
    """Warnings, skipped files, the per-machine table, then the one-line outcome."""
    for note in [*summary.warnings, *summary.resample_notes()]:
        warn(err, note)
    if summary.multichannel:
        warn(err, f"mixed {summary.multichannel} multi-channel file(s) to mono", "note")
    for path, reason in summary.skipped:
        warn(err, f"{path} {reason}", "skipped")
    out.print(featurize_table(summary, store))
    if summary.interrupted:
        err.print(
            f"Interrupted: {summary.new} new clip(s) were saved. Run the same command to finish."
        )
    elif summary.new == 0 and not summary.skipped:
        out.print(f"All {summary.cached} clips were cached: nothing to compute.")
    else:
        speed = summary.new / summary.seconds if summary.seconds else 0.0
        out.print(
            f"{summary.new} computed, {summary.cached} cached, {len(summary.skipped)} skipped "
            f"in {summary.seconds:.1f} s ({speed:.0f} clips/s)."
        )


def print_score(result: ScoreResult, out: Console, err: Console) -> None:
    for note in result.notes:
        warn(err, note)
    for m, n in result.skipped_machines.items():
        warn(err, f"{n} clip(s) of {m} not scored: the run has no {m} model")
    if result.replaced:
        warn(
            err,
            f"removed {len(result.replaced)} submission file(s) of an earlier scoring from "
            f"{result.out}",
            "note",
        )
    if result.metrics_set_aside:
        warn(
            err,
            f"the earlier metrics of this run were moved to {result.metrics_set_aside[0].name}; "
            "run `asd evaluate` for the new scores",
            "note",
        )
    total = sum(result.counts.values())
    out.print(
        f"Scored {total} clip(s) of {len(result.counts)} machine type(s); "
        f"{len(result.files)} submission file(s) in {result.out}"
    )


def print_evaluation(result: EvalResult, out: Console) -> None:
    out.print(evaluation_table(result))
    out.print(
        f"Metrics in {result.metrics_json}; figures in {result.metrics_json.parent / 'figures'}"
    )


# --- asd watch, asd history, asd tune

# Complete trials `asd tune` lists, best first.
TRIALS_SHOWN = 5


def decision_text(decision: int) -> str:
    """A clip's decision as every table shows it."""
    return "[red bold]anomaly[/]" if decision else "[green]normal[/]"


def watch_table(rows: list[Handled], title: str) -> Table:
    """The latest handled files of `asd watch`, newest last."""
    table = Table(title=title)
    for name, justify in (
        ("file", "left"),
        ("machine", "left"),
        ("section", "left"),
        ("score", "right"),
        ("threshold", "right"),
        ("decision", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for h in rows:
        r = h.result
        if r is None:
            table.add_row(str(h.path.name), "", "", "", "", f"[yellow]skipped:[/] {h.error}")
            continue
        threshold = f"{r.threshold:.4g}" if r.threshold is not None else "n/a"
        table.add_row(
            r.file, r.machine, r.section, f"{r.score:.4g}", threshold, decision_text(r.decision)
        )
    return table


def history_table(entries: list[HistoryEntry], db: Path | str) -> Table:
    """`asd history`: the recorded results, oldest first."""
    table = Table(title=f"History in {db}", caption=f"{len(entries)} result(s)")
    for name in (
        "time (UTC)",
        "source",
        "file",
        "machine",
        "section",
        "score",
        "threshold",
        "decision",
        "run",
    ):
        table.add_column(name, justify="right" if name in ("score", "threshold") else "left")
    for e in entries:
        table.add_row(
            e.iso_time,
            e.source,
            e.file,
            e.machine,
            e.section,
            f"{e.score:.4g}",
            f"{e.threshold:.4g}" if e.threshold is not None else "n/a",
            decision_text(e.decision),
            e.run,
        )
    return table


def _params_text(params: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{k.rpartition('.')[2]}={short(v)}" for k, v in params.items())


def trials_table(result: TuneResult, top: int = TRIALS_SHOWN) -> Table:
    """The best complete trials by search score, then the pruned and failed ones' count."""
    complete = sorted(
        (t for t in result.trials if t.state == "complete" and t.value is not None),
        key=lambda t: (-(t.value or 0.0), t.number),
    )
    table = Table(
        title=f"Study {result.study}: best {min(top, len(complete))} of {len(complete)} "
        "complete trials",
        caption="score: official score on the search clips",
    )
    for name, justify in (("trial", "right"), ("score", "right"), ("parameters", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("run", overflow="fold")
    for t in complete[:top]:
        table.add_row(
            str(t.number),
            fmt(t.value),
            _params_text(t.params),
            Path(t.run).name if t.run else "",
        )
    return table


def studies_table(rows: list[StudyRow]) -> Table:
    """`asd report`'s list of studies: trials by state, best search score, holdout score."""
    table = Table(title="Studies (asd tune)")
    table.add_column("study")
    table.add_column("detector")
    for name in ("complete", "pruned", "failed", "running", "best trial", "search", "holdout"):
        table.add_column(name, justify="right")
    table.add_column("started")
    for r in rows:
        table.add_row(
            r.name,
            r.detector or "?",
            str(r.complete),
            str(r.pruned),
            str(r.failed),
            str(r.running),
            "" if r.best_trial is None else str(r.best_trial),
            fmt(r.best_value),
            fmt(r.holdout_value),
            r.started or "",
        )
    return table
