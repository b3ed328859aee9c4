"""Figures: each builds a figure that writes a readable PNG and shows the labels a reader needs."""

from __future__ import annotations

import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.text import Text

from asdcli import plots
from asdcli.files import write_png

# hand case: normals 0.1, 0.4; anomalies 0.35, 0.8 -> AUC 3/4 (see test_metrics)
HAND = ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
PERFECT = ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])

SCORES = np.array([0.1, 0.2, 0.9, 0.3, 0.4, 0.8, 0.7])
LABELS = np.array([0, 0, 1, 0, 0, 1, 1])
DOMAIN = np.array(["source", "source", "source", "target", "target", "target", "target"])
HISTORY = [
    {"epoch": 1, "loss": 1.0, "val_loss": 0.9},
    {"epoch": 2, "loss": 0.5, "val_loss": 0.4},
    {"epoch": 3, "loss": 0.3, "val_loss": 0.2},
    {"epoch": 4, "loss": 0.2, "val_loss": 0.25},
]
TABLE = {
    "ae": {"fan": 0.7, "pump": 0.6},
    "gmm": {"fan": 0.65, "valve": 0.8},
    "iforest": {"fan": 0.5, "pump": None, "valve": float("nan")},
}


def all_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


# --- every figure writes a PNG ------------------------------------------------------------

