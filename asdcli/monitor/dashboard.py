"""The dashboard: one server-rendered page, one panel per machine, charts drawn as inline SVG.

Each panel has the machine's latest scores over time with the threshold line (anomalous points
in red), its latest decisions, and the anomalies of the last 24 hours. The page reloads itself
(``<meta http-equiv="refresh">``); it has no script and fetches nothing, so nothing comes from
the internet and no chart library is needed: the coordinates are computed here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape

from asdcli.monitor.history import Entry, History

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 10, 26  # plot margins in SVG pixels
LATEST_ROWS = 8
DAY = 86400.0


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    score: float
    decision: int
    time: str
    file: str


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass
class Panel:
    """What one machine's panel shows; coordinates are SVG pixels."""

    machine: str
    points: list[Point] = field(default_factory=list)
    threshold_path: str = ""  # SVG polyline points: the threshold at each result
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    latest: list[Entry] = field(default_factory=list)  # newest first
    anomalies_24h: int = 0
    results_24h: int = 0

    @property
    def state(self) -> str:
        return "anomalous" if self.latest and self.latest[0].decision else "normal"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _clock(t: float, span: float) -> str:
    when = datetime.fromtimestamp(t, UTC)
    return when.strftime("%H:%M:%S" if span < DAY else "%m-%d %H:%M")


def _table_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M:%S")


def build_panel(machine: str, entries: list[Entry], counts: tuple[int, int]) -> Panel:
    """The panel of ``machine`` from its results ``entries`` (oldest first) and its
    ``(anomalies, results)`` of the last 24 h."""
    panel = Panel(machine, anomalies_24h=counts[0], results_24h=counts[1])
    panel.latest = list(reversed(entries[-LATEST_ROWS:]))
    if not entries:
        return panel
    values = [e.score for e in entries] + [e.threshold for e in entries if e.threshold is not None]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 if hi > lo else max(abs(hi) * 0.1, 1.0)
    lo, hi = lo - pad, hi + pad
    t0, t1 = entries[0].time, entries[-1].time
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(i: int, t: float) -> float:
        if t1 > t0:
            return LEFT + (t - t0) / (t1 - t0) * plot_w
        return LEFT + (plot_w / 2 if len(entries) == 1 else i / (len(entries) - 1) * plot_w)

    def y_of(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * plot_h

    panel.points = [
        Point(
            round(x_of(i, e.time), 2),
            round(y_of(e.score), 2),
            e.score,
            e.decision,
            e.iso_time,
            e.file,
        )
        for i, e in enumerate(entries)
    ]
    panel.threshold_path = " ".join(
        f"{x_of(i, e.time):.2f},{y_of(e.threshold):.2f}"
        for i, e in enumerate(entries)
        if e.threshold is not None
    )
    panel.y_ticks = [
        Tick(round(y_of(v), 2), _fmt(v)) for v in (lo + (hi - lo) * k / 4 for k in range(5))
    ]
    span = t1 - t0
    panel.x_ticks = [Tick(LEFT, _clock(t0, span))]
    if span > 0:
        panel.x_ticks.append(Tick(LEFT + plot_w, _clock(t1, span)))
    return panel


def build_panels(history: History, machines: list[str], points: int, now: float) -> list[Panel]:
    """A panel for each of ``machines`` (the run's) and each other machine in the history."""
    latest = history.latest_per_machine(points)
    counts = history.anomaly_counts(now - DAY)
    names = sorted(set(machines) | set(latest))
    return [build_panel(m, latest.get(m, []), counts.get(m, (0, 0))) for m in names]


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("asdcli.monitor", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_dashboard(
    history: History,
    *,
    run: str,
    detector: str,
    machines: list[str],
    points: int,
    refresh_seconds: int,
    now: float | None = None,
) -> str:
    """The dashboard page as HTML (the reload keeps the URL, a ``?token=`` included)."""
    now = time.time() if now is None else now
    panels = build_panels(history, machines, points, now)
    return (
        _environment()
        .get_template("dashboard.html")
        .render(
            panels=panels,
            run=run,
            detector=detector,
            refresh_seconds=refresh_seconds,
            width=WIDTH,
            height=HEIGHT,
            left=LEFT,
            right=WIDTH - RIGHT,
            top=TOP,
            bottom=HEIGHT - BOTTOM,
            generated=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            fmt=_fmt,
            clock=_table_time,
        )
    )
