"""A self-contained HTML report of one benchmark run: ``report.html``.

The page has no external resources: the CSS is inline and every figure is a PNG embedded as a
base64 data URI, so the file can be mailed or archived on its own. Figures are drawn with
matplotlib's object-oriented API on an Agg canvas, which leaves pyplot's global state alone.

What the page reads from a :class:`BenchmarkResult` besides its records: ``meta["model"]``,
``meta["date"]`` and ``meta["wall_time_s"]`` for the header (each shown as "—" when absent; the
rest of ``meta`` is listed under "Run details"), ``timings[detector]`` in seconds (other timing
keys are shown as stages), ``scores`` for the plots (a detector or dataset without scores is
left out of them) and ``search`` for the hyperparameter tables.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unseen._io import write_text
from unseen.benchmark.result import BenchmarkResult
from unseen.metrics import auroc, roc_curve

__all__ = ["write_report"]

DPI = 100
#: how many of the best detectors get ROC curves
TOP_ROC = 5
#: (record key, column title, higher is better)
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("auroc", "AUROC", True),
    ("fpr95_id", "FPR95 ID+", False),
    ("fpr95_ood", "FPR95 OOD+", False),
    ("aupr_in", "AUPR-In", True),
    ("aupr_out", "AUPR-Out", True),
)
#: tab10, so a detector keeps one colour in every ROC panel
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
GROUP_COLOURS = ("#e6862e", "#c0392b", "#8e44ad", "#16a085", "#7f8c8d")
ID_COLOUR = "#2c6fbb"


def write_report(result: BenchmarkResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` for ``result`` into ``out_dir`` (created if needed), atomically.

    Returns the path of the written file. Raises ValueError when ``result`` has no records or
    its scores are not finite 1-D arrays.
    """
    if not result.records:
        raise ValueError("result has no records; run the benchmark before writing its report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    write_text(path, _Page(result).render())
    return path


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0.01:
        return "&lt;0.01 s"
    if value < 60:
        return f"{value:.2f} s"
    minutes, secs = divmod(round(value), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hparams(hp: dict[str, Any]) -> str:
    if not hp:
        return '<span class="muted">none</span>'
    return ", ".join(f"{_e(k)}=<b>{_e(_value(v))}</b>" for k, v in hp.items())


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _mpl(text: str) -> str:
    """Keep matplotlib from reading ``$...$`` in a name as mathtext."""
    return text.replace("$", r"\$")


def _best(values: Sequence[float | None], higher: bool) -> float | None:
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return max(finite) if higher else min(finite)


def _auroc_colour(value: float | None) -> str:
    """Red at chance (0.5) or below, through yellow, to green at 1."""
    if value is None:
        return "transparent"
    hue = 120 * min(max((value - 0.5) / 0.5, 0.0), 1.0)
    return f"hsl({hue:.0f}, 65%, 84%)"


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- page


class _Page:
    """Gathers what the sections share (detector order, groups, lookups) and renders them."""

    def __init__(self, result: BenchmarkResult) -> None:
        self.r = result
        self.groups = {g: list(ds) for g, ds in result.groups.items()}
        self.sort_group = "near" if "near" in self.groups else next(iter(self.groups), None)
        self.by_key: dict[tuple[str, str, str], dict[str, Any]] = {
            (rec["detector"], rec["group"], rec["dataset"]): rec for rec in result.records
        }
        seen = list(dict.fromkeys(rec["detector"] for rec in result.records))
        self.detectors = sorted(seen, key=self._sort_key)
        self.hparams: dict[str, dict[str, Any]] = {}
        for rec in result.records:
            self.hparams.setdefault(rec["detector"], rec.get("hparams") or {})
        self.colour = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(self.detectors)}
        self.group_colour = {g: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, g in enumerate(self.groups)}

    def _sort_key(self, detector: str) -> tuple[bool, float]:
        """Best first, detectors without a value last; sorted() is stable, so ties keep run order."""
        value = self.mean(detector, self.sort_group) if self.sort_group else None
        return (value is None, -(value or 0.0))

    def mean(self, detector: str, group: str, metric: str = "auroc") -> float | None:
        rec = self.by_key.get((detector, group, "mean"))
        return None if rec is None else rec.get(metric)

    def metric(self, detector: str, group: str, dataset: str, metric: str = "auroc") -> float | None:
        rec = self.by_key.get((detector, group, dataset))
        return None if rec is None else rec.get(metric)

    def scored(self, detector: str) -> dict[str, np.ndarray] | None:
        """The detector's scores when it has ID scores, else None (no plots for it)."""
        s = self.r.scores.get(detector)
        return s if s is not None and "id" in s else None

    # ------------------------------------------------------------------- assembly

    def render(self) -> str:
        sections = [
            self.header(),
            self.leaderboard(),
            self.per_dataset(),
            self.bars(),
            self.rocs(),
            self.histograms(),
            self.search(),
            self.run_details(),
        ]
        title = f"unseen benchmark: {self.r.preset}"
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(s for s in sections if s)
            + "\n</main>\n</body>\n</html>\n"
        )

    def header(self) -> str:
        meta, timings = self.r.meta, self.r.timings
        acc = self.r.id_accuracy
        written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        extract = _number(meta.get("extract_seconds"))
        det_times = [(d, timings[d]) for d in self.detectors if d in timings]
        wall = _number(meta.get("wall_time_s"))
        wall_label = "Wall time"
        if wall is None and (det_times or extract is not None):
            wall = (extract or 0.0) + sum(t for _, t in det_times)
            wall_label = "Time (extract + detectors)"
        facts = [
            ("Preset", _e(self.r.preset)),
            ("Model", _e(meta.get("model", "—"))),
            ("ID accuracy", "—" if acc is None else f"{100 * acc:.2f} %"),
            ("Date", _e(meta["date"])) if "date" in meta else ("Report date", written),
            (wall_label, _seconds(wall)),
            ("Detectors", str(len(self.detectors))),
        ]
        cards = "".join(f'<div class="fact"><span>{k}</span><b>{v}</b></div>' for k, v in facts)
        stages = [("extract", extract)] if extract is not None else []
        stages += [(k, v) for k, v in timings.items() if k not in set(self.detectors)]
        chips = "".join(f'<span class="chip">{_e(k)} <b>{_seconds(v)}</b></span>' for k, v in stages)
        chips += "".join(f'<span class="chip det">{_e(d)} <b>{_seconds(v)}</b></span>' for d, v in det_times)
        times = f'<div class="chips"><span class="muted">Time:</span> {chips}</div>' if chips else ""
        failures = meta.get("failures") or {}
        if isinstance(failures, dict) and failures:
            items = "".join(f"<li><b>{_e(d)}</b>: <code>{_e(err)}</code></li>" for d, err in failures.items())
            n = len(failures)
            times += f'<div class="warn">{n} detector(s) failed and are not ranked:<ul>{items}</ul></div>'
        groups = "; ".join(
            f"<b>{_e(g)}</b>: {', '.join(_e(d) for d in ds)}" for g, ds in self.groups.items()
        )
        return f"""<header>
<h1>{_e(self.r.preset)} <span class="muted">· OOD detection benchmark</span></h1>
<div class="facts">{cards}</div>
{times}
<p class="protocol">Each detector is fitted on the in-distribution (ID) training data; its
hyperparameters are the grid point with the highest AUROC of ID validation against a separate OOD
validation set (tables at the bottom); only then does it score the ID test set and every OOD test
set. <b>Higher score = more OOD</b> for every detector. Each
metric compares the ID test set with one OOD set (OOD is the positive class for AUROC and
AUPR-Out, ID for AUPR-In); a group's value is the <b>unweighted mean</b> over its datasets, so
every dataset counts the same whatever its size. Two FPR@95%TPR conventions are shown:
<b>FPR95 ID+</b> (<code>fpr95_id</code>, the classic one) is the fraction of OOD samples accepted
at the threshold that keeps 95&nbsp;% of ID samples; <b>FPR95 OOD+</b> (<code>fpr95_ood</code>,
OpenOOD v1.5) is the fraction of ID samples rejected at the first threshold that catches
95&nbsp;% of OOD samples. All values are percentages; the best value of each column is
highlighted. Groups: {groups or '—'}.</p>
<p class="muted small">Report written {written} by <code>unseen</code>.</p>
</header>"""

    def leaderboard(self) -> str:
        dets, groups = self.detectors, list(self.groups)
        cols = [(g, key, title, hi) for g in groups for key, title, hi in COLUMNS]
        best = {(g, key): _best([self.mean(d, g, key) for d in dets], hi) for g, key, _, hi in cols}
        timings = self.r.timings
        best_time = _best([timings.get(d) for d in dets], higher=False)
        top = "".join(
            f'<th colspan="{len(COLUMNS)}" class="grp" style="border-top:3px solid {self.group_colour[g]}">'
            f"{_e(g)}-OOD mean</th>"
            for g in groups
        )
        sub = "".join(
            f'<th class="{"sorted" if g == self.sort_group and key == "auroc" else ""}">'
            f'{title}{" ▾" if g == self.sort_group and key == "auroc" else ""}'
            f'<small>{"↑" if hi else "↓"}</small></th>'
            for g, key, title, hi in cols
        )
        rows = []
        for rank, d in enumerate(dets, 1):
            cells = []
            for g, key, _, _ in cols:
                v = self.mean(d, g, key)
                cls = "num best" if v is not None and math.isclose(v, best[g, key] or 0.0) else "num"
                cells.append(f'<td class="{cls}">{_pct(v)}</td>')
            t = timings.get(d)
            tcls = "num best" if t is not None and t == best_time else "num"
            rows.append(
                f'<tr data-detector="{_e(d)}"><td class="num muted">{rank}</td>'
                f'<td class="det"><span class="dot" style="background:{self.colour[d]}"></span>{_e(d)}</td>'
                f'<td class="hp">{_hparams(self.hparams[d])}</td>{"".join(cells)}'
                f'<td class="{tcls}">{_seconds(t)}</td></tr>'
            )
        return f"""<section>
<h2>Leaderboard</h2>
<p class="muted">Sorted by {_e(self.sort_group or '—')}-OOD mean AUROC. ↑ higher is better, ↓ lower is
better; the best value of each column is highlighted.</p>
<div class="scroll"><table class="board" id="leaderboard">
<thead><tr><th rowspan="2">#</th><th rowspan="2">Detector</th><th rowspan="2">Chosen hyperparameters</th>
{top}<th rowspan="2">Time</th></tr>
<tr>{sub}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></div>
</section>"""

    def per_dataset(self) -> str:
        dets = self.detectors
        head_groups = "".join(
            f'<th colspan="{len(ds) + 1}" class="grp" style="border-top:3px solid {self.group_colour[g]}">'
            f"{_e(g)}-OOD</th>"
            for g, ds in self.groups.items()
        )
        head_ds = "".join(
            "".join(f"<th>{_e(ds)}</th>" for ds in dss) + '<th class="meancol">mean</th>'
            for dss in self.groups.values()
        )
        rows = []
        for d in dets:
            cells = []
            for g, dss in self.groups.items():
                for ds in [*dss, "mean"]:
                    v = self.metric(d, g, ds)
                    cls = "num meancol" if ds == "mean" else "num"
                    cells.append(f'<td class="{cls}" style="background:{_auroc_colour(v)}">{_pct(v)}</td>')
            rows.append(f'<tr><td class="det">{_e(d)}</td>{"".join(cells)}</tr>')
        matrix = f"""<div class="scroll"><table class="heat">
<thead><tr><th rowspan="2">Detector</th>{head_groups}</tr><tr>{head_ds}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>"""
        details = []
        for g, dss in self.groups.items():
            for ds in dss:
                details.append(self.dataset_table(g, ds))
        return f"""<section>
<h2>AUROC per OOD dataset</h2>
<p class="muted">Cell colour runs from red (chance, 50) to green (100).</p>
{matrix}
<h3>All metrics per dataset</h3>
{"".join(details)}
</section>"""

    def dataset_table(self, group: str, dataset: str) -> str:
        dets = self.detectors
        best = {key: _best([self.metric(d, group, dataset, key) for d in dets], hi) for key, _, hi in COLUMNS}
        rows = []
        for d in dets:
            cells = []
            for key, _, _ in COLUMNS:
                v = self.metric(d, group, dataset, key)
                cls = "num best" if v is not None and math.isclose(v, best[key] or 0.0) else "num"
                cells.append(f'<td class="{cls}">{_pct(v)}</td>')
            rows.append(f'<tr><td class="det">{_e(d)}</td>{"".join(cells)}</tr>')
        head = "".join(f"<th>{t}<small>{'↑' if hi else '↓'}</small></th>" for _, t, hi in COLUMNS)
        summary = f'<b>{_e(dataset)}</b> <span class="muted">({_e(group)}-OOD)</span>'
        return f"""<details><summary>{summary}</summary>
<table class="board"><thead><tr><th>Detector</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
</details>"""

    # ------------------------------------------------------------------- figures

    def bars(self) -> str:
        groups = list(self.groups)
        dets = [d for d in self.detectors if any(self.mean(d, g) is not None for g in groups)]
        if not dets or not groups:
            return ""
        fig = Figure(figsize=(10, 0.9 + 0.34 * len(dets) * max(1, len(groups)) ** 0.5), layout="constrained")
        ax = fig.add_subplot()
        height = 0.8 / len(groups)
        y = np.arange(len(dets))
        for i, g in enumerate(groups):
            vals = np.array([self.mean(d, g) if self.mean(d, g) is not None else np.nan for d in dets])
            pos = y - 0.4 + height * (i + 0.5)
            ax.barh(pos, 100 * vals, height=height * 0.92, color=self.group_colour[g],
                    label=_mpl(f"{g}-OOD"))
            for p, v in zip(pos, vals, strict=True):
                if np.isfinite(v):
                    ax.text(100 * v + 0.3, p, f"{100 * v:.1f}", va="center", fontsize=7, color="#333")
        ax.set_yticks(y, [_mpl(d) for d in dets])
        ax.invert_yaxis()
        finite = [self.mean(d, g) for d in dets for g in groups if self.mean(d, g) is not None]
        low = max(0.0, min(50.0, 100 * min(finite) - 5)) if finite else 0.0
        ax.set_xlim(low, 100 + 3)
        ax.axvline(50, color="#999", lw=0.8, ls=":")
        ax.set_xlabel("mean AUROC (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(loc="lower right", frameon=False, fontsize=8)
        return f"""<section>
<h2>Mean AUROC per group</h2>
<figure class="wide bars"><img alt="bar chart of mean AUROC per detector and group" src="{_png(fig)}">
<figcaption>Sorted by {_e(self.sort_group or '—')}-OOD mean AUROC; the dotted line is chance.</figcaption>
</figure></section>"""

    def rocs(self) -> str:
        top = [d for d in self.detectors if self.scored(d) is not None][:TOP_ROC]
        if not top:
            return ""
        panels = []
        for g, dss in self.groups.items():
            for ds in dss:
                dets = [d for d in top if ds in self.r.scores[d]]
                if dets:
                    panels.append(self.roc_panel(g, ds, dets))
        if not panels:
            return ""
        return f"""<section>
<h2>ROC curves of the {len(top)} best detectors</h2>
<p class="muted">Best by {_e(self.sort_group or "—")}-OOD mean AUROC among the detectors whose scores
the run kept. OOD is the positive class: the x-axis is the fraction of ID test samples flagged as OOD,
the y-axis the fraction of OOD samples caught. The legend gives each detector's AUROC on that set.</p>
<div class="grid">{"".join(panels)}</div></section>"""

    def roc_panel(self, group: str, dataset: str, dets: list[str]) -> str:
        # fixed margins: constrained layout would double the drawing time of these small panels
        fig = Figure(figsize=(4.2, 3.7))
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.92)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8, ls=":")
        for d in dets:
            id_s, ood_s = self.r.scores[d]["id"], self.r.scores[d][dataset]
            fpr, tpr, _ = roc_curve(id_s, ood_s)
            ax.plot(fpr, tpr, color=self.colour[d], lw=1.6,
                    label=_mpl(f"{d} ({100 * auroc(id_s, ood_s):.1f})"))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("FPR (ID flagged)", fontsize=8)
        ax.set_ylabel("TPR (OOD caught)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(_mpl(f"{dataset}  ·  {group}-OOD"), fontsize=10)
        ax.grid(alpha=0.25)
        ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.85)
        names = ",".join(dets)
        return (
            f'<figure class="roc" data-dataset="{_e(dataset)}" data-detectors="{_e(names)}">'
            f'<img alt="ROC curves on {_e(dataset)}" src="{_png(fig)}"></figure>'
        )

    def histograms(self) -> str:
        panels = [self.histogram_panel(d) for d in self.detectors if self.scored(d) is not None]
        if not panels:
            return ""
        keys = [("ID test", ID_COLOUR)] + [(f"{g}-OOD", c) for g, c in self.group_colour.items()]
        legend = "".join(f'<span class="key" style="background:{c}"></span>{_e(k)} ' for k, c in keys)
        return f"""<section>
<h2>Score distributions</h2>
<p class="muted">{legend}· density-normalised histograms, one panel per detector, bins shared within
a panel over the 0.5–99.5 % quantile range of its pooled scores; each OOD group pools its
datasets. Higher score = more OOD, so a good detector puts the coloured mass right of the blue.</p>
<div class="grid small">{"".join(panels)}</div></section>"""

    def histogram_panel(self, detector: str) -> str:
        scores = self.r.scores[detector]
        series: list[tuple[str, np.ndarray, str]] = [("ID test", np.asarray(scores["id"], float), ID_COLOUR)]
        for g, dss in self.groups.items():
            parts = [np.asarray(scores[ds], float).ravel() for ds in dss if ds in scores]
            if parts:
                series.append((f"{g}-OOD", np.concatenate(parts), self.group_colour[g]))
        pooled = np.concatenate([s for _, s, _ in series])
        if not np.isfinite(pooled).all():
            raise ValueError(
                f"scores of detector {detector!r} contain NaN or inf; the report cannot plot them "
                "(fix the detector, or leave its scores out of the result)"
            )
        lo, hi = np.quantile(pooled, [0.005, 0.995])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        # about sqrt(n) bins for the smallest series, so small sets do not look like noise
        n_bins = int(np.clip(np.sqrt(min(len(x) for _, x, _ in series)), 10, 50))
        edges = np.linspace(lo, hi, n_bins + 1)
        fig = Figure(figsize=(3.6, 2.4))
        fig.subplots_adjust(left=0.03, right=0.97, bottom=0.12, top=0.89)
        ax = fig.add_subplot()
        for _, s, colour in series:
            ax.hist(s, bins=edges, density=True, histtype="stepfilled", alpha=0.22, color=colour)
            ax.hist(s, bins=edges, density=True, histtype="step", color=colour, linewidth=1.3)
        near = self.mean(detector, self.sort_group) if self.sort_group else None
        suffix = f"  ({self.sort_group} AUROC {100 * near:.1f})" if near is not None else ""
        ax.set_title(_mpl(detector + suffix), fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right", "left"]].set_visible(False)
        return (
            f'<figure class="hist" data-detector="{_e(detector)}">'
            f'<img alt="score histograms of {_e(detector)}" src="{_png(fig)}"></figure>'
        )

    # ------------------------------------------------------------------- tables

    def search(self) -> str:
        blocks = [self.search_table(d, self.r.search[d]) for d in self.detectors if self.r.search.get(d)]
        blocks += [self.search_table(d, pts) for d, pts in self.r.search.items()
                   if d not in set(self.detectors) and pts]
        if not blocks:
            return ""
        return f"""<section>
<h2>Hyperparameter search</h2>
<p class="muted">Every grid point tried, with its validation score; the chosen one is highlighted.</p>
{"".join(blocks)}</section>"""

    def search_table(self, detector: str, points: list[dict[str, Any]]) -> str:
        """One row per grid point; the chosen one is the entry marked ``selected`` or, without such
        marks, the one whose hyperparameters match the leaderboard's."""
        rows = [_flatten(p) for p in points]
        marked = any("selected" in row for row in rows)
        cols = [c for c in dict.fromkeys(k for row in rows for k in row) if c != "selected"]
        chosen = {str(k): v for k, v in self.hparams.get(detector, {}).items()}
        body = []
        for row in rows:
            if marked:
                hit = row.get("selected") is True
            else:
                hit = bool(chosen) and all(k in row and row[k] == v for k, v in chosen.items())
            cells = "".join(f"<td>{_search_cell(c, row[c]) if c in row else '—'}</td>" for c in cols)
            body.append(f'<tr class="{"chosen" if hit else ""}">{cells}</tr>')
        head = "".join(f"<th>{_e(c)}{' (%)' if c == 'val_auroc' else ''}</th>" for c in cols)
        return f"""<details><summary><b>{_e(detector)}</b> <span class="muted">({len(points)} grid
points)</span></summary><table class="board search"><thead><tr>{head}</tr></thead>
<tbody>{"".join(body)}</tbody></table></details>"""

    def run_details(self) -> str:
        if not self.r.meta:
            return ""
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td><code>{_e(_value(v))}</code></td></tr>" for k, v in self.r.meta.items()
        )
        return f"""<section><details><summary><b>Run details</b> <span class="muted">(meta)</span></summary>
<table class="kv">{rows}</table></details></section>"""


