"""The HTML of the OOD-detection report, ``report.html``: sections around the tables and figures.

The page has no external resources: the stylesheet (``report.css``, package data) is inlined and
every figure is a PNG embedded as a base64 data URI, so the file can be mailed or archived on its
own. The numbers come from :mod:`.tables` (pure data, shared with the CLI leaderboard) and the
drawings from :mod:`.figures`; this module only writes markup.

What the page reads from a :class:`BenchmarkResult` besides its records: ``meta["model"]``,
``meta["date"]`` and ``meta["wall_time_s"]`` for the header (each shown as "—" when absent; the
rest of ``meta`` is listed under "Run details"), ``timings[detector]`` in seconds (other timing
keys are shown as stages), ``meta["failures"]`` and ``not_applicable`` (listed under the facts),
``scores`` for the plots (a detector or dataset without scores is left out of them) and
``search`` for the hyperparameter tables.
"""

from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from unseen._io import write_text
from unseen.benchmark.report import figures, tables
from unseen.benchmark.report.tables import COLUMNS, MetricTable
from unseen.benchmark.result import BenchmarkResult

__all__ = ["write_report"]

#: how many of the best detectors get ROC curves
TOP_ROC = 5


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


@cache
def stylesheet() -> str:
    return resources.files("unseen.benchmark.report").joinpath("report.css").read_text("utf-8")


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


def _auroc_colour(value: float | None) -> str:
    """Red at chance (0.5) or below, through yellow, to green at 1."""
    if value is None:
        return "transparent"
    hue = 120 * min(max((value - 0.5) / 0.5, 0.0), 1.0)
    return f"hsl({hue:.0f}, 65%, 84%)"


def _listing(css_class: str, heading: str, items: dict[str, str]) -> str:
    """A boxed list of detectors with a reason each (failures, not applicable)."""
    lis = "".join(f"<li><b>{_e(d)}</b>: <code>{_e(why)}</code></li>" for d, why in items.items())
    return f'<div class="{css_class}">{len(items)} detector(s) {heading}:<ul>{lis}</ul></div>'


def _search_cell(column: str, value: Any) -> str:
    if column == "val_auroc" and isinstance(value, float):
        return _pct(value)
    return _e(_value(value))


# --------------------------------------------------------------------------- page


