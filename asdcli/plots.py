"""Figures of evaluation results, as pure functions of arrays.

Each ``build_<name>(...)`` draws one figure and returns the :class:`matplotlib.figure.Figure`
(for notebooks and tests) at :data:`DPI`; nothing here writes a file:
:func:`asdcli.files.write_png` does, atomically. :func:`evaluation_figures` builds the set that
`asd evaluate` draws per machine type.

Figures are made with the object-oriented API on an Agg canvas, never through ``pyplot``: no
global figure registry, no backend selection, nothing to close, and it works headless and
from threads. matplotlib is imported inside the functions, so importing this module (or
``asdcli``) stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
NORMAL_COLOR = "tab:blue"
ANOMALY_COLOR = "tab:red"


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------


def build_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str, max_fpr: float = 0.1
) -> Figure:
    """ROC curves with AUC and pAUC in the legend and the pAUC region shaded.

    Parameters
    ----------
    curves : mapping ``label -> (scores, y_true)``
        ``scores`` of shape (n,), higher = more anomalous; ``y_true`` of shape (n,), 1 for
        anomalies. A curve without both classes, or with non-finite scores, is listed in the
        legend as ``"label (AUC n/a: ...)"`` and not drawn.
    title : str
    max_fpr : float, default 0.1
        Right edge of the shaded pAUC region.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _new_figure((5.6, 5.2))
    ax = fig.add_subplot()
    ax.axvspan(0, max_fpr, color="0.88", zorder=0, label=f"pAUC region (FPR \u2264 {max_fpr:g})")
    ax.plot([0, 1], [0, 1], ls=":", color="0.45", label="chance (AUC 0.50)")
    for label, (scores, y_true) in curves.items():
        s = np.asarray(scores, dtype=float)
        y = np.asarray(y_true).astype(int)
        if not np.isfinite(s).all():
            ax.plot([], [], label=f"{label} (AUC n/a: non-finite scores)")
            continue
        if y.size == 0 or y.min() == y.max():
            ax.plot([], [], label=f"{label} (AUC n/a: one class only)")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = roc_auc_score(y, s)
        pauc = roc_auc_score(y, s, max_fpr=max_fpr)
        ax.plot(fpr, tpr, lw=2, label=f"{label} (AUC {auc:.2f}, pAUC {pauc:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (normal clips flagged)")
    ax.set_ylabel("True positive rate (anomalies detected)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# confusion matrix
# ---------------------------------------------------------------------------------------------


def build_confusion(tn: int, fp: int, fn: int, tp: int, title: str) -> Figure:
    """2x2 confusion matrix: counts and row-normalised percentages in each cell.

    Rows are the ground truth (normal, anomaly), columns the decision. A row without clips
    shows ``n/a`` percentages. The colour is the row percentage.
    """
    counts = np.array([[tn, fp], [fn, tp]], dtype=int)
    rows = counts.sum(axis=1, keepdims=True)
    pct = np.divide(100.0 * counts, rows, out=np.full(counts.shape, np.nan), where=rows > 0)
    total = int(counts.sum())

    fig = _new_figure((4.8, 4.2))
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
    for i in range(2):
        for j in range(2):
            share = "n/a" if math.isnan(pct[i, j]) else f"{pct[i, j]:.1f}%"
            dark = not math.isnan(pct[i, j]) and pct[i, j] > 60
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n({share})",
                ha="center",
                va="center",
                fontsize=12,
                color="white" if dark else "black",
            )
    names = ["normal", "anomaly"]
    ax.set_xticks([0, 1], [f"decided {n}" for n in names])
    ax.set_yticks([0, 1], [f"true {n}" for n in names])
    ax.set_xlabel("Decision")
    ax.set_ylabel("Ground truth")
    accuracy = f"accuracy {(tn + tp) / total:.1%}" if total else "no clips"
    ax.set_title(f"{title}\n({accuracy}, n={total})")
    fig.colorbar(image, ax=ax, shrink=0.8, label="% of the true class (row)")
    return fig


