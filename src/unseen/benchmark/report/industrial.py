"""The visual-inspection report: leaderboard, good-parts-only thresholds, curves, example grid.

``render_report(result)`` returns one self-contained HTML page (figures as embedded PNG);
``summary_tables(result)`` the rich tables the CLI prints.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from unseen.data.base import load_image
from unseen.detectors.maps.base import resize_map
from unseen.metrics.scores import roc_curve

if TYPE_CHECKING:
    from unseen.benchmark.protocols.industrial import InspectionResult, Outcome

_METRICS = ("image_auroc", "image_aupr", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro")
_HEAD = ("image AUROC", "image AUPR", "F1-max", "pixel AUROC", "pixel AP", "AUPRO@0.3")
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;
margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child{text-align:left}.muted{color:#666}img{max-width:100%}"""


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _kinds(result: InspectionResult) -> list[str]:
    return sorted({k for o in result.outcomes.values() for k in o.per_type})


def summary_tables(result: InspectionResult) -> list[Any]:
    kinds = _kinds(result)
    board = Table(title=f"unseen benchmark: {result.meta['task']} (sorted by image AUROC, values in %)")
    for col in ("detector", *_HEAD, *kinds, "fit s", "score s"):
        board.add_column(col, justify="left" if col == "detector" else "right")
    for row in result.leaderboard():
        board.add_row(
            row["detector"],
            *(_pct(row[m]) for m in _METRICS),
            *(_pct(row["per_type_auroc"].get(k)) for k in kinds),
            f"{row['fit_s']:.1f}",
            f"{row['score_s']:.1f}",
        )
    guard = Table(title="thresholds from good parts only (conformal) vs F1-optimal on the test set")
    for col in (
        "detector",
        "threshold",
        "false alarms (good test)",
        "recall",
        *kinds,
        "pixel F1",
        "simulated false alarms mean ± sd",
    ):
        guard.add_column(col, justify="left" if col in ("detector", "threshold") else "right")
    for name, o in result.outcomes.items():
        for key, label in _guard_rows(o):
            g = o.guard[key]
            sim = o.simulation.get(key)
            simulated = "" if sim is None else f"{100 * sim['mean']:.2f} ± {100 * sim['sd']:.2f}"
            guard.add_row(
                name,
                label,
                _pct(g["false_alarm_rate"]),
                _pct(g["recall"]),
                *(_pct(g["recall_per_type"].get(k)) for k in kinds),
                _pct(g.get("pixel_f1")),
                simulated,
            )
    meta = result.meta
    note = (
        f"backbone {meta['backbone']} at {meta['resolution']} px, layers {meta['layers']}; "
        f"split {meta['sizes']}; "
        f"extraction {meta['extract_seconds']:.0f} s, wall time {meta['wall_time_s']:.0f} s"
    )
    return [board, guard, note, *(f"failed {d}: {e}" for d, e in meta["failures"].items())]


def _guard_rows(o: Outcome) -> list[tuple[str, str]]:
    """The threshold rows of ``o`` (a level the calibration set is too small for is absent)."""
    rows = [(f"alpha={a}", f"conformal α={a}") for a in (0.05, 0.01) if f"alpha={a}" in o.guard]
    return [*rows, ("f1_optimal_on_test", "F1-optimal ON TEST (oracle)")]