class _Page:
    """What the sections share (detector order, groups, colours) and the sections themselves."""

    def __init__(self, result: BenchmarkResult) -> None:
        self.r = result
        self.groups = {g: list(ds) for g, ds in result.groups.items()}
        self.sort_group = tables.sort_group(result)
        self.detectors = tables.detector_order(result)
        self.hparams = tables.chosen_hparams(result)
        self.auroc_means = tables.group_means(result)
        self.colour = {d: figures.PALETTE[i % len(figures.PALETTE)] for i, d in enumerate(self.detectors)}
        self.group_colour = {
            g: figures.GROUP_COLOURS[i % len(figures.GROUP_COLOURS)] for i, g in enumerate(self.groups)
        }

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
            f"<title>{_e(title)}</title>\n<style>{stylesheet()}</style>\n</head>\n<body>\n<main>\n"
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
        times += self.notices()
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

    def notices(self) -> str:
        """Detectors that failed (``--keep-going``) and those that do not apply, with reasons."""
        out = ""
        failures = self.r.meta.get("failures") or {}
        if isinstance(failures, dict) and failures:
            out += _listing("warn", "failed and are not ranked", failures)
        if self.r.not_applicable:
            out += _listing("note", "do not apply to this model or data (a declared requirement is "
                            "not met) and are not ranked", self.r.not_applicable)
        return out

    def leaderboard(self) -> str:
        board = tables.group_means_table(self.r)
        timings = self.r.timings
        best_time = tables.best_value([timings.get(d) for d, _ in board.rows], higher=False)
        top = "".join(
            f'<th colspan="{len(COLUMNS)}" class="grp" style="border-top:3px solid {self.group_colour[g]}">'
            f"{_e(g)}-OOD mean</th>"
            for g in self.groups
        )
        titles = {key: title for key, title, _ in COLUMNS}
        sub = "".join(
            f'<th class="{"sorted" if g == self.sort_group and key == "auroc" else ""}">'
            f'{titles[key]}{" ▾" if g == self.sort_group and key == "auroc" else ""}'
            f'<small>{"↑" if hi else "↓"}</small></th>'
            for g, _, key, hi in board.columns
        )
        rows = []
        for rank, (d, cells) in enumerate(board.rows, 1):
            t = timings.get(d)
            tcls = "num best" if t is not None and t == best_time else "num"
            rows.append(
                f'<tr data-detector="{_e(d)}"><td class="num muted">{rank}</td>'
                f'<td class="det"><span class="dot" style="background:{self.colour[d]}"></span>{_e(d)}</td>'
                f'<td class="hp">{_hparams(self.hparams[d])}</td>{_metric_cells(cells)}'
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
        head_groups = "".join(
            f'<th colspan="{len(ds) + 1}" class="grp" style="border-top:3px solid {self.group_colour[g]}">'
            f"{_e(g)}-OOD</th>"
            for g, ds in self.groups.items()
        )
        head_ds = "".join(
            "".join(f"<th>{_e(ds)}</th>" for ds in dss) + '<th class="meancol">mean</th>'
            for dss in self.groups.values()
        )
        heat = tables.heat_table(self.r)
        rows = []
        for d, cells in heat.rows:
            tds = "".join(
                f'<td class="{"num meancol" if ds == "mean" else "num"}" '
                f'style="background:{_auroc_colour(c.value)}">{_pct(c.value)}</td>'
                for (_, ds, _, _), c in zip(heat.columns, cells, strict=True)
            )
            rows.append(f'<tr><td class="det">{_e(d)}</td>{tds}</tr>')
        matrix = f"""<div class="scroll"><table class="heat">
<thead><tr><th rowspan="2">Detector</th>{head_groups}</tr><tr>{head_ds}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>"""
        details = [
            self.dataset_table(g, ds, tables.dataset_table(self.r, g, ds))
            for g, dss in self.groups.items()
            for ds in dss
        ]
        return f"""<section>
<h2>AUROC per OOD dataset</h2>
<p class="muted">Cell colour runs from red (chance, 50) to green (100).</p>
{matrix}
<h3>All metrics per dataset</h3>
{"".join(details)}
</section>"""

    @staticmethod
    def dataset_table(group: str, dataset: str, table: MetricTable) -> str:
        rows = [f'<tr><td class="det">{_e(d)}</td>{_metric_cells(cells)}</tr>' for d, cells in table.rows]
        head = "".join(f"<th>{t}<small>{'↑' if hi else '↓'}</small></th>" for _, t, hi in COLUMNS)
        summary = f'<b>{_e(dataset)}</b> <span class="muted">({_e(group)}-OOD)</span>'
        return f"""<details><summary>{summary}</summary>
<table class="board"><thead><tr><th>Detector</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
</details>"""

    # ------------------------------------------------------------------- figures

    def bars(self) -> str:
        groups = list(self.groups)
        dets = [d for d in self.detectors if any((d, g) in self.auroc_means for g in groups)]
        if not dets or not groups:
            return ""
        src = figures.group_bars(self.r, dets, self.group_colour)
        return f"""<section>
<h2>Mean AUROC per group</h2>
<figure class="wide bars"><img alt="bar chart of mean AUROC per detector and group" src="{src}">
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
                    src = figures.roc_panel(self.r, g, ds, dets, self.colour)
                    panels.append(
                        f'<figure class="roc" data-dataset="{_e(ds)}" data-detectors="{_e(",".join(dets))}">'
                        f'<img alt="ROC curves on {_e(ds)}" src="{src}"></figure>'
                    )
        if not panels:
            return ""
        return f"""<section>
<h2>ROC curves of the {len(top)} best detectors</h2>
<p class="muted">Best by {_e(self.sort_group or "—")}-OOD mean AUROC among the detectors whose scores
the run kept. OOD is the positive class: the x-axis is the fraction of ID test samples flagged as OOD,
the y-axis the fraction of OOD samples caught. The legend gives each detector's AUROC on that set.</p>
<div class="grid">{"".join(panels)}</div></section>"""

    def histograms(self) -> str:
        panels = [self.histogram_panel(d) for d in self.detectors if self.scored(d) is not None]
        if not panels:
            return ""
        keys = [("ID test", figures.ID_COLOUR)] + [(f"{g}-OOD", c) for g, c in self.group_colour.items()]
        legend = "".join(f'<span class="key" style="background:{c}"></span>{_e(k)} ' for k, c in keys)
        return f"""<section>
<h2>Score distributions</h2>
<p class="muted">{legend}· density-normalised histograms, one panel per detector, bins shared within
a panel over the 0.5–99.5 % quantile range of its pooled scores; each OOD group pools its
datasets. Higher score = more OOD, so a good detector puts the coloured mass right of the blue.</p>
<div class="grid small">{"".join(panels)}</div></section>"""

    def histogram_panel(self, detector: str) -> str:
        near = self.auroc_means.get((detector, self.sort_group)) if self.sort_group else None
        suffix = f"  ({self.sort_group} AUROC {100 * near:.1f})" if near is not None else ""
        src = figures.score_histogram(self.r, detector, self.group_colour, detector + suffix)
        return (
            f'<figure class="hist" data-detector="{_e(detector)}">'
            f'<img alt="score histograms of {_e(detector)}" src="{src}"></figure>'
        )

    # ------------------------------------------------------------------- tables

    def search(self) -> str:
        ranked = set(self.detectors)
        order = [d for d in self.detectors if self.r.search.get(d)]
        order += [d for d, pts in self.r.search.items() if d not in ranked and pts]
        blocks = [self.search_table(d, self.r.search[d]) for d in order]
        if not blocks:
            return ""
        return f"""<section>
<h2>Hyperparameter search</h2>
<p class="muted">Every grid point tried, with its validation score; the chosen one is highlighted.</p>
{"".join(blocks)}</section>"""

    def search_table(self, detector: str, points: list[dict[str, Any]]) -> str:
        table = tables.search_table(points, self.hparams.get(detector, {}))
        body = []
        for hit, row in table.rows:
            cells = "".join(
                f"<td>{_search_cell(c, row[c]) if c in row else '—'}</td>" for c in table.columns
            )
            body.append(f'<tr class="{"chosen" if hit else ""}">{cells}</tr>')
        head = "".join(f"<th>{_e(c)}{' (%)' if c == 'val_auroc' else ''}</th>" for c in table.columns)
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


def _metric_cells(cells: tuple[tables.Cell, ...]) -> str:
    return "".join(f'<td class="{"num best" if c.best else "num"}">{_pct(c.value)}</td>' for c in cells)
