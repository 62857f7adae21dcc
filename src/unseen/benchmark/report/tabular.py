"""Files of a tabular run: ``results.json``, ``results.csv`` (one row per set × detector),
``novelty.csv`` and a self-contained ``report.html`` (inline CSS; the average-rank plot is a
matplotlib PNG embedded as a base64 data URI, drawn on an Agg canvas, leaving pyplot alone)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unseen._io import atomic_path, write_text

if TYPE_CHECKING:
    from unseen.benchmark.protocols.tabular import TabularResult

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;
padding:3px 7px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0}td.best{font-weight:bold;background:#e3f1e3}p.note{color:#555;
font-size:13px;max-width:1000px}"""


def write_files(result: TabularResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the run's files into ``out_dir`` (created if needed), each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "results.json": out / "results.json",
        "results.csv": out / "results.csv",
        "novelty.csv": out / "novelty.csv",
        "report.html": out / "report.html",
    }
    payload = {"name": result.name, "detectors": result.detectors, "datasets": result.datasets,
               "leaderboard": result.leaderboard(), "records": result.records,
               "novelty": result.novelty, "failures": result.failures, "meta": result.meta}
    write_text(files["results.json"], json.dumps(_finite(payload), indent=1))
    _write_csv(files["results.csv"], result.records)
    _write_csv(files["novelty.csv"], result.novelty)
    write_text(files["report.html"], render(result))
    return files


def _finite(obj: Any) -> Any:
    """NaN → None, so the JSON is standard."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def rank_plot(result: TabularResult) -> str:
    """Horizontal bars of the average rank per detector (best on top), as a data URI."""
    board = [r for r in result.leaderboard() if not math.isnan(r["avg_rank"])]
    fig = Figure(figsize=(6.5, 0.35 * len(board) + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [r["detector"] for r in board][::-1]
    ranks = [r["avg_rank"] for r in board][::-1]
    ax.barh(names, ranks, color="#2c6fbb")
    for y, v in enumerate(ranks):
        ax.text(v + 0.05, y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"average AUROC rank over {len(result.datasets)} sets (1 = best)")
    ax.set_xlim(0, max(ranks, default=1) + 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _leaderboard_html(result: TabularResult) -> str:
    head = ("detector", "mean AUROC", "mean AUPR", "avg rank", "sets", "conformal FA",
            "conformal recall", "BH FDR", "BH recall", "contam. FA", "contam. recall")
    rows = []
    for r in result.leaderboard():
        cells = [html.escape(r["detector"]), _pct(r["mean_auroc"]), _pct(r["mean_aupr"]),
                 f"{r['avg_rank']:.2f}", str(r["datasets"])]
        cells += [_pct(r.get(f"novelty_{k}")) for k in (
            "conformal_fa_rate", "conformal_recall", "bh_fdr", "bh_recall",
            "contamination_fa_rate", "contamination_recall")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return _table(head, rows)


def _table(head: tuple[str, ...] | list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{th}</tr>{''.join(rows)}</table>"


def _matrix_html(result: TabularResult, metric: str) -> str:
    values = result.matrix(metric)
    rows = []
    for i, ds in enumerate(result.datasets):
        info = result.meta.get("datasets", {}).get(ds, {})
        best = np.nanmax(values[i]) if (~np.isnan(values[i])).any() else math.nan
        cells = [f"<td>{html.escape(ds)}</td><td>{info.get('n', '')}</td><td>{info.get('d', '')}</td>"
                 f"<td>{info.get('anomalies', '')}</td>"]
        for v in values[i]:
            mark = ' class="best"' if not math.isnan(v) and v == best else ""
            cells.append(f"<td{mark}>{_pct(float(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _table(["set", "n", "d", "anomalies", *result.detectors], rows)


def render(result: TabularResult) -> str:
    meta = result.meta
    failures = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in result.failures.items())
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>unseen: {html.escape(result.name)}</title><style>{CSS}</style></head><body>
<h1>unseen benchmark: {html.escape(result.name)}</h1>
<p class="note">{html.escape(str(meta.get("description", "")))}</p>
<p class="note">{len(result.datasets)} sets, {len(result.detectors)} detectors, seed
{meta.get("seed")}; wall time {meta.get("wall_time_s", 0.0):.1f} s.</p>
<h2>Summary (ADBench's: mean AUROC and average rank)</h2>
<p class="note">Unsupervised setting: each detector is fitted on all rows of a set (anomalies
included, unlabelled; features min–max scaled) and scores the same rows. AUROC and AUPR (average
precision, anomalies positive) in %. Detectors with a seed: mean over seeds {meta.get("seeds")}.
Novelty columns: the mean over sets of one seeded split (fit on 50 % of the normal rows,
calibrate on 25 %, test on the rest plus all anomalies): realised false-alarm rate on test
normals of the conformal threshold at α = {meta.get("alpha")}, FDR and recall of
Benjamini–Hochberg at {meta.get("fdr")}, and PyOD's contamination threshold (the
{100 * (1 - meta.get("contamination", 0.1)):.0f}th percentile of training scores).</p>
{_leaderboard_html(result)}
<img alt="average rank per detector" src="{rank_plot(result)}">
<h2>AUROC per set</h2>{_matrix_html(result, "auroc")}
<h2>AUPR per set</h2>{_matrix_html(result, "aupr")}
{"<h2>Failures</h2><ul>" + failures + "</ul>" if failures else ""}
</body></html>
"""