# ---------------------------------------------------------------------------------------------
# score histograms
# ---------------------------------------------------------------------------------------------


def build_score_histogram(
    scores: ArrayLike,
    y_true: ArrayLike,
    domain: ArrayLike,
    threshold: float | None,
    title: str,
) -> Figure:
    """Histograms of normal and anomalous scores, one panel per domain, threshold dashed.

    Parameters
    ----------
    scores : array_like of float, shape (n,)
        Non-finite scores are left out (their number is given in the panel title).
    y_true : array_like of {0, 1}, shape (n,)
    domain : array_like of str, shape (n,)
        Panels ``source`` and ``target`` always, then one per other value present.
    threshold : float or None
        Drawn as a labelled vertical dashed line in every panel when given.
    title : str
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(y_true).astype(int)
    dom = np.asarray(domain).astype(str)
    panels = ["source", "target"] + sorted(set(dom.tolist()) - {"source", "target"})
    finite = np.isfinite(s)
    bins = np.histogram_bin_edges(
        s[finite] if finite.any() else np.zeros(1),
        bins=int(np.clip(np.sqrt(finite.sum()), 10, 40)),
    )

    fig = _new_figure((4.6 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), sharex=True, squeeze=False)[0]
    for ax, d in zip(axes, panels, strict=True):
        in_d = dom == d
        for value, name, color in ((0, "normal", NORMAL_COLOR), (1, "anomaly", ANOMALY_COLOR)):
            v = s[in_d & (y == value) & finite]
            ax.hist(v, bins=bins, color=color, alpha=0.55, label=f"{name} (n={v.size})")
        if threshold is not None:
            ax.axvline(
                threshold, ls="--", color="black", lw=1.5, label=f"threshold {threshold:.4g}"
            )
        n_bad = int((in_d & ~finite).sum())
        ax.set_title(f"{d} domain" + (f" ({n_bad} non-finite left out)" if n_bad else ""))
        if not in_d.any():
            ax.text(0.5, 0.5, f"no {d} clips", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_xlabel("Anomaly score (higher = more anomalous)")
        ax.set_ylabel("Clips")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# training curve
# ---------------------------------------------------------------------------------------------


def _column(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    values = [h.get(key) for h in history]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def build_training_curve(history: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """Training and validation loss per epoch, best epoch starred.

    Parameters
    ----------
    history : sequence of mappings with ``epoch``, ``loss`` and optionally ``val_loss``
        One per epoch. A missing ``epoch`` is taken as the 1-based position; missing or
        ``None`` losses are NaN and not drawn. The best epoch minimises ``val_loss`` when
        any is finite, else ``loss``.
    title : str
    """
    from matplotlib.ticker import MaxNLocator

    n = len(history)
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=float)
    loss = _column(history, "loss")
    val = _column(history, "val_loss")

    fig = _new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    if np.isfinite(loss).any():
        ax.plot(epochs, loss, "o-", color=NORMAL_COLOR, label="training loss")
    if np.isfinite(val).any():
        ax.plot(epochs, val, "s-", color="tab:orange", label="validation loss")
    key, name = (val, "val_loss") if np.isfinite(val).any() else (loss, "loss")
    if np.isfinite(key).any():
        best = int(np.nanargmin(key))
        ax.axvline(epochs[best], ls=":", color="0.35")
        ax.plot(
            epochs[best],
            key[best],
            marker="*",
            ms=16,
            color="gold",
            mec="black",
            ls="none",
            label=f"best epoch {epochs[best]:g} ({name} {key[best]:.4g})",
        )
        positive = np.concatenate([loss[np.isfinite(loss)], val[np.isfinite(val)]])
        if positive.min() > 0 and positive.max() / positive.min() > 100:
            ax.set_yscale("log")
    else:
        ax.text(
            0.5,
            0.5,
            "no finite loss recorded" if n else "no epochs recorded",
            transform=ax.transAxes,
            ha="center",
            color="0.4",
        )
        ax.plot([], [], ls="none", label="no loss values")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# one machine type's evaluation
# ---------------------------------------------------------------------------------------------


def evaluation_figures(
    title: str,
    scores: ArrayLike,
    y_true: ArrayLike,
    domain: ArrayLike,
    confusion: tuple[int, int, int, int] | None,
    threshold: float | None,
    max_fpr: float = 0.1,
) -> dict[str, Figure]:
    """The figures `asd evaluate` draws for one machine type, by kind.

    Parameters
    ----------
    title : str
        What is evaluated, e.g. ``"lof on fan (section 00)"``; each figure adds its own part.
    scores, y_true, domain : array_like, shape (n,)
        The labelled clips of the machine type (see :func:`build_score_histogram`).
    confusion : ``(tn, fp, fn, tp)`` of the run's decisions, or None without decisions
    threshold : float or None
        The run's threshold, drawn on the histogram.
    max_fpr : float, default 0.1

    Returns
    -------
    dict
        ``"roc"`` (the evaluator's selections: each domain's normals plus every anomaly),
        ``"confusion"`` (only with ``confusion``) and ``"scores"``.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(y_true).astype(int)
    dom = np.asarray(domain).astype(str)
    curves = {}
    for d in ("source", "target"):
        sel = (dom == d) | (y == 1)
        curves[f"{d}: its normals + all anomalies"] = (s[sel], y[sel])
    figures = {"roc": build_roc(curves, f"{title}: ROC", max_fpr)}
    if confusion is not None:
        figures["confusion"] = build_confusion(*confusion, f"{title}: decisions")
    figures["scores"] = build_score_histogram(s, y, dom, threshold, f"{title}: anomaly scores")
    return figures


