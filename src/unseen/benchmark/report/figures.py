"""The report's figures: matplotlib drawings returned as embeddable PNG data URIs.

Drawn with matplotlib's object-oriented API on an Agg canvas, which leaves pyplot's global
state alone. Each function takes the result and what the page decided (detector order,
colours) and returns ``data:image/png;base64,...``; the HTML around them lives in :mod:`.page`.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unseen.benchmark.report.tables import group_means
from unseen.benchmark.result import BenchmarkResult
from unseen.metrics import auroc, roc_curve

DPI = 100
#: tab10, so a detector keeps one colour in every ROC panel
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
GROUP_COLOURS = ("#e6862e", "#c0392b", "#8e44ad", "#16a085", "#7f8c8d")
ID_COLOUR = "#2c6fbb"


def mathtext_safe(text: str) -> str:
    """Keep matplotlib from reading ``$...$`` in a name as mathtext."""
    return text.replace("$", r"\$")


def png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def group_bars(result: BenchmarkResult, detectors: list[str], group_colour: dict[str, str]) -> str:
    """Horizontal bars of each detector's mean AUROC per group, ``detectors`` top to bottom."""
    groups = list(result.groups)
    auroc_means = group_means(result)
    means = {(d, g): auroc_means.get((d, g)) for d in detectors for g in groups}
    fig = Figure(figsize=(10, 0.9 + 0.34 * len(detectors) * max(1, len(groups)) ** 0.5),
                 layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / len(groups)
    y = np.arange(len(detectors))
    for i, g in enumerate(groups):
        vals = np.array([np.nan if means[d, g] is None else means[d, g] for d in detectors], float)
        pos = y - 0.4 + height * (i + 0.5)
        ax.barh(pos, 100 * vals, height=height * 0.92, color=group_colour[g],
                label=mathtext_safe(f"{g}-OOD"))
        for p, v in zip(pos, vals, strict=True):
            if np.isfinite(v):
                ax.text(100 * v + 0.3, p, f"{100 * v:.1f}", va="center", fontsize=7, color="#333")
    ax.set_yticks(y, [mathtext_safe(d) for d in detectors])
    ax.invert_yaxis()
    finite = [v for v in means.values() if v is not None]
    low = max(0.0, min(50.0, 100 * min(finite) - 5)) if finite else 0.0
    ax.set_xlim(low, 100 + 3)
    ax.axvline(50, color="#999", lw=0.8, ls=":")
    ax.set_xlabel("mean AUROC (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    return png(fig)


def roc_panel(
    result: BenchmarkResult, group: str, dataset: str, detectors: list[str], colour: dict[str, str]
) -> str:
    """ROC curves of ``detectors`` on one OOD dataset (OOD = positive class)."""
    # fixed margins: constrained layout would double the drawing time of these small panels
    fig = Figure(figsize=(4.2, 3.7))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.92)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8, ls=":")
    for d in detectors:
        id_s, ood_s = result.scores[d]["id"], result.scores[d][dataset]
        fpr, tpr, _ = roc_curve(id_s, ood_s)
        ax.plot(fpr, tpr, color=colour[d], lw=1.6,
                label=mathtext_safe(f"{d} ({100 * auroc(id_s, ood_s):.1f})"))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("FPR (ID flagged)", fontsize=8)
    ax.set_ylabel("TPR (OOD caught)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(mathtext_safe(f"{dataset}  ·  {group}-OOD"), fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.85)
    return png(fig)


def score_histogram(
    result: BenchmarkResult, detector: str, group_colour: dict[str, str], title: str
) -> str:
    """Density histograms of one detector's scores: ID test, and each OOD group pooled.

    Raises ValueError when the scores are not all finite."""
    scores = result.scores[detector]
    series: list[tuple[np.ndarray, str]] = [(np.asarray(scores["id"], float), ID_COLOUR)]
    for g, dss in result.groups.items():
        parts = [np.asarray(scores[ds], float).ravel() for ds in dss if ds in scores]
        if parts:
            series.append((np.concatenate(parts), group_colour[g]))
    pooled = np.concatenate([s for s, _ in series])
    if not np.isfinite(pooled).all():
        raise ValueError(
            f"scores of detector {detector!r} contain NaN or inf; the report cannot plot them "
            "(fix the detector, or leave its scores out of the result)"
        )
    lo, hi = np.quantile(pooled, [0.005, 0.995])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    # about sqrt(n) bins for the smallest series, so small sets do not look like noise
    n_bins = int(np.clip(np.sqrt(min(len(x) for x, _ in series)), 10, 50))
    edges = np.linspace(lo, hi, n_bins + 1).tolist()
    fig = Figure(figsize=(3.6, 2.4))
    fig.subplots_adjust(left=0.03, right=0.97, bottom=0.12, top=0.89)
    ax = fig.add_subplot()
    for s, colour in series:
        ax.hist(s, bins=edges, density=True, histtype="stepfilled", alpha=0.22, color=colour)
        ax.hist(s, bins=edges, density=True, histtype="step", color=colour, linewidth=1.3)
    ax.set_title(mathtext_safe(title), fontsize=9)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right", "left"]].set_visible(False)
    return png(fig)