def _search_cell(column: str, value: Any) -> str:
    if column == "val_auroc" and isinstance(value, float):
        return _pct(value)
    return _e(_value(value))


def _flatten(point: dict[str, Any]) -> dict[str, Any]:
    """A search entry with a nested ``hparams`` (or any dict) spread into top-level columns."""
    flat: dict[str, Any] = {}
    for k, v in point.items():
        if isinstance(v, dict):
            flat.update({str(kk): vv for kk, vv in v.items()})
        else:
            flat[str(k)] = v
    return flat


CSS = """
:root { --fg:#1d2330; --muted:#6b7385; --line:#e3e6ec; --accent:#2c6fbb; --best:#dff3e4; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 60px; }
header, section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px;
  margin-bottom:18px; }
h1 { margin:0 0 12px; font-size:26px; } h2 { margin:0 0 6px; font-size:19px; }
h3 { margin:18px 0 6px; font-size:15px; }
.muted { color:var(--muted); font-weight:normal; } .small { font-size:12px; margin:6px 0 0; }
.facts { display:flex; flex-wrap:wrap; gap:10px; margin-bottom:10px; }
.fact { background:var(--bg); border-radius:8px; padding:6px 12px; min-width:120px; }
.fact span { display:block; font-size:11px; text-transform:uppercase; letter-spacing:.05em;
  color:var(--muted); }
.fact b { font-size:16px; }
.chips { display:flex; flex-wrap:wrap; gap:6px; align-items:center; font-size:12px; margin-bottom:8px; }
.chip { background:#eef3fa; border-radius:12px; padding:1px 9px; } .chip.det { background:#f1f1f4; }
.warn { background:#fdf0e6; border-left:4px solid #e6862e; padding:6px 12px; margin:8px 0; font-size:13px; }
.warn ul { margin:4px 0 0; padding-left:20px; }
.protocol { max-width: 110ch; color:#333; margin:10px 0 0; }
code { font-size:12px; background:#f1f2f5; padding:0 3px; border-radius:3px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; font-size:13px; }
th, td { padding:4px 9px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
thead th { background:#f3f5f8; font-weight:600; font-size:12px; }
th.grp { text-align:center; border-left:2px solid #fff; }
th small { color:var(--muted); margin-left:2px; }
th.sorted { color:var(--accent); }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
td.best { background:var(--best); font-weight:700; }
td.det { font-weight:600; }
td.hp { white-space:normal; max-width:260px; font-size:12px; color:#444; }
table.board tbody tr:hover td { background:#f7f9fc; }
table.board tbody tr:hover td.best { background:#cdebd5; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:7px; }
table.heat td.num { min-width:64px; } .meancol { border-left:2px solid #fff; font-weight:700; }
details { margin:6px 0; } summary { cursor:pointer; padding:3px 0; }
details table { margin:6px 0 10px 14px; }
tr.chosen td { background:var(--best); font-weight:700; }
figure { margin:0; } figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figure.wide img { margin:0 auto; } figcaption { color:var(--muted); font-size:12px; text-align:center; }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap:12px; }
.grid.small { grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); }
.grid figure { border:1px solid var(--line); border-radius:8px; padding:4px; background:#fff; }
.key { display:inline-block; width:11px; height:11px; border-radius:2px; margin:0 4px 0 8px; opacity:.7;
  vertical-align:-1px; }
table.kv th { background:none; width:1%; }
"""