# ---------------------------------------------------------------------------------------------
# run comparison
# ---------------------------------------------------------------------------------------------


def build_comparison(
    table: Mapping[str, Mapping[str, float | None]], metric_name: str, title: str
) -> Figure:
    """Grouped bars: one group per machine type, one bar per run, values printed on the bars.

    Parameters
    ----------
    table : mapping ``run_label -> {machine: value}``
        Machines appear in first-seen order. A missing, ``None`` or NaN value draws no bar
        and an ``n/a`` mark instead.
    metric_name : str
        The y-axis label, e.g. ``"AUC (source)"``.
    title : str
    """
    runs = list(table)
    machines: list[str] = []
    for row in table.values():
        machines.extend(m for m in row if m not in machines)
    values = np.array(
        [[np.nan if table[r].get(m) is None else table[r][m] for m in machines] for r in runs],
        dtype=float,
    ).reshape(len(runs), len(machines))
    finite = np.isfinite(values)

    many = len(runs) * len(machines) > 12
    fig = _new_figure((max(6.0, 1.5 + len(machines) * (0.4 + 0.35 * len(runs))), 4.4))
    ax = fig.add_subplot()
    x = np.arange(len(machines))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        xs = x - 0.4 + width * (i + 0.5)
        ok = finite[i]
        bars = ax.bar(xs[ok], values[i, ok], width, label=run)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2, rotation=90 if many else 0)
        for xm in xs[~ok]:
            ax.text(
                xm,
                0,
                "n/a",
                ha="center",
                va="bottom",
                rotation=90 if many else 0,
                fontsize=8,
                color="0.4",
            )
    if finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
        pad = 0.18 * max(hi - min(lo, 0.0), 1e-9)
        ax.set_ylim(min(0.0, lo - pad), hi + pad)
    else:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="0.4")
    ax.set_xticks(x, machines, rotation=30 if len(machines) > 6 else 0)
    ax.set_xlabel("Machine type")
    ax.set_ylabel(metric_name)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if runs:
        ax.legend(title="run", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