def _leaderboard_html(result: InspectionResult) -> str:
    kinds = _kinds(result)
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ("detector", *_HEAD, *[f"AUROC {k}" for k in kinds], "fit s", "score s")
    )
    body = []
    for row in result.leaderboard():
        cells = [
            html.escape(row["detector"]),
            *(_pct(row[m]) for m in _METRICS),
            *(_pct(row["per_type_auroc"].get(k)) for k in kinds),
            f"{row['fit_s']:.1f}",
            f"{row['score_s']:.1f}",
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _guard_html(result: InspectionResult) -> str:
    kinds = _kinds(result)
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "detector",
            "threshold rule",
            "threshold",
            "false alarms on good test",
            "recall",
            *[f"recall {k}" for k in kinds],
            "pixel F1 of the mask",
        )
    )
    body = []
    for name, o in result.outcomes.items():
        for key, label in _guard_rows(o):
            g = o.guard[key]
            cells = [
                html.escape(name),
                label,
                f"{g['threshold']:.4g}",
                _pct(g["false_alarm_rate"]),
                _pct(g["recall"]),
                *(_pct(g["recall_per_type"].get(k)) for k in kinds),
                _pct(g.get("pixel_f1")),
            ]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _simulation_html(result: InspectionResult) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "detector",
            "α",
            "mean false-alarm rate",
            "sd",
            "5–95 % of draws",
            "bounds on the mean [α − 1/(n+1), α]",
        )
    )
    body = []
    for name, o in result.outcomes.items():
        for alpha in (a for a in (0.05, 0.01) if f"alpha={a}" in o.simulation):
            s = o.simulation[f"alpha={alpha}"]
            cells = [
                html.escape(name),
                alpha,
                f"{100 * s['mean']:.2f} %",
                f"{100 * s['sd']:.2f}",
                f"{100 * s['q05']:.1f}–{100 * s['q95']:.1f} %",
                f"[{100 * s['lower_bound']:.2f}, {100 * s['upper_bound']:.2f}] %",
            ]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    any_sim = next(iter(result.outcomes.values())).simulation
    return (
        f"<p class='muted'>{any_sim['draws']} random re-splits of the {any_sim['n_calibration']} "
        "calibration + "
        f"{any_sim['n_test_good']} good test parts (training rows fixed).</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table>"
    )


def _curves_figure(result: InspectionResult) -> str:
    fig = Figure(figsize=(15, 4.5))
    image_ax, pixel_ax, pro_ax = fig.subplots(1, 3)
    labels = result.truth.labels
    for name, o in result.outcomes.items():
        fpr, tpr, _ = roc_curve(o.test_scores[labels == 0], o.test_scores[labels != 0])
        image_ax.plot(fpr, tpr, label=f"{name} ({100 * float(o.metrics['image_auroc'] or 0):.1f})")
        if o.curves:
            pixel_ax.plot(o.curves["pixel_fpr"], o.curves["pixel_tpr"], label=name)
            pro_ax.plot(o.curves["pixel_fpr"], o.curves["pro"], label=name)
    pro_ax.axvline(0.3, color="grey", ls=":")
    pro_ax.set_xlim(0, 0.4)
    for ax, title in (
        (image_ax, "image ROC"),
        (pixel_ax, "pixel ROC"),
        (pro_ax, "PRO (AUPRO up to FPR 0.3)"),
    ):
        ax.set_title(title)
        ax.set_xlabel("false-positive rate")
        ax.legend(fontsize=7)
    return _png(fig)


def _picks(o: Outcome, result: InspectionResult) -> list[tuple[str, int]]:
    """Per defect type the best-detected and worst-detected test image; for good parts the
    highest-scored (worst) and lowest-scored (best)."""
    defects = np.array(result.truth.defects)
    out = []
    for kind in ["good", *_kinds(result)]:
        rows = np.flatnonzero(defects == kind)
        order = rows[np.argsort(o.test_scores[rows], kind="stable")]
        best, worst = (order[0], order[-1]) if kind == "good" else (order[-1], order[0])
        out += [(f"{kind}: best", int(best)), (f"{kind}: worst", int(worst))]
    return out


def _mask_threshold(o: Outcome) -> tuple[float, str]:
    """The threshold of the drawn masks and how the caption names it: conformal at alpha = 0.05,
    or, when the calibration set is too small for that level, the test-set oracle, said so."""
    if "alpha=0.05" in o.guard:
        return o.guard["alpha=0.05"]["threshold"], "the conformal threshold at α = 0.05"
    return o.guard["f1_optimal_on_test"]["threshold"], (
        "the F1-optimal threshold ON THE TEST SET (an oracle: the calibration set is too small for "
        "α = 0.05)"
    )