BUILDERS = {
    "roc": lambda: plots.build_roc({"source": HAND}, "fan 00"),
    "confusion": lambda: plots.build_confusion(5, 1, 2, 4, "fan 00"),
    "histogram": lambda: plots.build_score_histogram(SCORES, LABELS, DOMAIN, 0.5, "fan"),
    "training": lambda: plots.build_training_curve(HISTORY, "fan ae"),
    "comparison": lambda: plots.build_comparison(TABLE, "AUC", "runs"),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_writes_a_readable_png(name, tmp_path):
    path = tmp_path / "nested" / f"{name}.png"  # parent folders are created
    out = write_png(BUILDERS[name](), path)
    assert out == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert path.stat().st_size > 1000
    with path.open("rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.01  # not a blank canvas


def test_png_is_written_at_the_figures_dpi(tmp_path):
    fig = plots.build_confusion(5, 1, 2, 4, "fan 00")
    image = matplotlib.image.imread(write_png(fig, tmp_path / "c.png"))
    width, height = fig.get_size_inches() * plots.DPI
    assert image.shape[:2] == (round(height), round(width))


def test_evaluation_figures_of_one_machine():
    figures = plots.evaluation_figures("lof on fan", SCORES, LABELS, DOMAIN, (3, 1, 0, 3), 0.5)
    assert list(figures) == ["roc", "confusion", "scores"]
    assert figures["roc"].axes[0].get_title() == "lof on fan: ROC"
    # the evaluator's selections: source normals (2) + all anomalies (3) -> AUC 1.00;
    # target normals 0.3, 0.4 vs anomalies 0.9, 0.8, 0.7 -> AUC 1.00 as well
    legend = legend_texts(figures["roc"])
    assert any(t.startswith("source: its normals + all anomalies (AUC 1.00") for t in legend)
    assert "3\n(75.0%)" in all_texts(figures["confusion"])  # tn 3 of 4 true normals
    assert any("threshold 0.5" in t for t in legend_texts(figures["scores"]))
    without = plots.evaluation_figures("lof on fan", SCORES, LABELS, DOMAIN, None, None)
    assert list(without) == ["roc", "scores"]  # no decisions: no confusion matrix


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, asdcli.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_figures_bypass_pyplot():
    import matplotlib.pyplot as plt

    plots.build_roc({"source": HAND}, "t")
    plots.build_comparison(TABLE, "AUC", "t")
    assert plt.get_fignums() == []  # nothing left open in pyplot's registry


# --- contents -----------------------------------------------------------------------------


def test_roc_legend_has_auc_and_pauc_region():
    fig = plots.build_roc({"source": PERFECT, "target": HAND, "empty": ([1, 2], [0, 0])}, "fan")
    legend = legend_texts(fig)
    assert any(t.startswith("source (AUC 1.00, pAUC 1.00") for t in legend)
    assert any(t.startswith("target (AUC 0.75") for t in legend)
    assert "empty (AUC n/a: one class only)" in legend
    assert "pAUC region (FPR \u2264 0.1)" in legend
    assert "chance (AUC 0.50)" in legend
    ax = fig.axes[0]
    assert ax.get_title() == "fan"
    assert ax.get_xlabel().startswith("False positive rate")
    assert ax.get_ylabel().startswith("True positive rate")


def test_confusion_cells_show_counts_and_row_percentages():
    fig = plots.build_confusion(tn=50, fp=10, fn=0, tp=0, title="fan 00")
    texts = all_texts(fig)
    assert "50\n(83.3%)" in texts  # 50 / (50 + 10)
    assert "10\n(16.7%)" in texts
    assert "0\n(n/a)" in texts  # the anomaly row is empty
    assert any(t.startswith("fan 00\n(accuracy 83.3%, n=60)") for t in texts)
    assert fig.axes[0].get_xlabel() == "Decision"
    assert fig.axes[0].get_ylabel() == "Ground truth"


def test_histogram_panels_counts_and_threshold_line():
    fig = plots.build_score_histogram(SCORES, LABELS, DOMAIN, 0.5, "fan scores")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["source domain", "target domain"]
    legend = legend_texts(fig)
    for expected in ("normal (n=2)", "anomaly (n=1)", "anomaly (n=2)", "threshold 0.5"):
        assert expected in legend
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [0.5, 0.5]
    assert fig.get_suptitle() == "fan scores"


def test_histogram_without_threshold_and_with_other_domain():
    dom = DOMAIN.astype(object)  # room for a longer name
    dom[0] = "unknown"
    fig = plots.build_score_histogram(SCORES, LABELS, dom, None, "t")
    assert [ax.get_title() for ax in fig.axes] == [
        "source domain",
        "target domain",
        "unknown domain",
    ]
    assert not any(t.startswith("threshold") for t in legend_texts(fig))


def test_training_curve_marks_best_validation_epoch():
    fig = plots.build_training_curve(HISTORY, "fan ae")
    legend = legend_texts(fig)
    assert legend[:2] == ["training loss", "validation loss"]
    assert "best epoch 3 (val_loss 0.2)" in legend
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("Epoch", "Loss", "fan ae")


@pytest.mark.parametrize(
    "history",
    [
        [{"epoch": 1, "loss": 0.5}],
        [{"epoch": 1, "loss": 0.5, "val_loss": float("nan")}],
        [{"epoch": 1, "loss": 0.5, "val_loss": None}],
    ],
)
def test_training_curve_single_epoch_without_validation(history):
    fig = plots.build_training_curve(history, "t")
    legend = legend_texts(fig)
    assert "validation loss" not in legend
    assert "best epoch 1 (loss 0.5)" in legend
    stars = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [1.0]


def test_training_curve_empty_history():
    assert "no epochs recorded" in all_texts(plots.build_training_curve([], "t"))


def test_comparison_bars_legend_and_missing_values():
    fig = plots.build_comparison(TABLE, "AUC (source)", "runs")
    ax = fig.axes[0]
    assert legend_texts(fig) == ["ae", "gmm", "iforest"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fan", "pump", "valve"]
    assert ax.get_ylabel() == "AUC (source)"
    assert len(ax.patches) == 5  # 2 + 2 + 1 finite values
    texts = all_texts(fig)
    assert texts.count("n/a") == 4  # ae/valve, gmm/pump, iforest/pump (None), iforest/valve (NaN)
    for value in ("0.700", "0.650", "0.500", "0.600", "0.800"):
        assert value in texts


def test_comparison_without_values_does_not_fail():
    fig = plots.build_comparison({}, "AUC", "nothing")
    assert "no values" in all_texts(fig)


def test_lines_are_labelled():
    # every drawn line in the ROC figure carries a legend label (no anonymous curves)
    fig = plots.build_roc({"source": PERFECT}, "t")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines() if isinstance(ln, Line2D)]
    assert all(not lab.startswith("_") for lab in labels)