def _grid_figure(o: Outcome, result: InspectionResult) -> str:
    assert o.overlays is not None
    picks = _picks(o, result)
    cols = 4
    fig = Figure(figsize=(4 * cols, 3.6 * -(-len(picks) // cols)))
    axes = fig.subplots(-(-len(picks) // cols), cols, squeeze=False).ravel()
    threshold, _ = _mask_threshold(o)
    masks = dict(zip(result.truth.pixel_rows.tolist(), result.truth.masks, strict=True))
    for ax, (title, i) in zip(axes, picks, strict=False):
        image = np.asarray(load_image(result.truth.images[i]).convert("L"))
        heat = resize_map(o.overlays[i].astype(np.float32), image.shape)
        ax.imshow(image, cmap="gray")
        ax.imshow(heat, cmap="jet", alpha=0.35)
        if i in masks and masks[i].any():
            ax.contour(masks[i], levels=[0.5], colors="red", linewidths=1.2)
        if (heat > threshold).any():
            ax.contour(heat > threshold, levels=[0.5], colors="cyan", linewidths=0.8, linestyles="dashed")
        ax.set_title(f"{title} (score {o.test_scores[i]:.3g})", fontsize=8)
        ax.axis("off")
    for ax in axes[len(picks) :]:
        ax.axis("off")
    return _png(fig)


def render_report(result: InspectionResult) -> str:
    meta = result.meta
    mapped = [o for o in result.outcomes.values() if o.overlays is not None]
    best = max(mapped, key=lambda o: float(o.metrics["image_auroc"] or 0)) if mapped else None
    grid = (
        ""
        if best is None
        else (
            f"<h2>Examples: {html.escape(best.detector)} (best map detector by image AUROC)</h2>"
            "<p class='muted'>red: ground-truth contour; colours: anomaly map; cyan dashed: the binary "
            f"mask of {_mask_threshold(best)[1]} (map > threshold, drawn on the reduced overlay "
            "kept for the report). Best/worst = highest/lowest "
            "score within each defect type; for good parts, worst = highest score.</p>"
            + _grid_figure(best, result)
        )
    )
    failures = "".join(
        f"<p>failed {html.escape(d)}: {html.escape(e)}</p>" for d, e in meta["failures"].items()
    )
    task = html.escape(meta["task"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>unseen: {task}</title>
<style>{_CSS}</style></head><body>
<h1>unseen benchmark: {html.escape(meta["task"])}</h1>
<p>{html.escape(meta["description"])}</p>
<p class="muted">backbone {html.escape(meta["backbone"])} at {meta["resolution"]} px (squashed), layers
{html.escape(str(meta["layers"]))}, patch grid {meta["grid"]}, storage {meta["storage"]};
split (seed {meta["seed"]}) {html.escape(str(meta["sizes"]))}; extraction {meta["extract_seconds"]:.0f} s,
wall time {meta["wall_time_s"]:.0f} s.
Values in %.</p>{failures}
<h2>Leaderboard</h2>{_leaderboard_html(result)}
<h2>Curves</h2>{_curves_figure(result)}
<h2>Thresholds from good parts only</h2>
<p class="muted">Conformal: the ⌈(n+1)(1−α)⌉-th smallest guard score of the n defect-free calibration
parts (guard score = max of the anomaly map; its own score for a detector without a map). The last row
per detector uses the F1-optimal threshold chosen on the <b>test set</b> itself, as anomalib reports by
default: an oracle, not available in production.</p>{_guard_html(result)}
<h2>False alarms over random calibration/test splits</h2>{_simulation_html(result)}
{grid}
</body></html>"""
