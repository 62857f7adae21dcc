"""Self-contained HTML reports of the open-set and one-class protocols (same style as ``page``).

Open-set: leaderboard (mean ± sample std over trials, and over the distinct known sets when a
set repeats), per-trial tables, the trials' known classes and heads, and OSCR curves (CCR
against FPR) of the best detectors in every trial. One-class: leaderboard (mean ± std over the
classes) and a per-class AUROC table and chart. Figures are PNGs inlined as data URIs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from unseen._io import write_text
from unseen.benchmark.report.figures import PALETTE
from unseen.benchmark.report.figures import png as _png
from unseen.benchmark.report.page import _auroc_colour, _e, _seconds, stylesheet

if TYPE_CHECKING:
    from unseen.benchmark.protocols.oneclass import OneClassResult
    from unseen.benchmark.protocols.osr import OpenSetResult

#: detectors drawn in each OSCR panel / per-class chart
TOP = 5
OSR_COLUMNS = (("auroc", "AUROC"), ("oscr", "OSCR"), ("ccr_fpr1", "CCR@1%"),
               ("ccr_fpr5", "CCR@5%"), ("ccr_fpr10", "CCR@10%"), ("fpr95_id", "FPR95 ↓"))


def oscr_curve(known: np.ndarray, correct: np.ndarray, unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The OSCR curve's vertices (FPR, CCR), from (0, 0) to (1, accuracy).

    A sample is accepted when its score is at most the threshold; one vertex per distinct score,
    so a group of tied samples is a straight segment and the trapezoidal area equals
    :func:`unseen.metrics.oscr`.
    """
    values = np.unique(np.concatenate([known, unknown]))
    good = np.sort(known[correct])
    ccr = np.searchsorted(good, values, side="right") / known.size
    fpr = np.searchsorted(np.sort(unknown), values, side="right") / unknown.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], ccr])


def _pm(value: tuple[float, float]) -> str:
    return f"{100 * value[0]:.2f} <span class='muted'>± {100 * value[1]:.2f}</span>"


def _page(title: str, body: Sequence[str]) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n<title>{_e(title)}"
            f"</title>\n<style>{stylesheet()}</style>\n</head>\n<body>\n<main>\n" + "\n".join(body)
            + "\n</main>\n</body>\n</html>\n")


def _header(title: str, meta: dict[str, Any], facts: Sequence[tuple[str, str]],
            anchors: Sequence[str], failures: dict[str, str]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cells = "".join(f"<div class='fact'><span>{_e(k)}</span><b>{v}</b></div>" for k, v in facts)
    out = [f"<header><h1>{_e(title)}</h1><div class='facts'>{cells}</div>",
           f"<p class='small muted'>written {stamp}; wall time {_seconds(meta.get('wall_time_s'))}"
           f" (features {_seconds(meta.get('extract_seconds'))}); values in %</p>"]
    if anchors:
        out.append("<div class='warn'>Published anchors (other backbones, not comparable one to "
                   "one):<ul>" + "".join(f"<li>{_e(a)}</li>" for a in anchors) + "</ul></div>")
    if failures:
        out.append("<div class='warn'>Failed:<ul>" + "".join(
            f"<li><b>{_e(d)}</b>: {_e(e)}</li>" for d, e in failures.items()) + "</ul></div>")
    return "".join(out) + "</header>"


def _details(meta: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td class='hp'>{_e(v if isinstance(v, str) else json.dumps(v))}"
                   "</td></tr>" for k, v in meta.items())
    return f"<section><h2>Run details</h2><table class='kv'>{rows}</table></section>"


def _board(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], caption: str) -> str:
    head = "".join(f"<th>{_e(t)}</th>" for _, t in columns)
    body = []
    for r in rows:
        cells = "".join(
            f"<td class='num' style='background:{_auroc_colour(r[k][0]) if k == 'auroc' else 'none'}'>"
            f"{_pm(r[k])}</td>" for k, _ in columns)
        body.append(f"<tr><td class='det'>{_e(r['detector'])}</td>{cells}"
                    f"<td class='num'>{_seconds(r['seconds'])}</td></tr>")
    return (f"<h3>{_e(caption)}</h3><div class='scroll'><table class='board'><thead><tr><th>detector"
            f"</th>{head}<th>time</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _heat_cell(value: float | None) -> str:
    text = "—" if value is None else f"{100 * value:.2f}"
    return f"<td class='num' style='background:{_auroc_colour(value)}'>{text}</td>"


# --------------------------------------------------------------------------- open set


def _trial_table(result: OpenSetResult, metric: str, label: str, dets: Sequence[str]) -> str:
    by = {(r["detector"], r["trial"]): r[metric] for r in result.records}
    head = "".join(f"<th>trial {t['trial']}</th>" for t in result.trials)
    rows = []
    for d in dets:
        cells = "".join(_heat_cell(by.get((d, t["trial"]))) for t in result.trials)
        rows.append(f"<tr><td class='det'>{_e(d)}</td>{cells}</tr>")
    return (f"<h3>{_e(label)} per trial</h3><div class='scroll'><table class='heat'><thead><tr>"
            f"<th>detector</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _head_text(head: dict[str, Any]) -> str:
    """A trial head in a few words: a linear probe's C, or a trained network and its time."""
    if "C" in head:
        return f"C = {head['C']:g}"
    return f"{head.get('model', 'head')}, trained {head.get('train_seconds', float('nan')):.1f} s"


def _trials_facts(result: OpenSetResult) -> str:
    rows = []
    for t in result.trials:
        names = ", ".join(result.class_names[k] for k in t["known"])
        h = t["head"]
        rows.append(f"<tr><td class='num'>{t['trial']}</td><td class='hp'>{_e(names)}</td>"
                    f"<td class='num'>{100 * t['accuracy']:.2f}</td><td class='hp'>{_e(_head_text(h))}</td>"
                    f"<td class='num'>{100 * h['val_accuracy']:.2f}</td>"
                    f"<td>{_e(json.dumps(t['sizes']))}</td></tr>")
    return ("<h3>Trials</h3><div class='scroll'><table><thead><tr><th>trial</th><th>known classes"
            "</th><th>closed-set acc</th><th>head</th><th>val acc</th><th>sizes</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _oscr_panel(result: OpenSetResult, trial: int, dets: Sequence[str]) -> str:
    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.add_subplot()
    for i, d in enumerate(dets):
        s = result.scores.get(d, {})
        if f"{trial}/known" not in s:
            continue
        fpr, ccr = oscr_curve(s[f"{trial}/known"], result.correct[trial], s[f"{trial}/unknown"])
        ax.plot(fpr, ccr, color=PALETTE[i % len(PALETTE)], lw=1.4, label=d)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("FPR (unknown accepted)")
    ax.set_ylabel("CCR")
    ax.set_title(f"trial {trial}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return f"<figure><img src='{_png(fig)}' alt='OSCR curves, trial {trial}'></figure>"


def render_openset(result: OpenSetResult) -> str:
    from unseen.benchmark.protocols.osr import mean_std

    rows = result.summary_rows()
    dets = [r["detector"] for r in rows]
    acc = mean_std([t["accuracy"] for t in result.trials]) if result.trials else (0.0, 0.0)
    facts = [("trials", str(len(result.trials))), ("closed-set accuracy", _pm(acc)),
             ("detectors", str(len(dets))), ("best AUROC", f"{dets[0]}" if dets else "—")]
    board = [_board(rows, OSR_COLUMNS, "All trials: mean ± sample std (ddof 1)")]
    if len(result.distinct) < len(result.splits):
        board.append(_board(result.summary_rows(result.distinct), OSR_COLUMNS,
                            f"Distinct known sets only (trials {result.distinct}): a known set "
                            "that repeats is counted once"))
    panels = "".join(_oscr_panel(result, t["trial"], dets[:TOP]) for t in result.trials)
    body = [
        _header(f"unseen open-set: {result.preset}", result.meta, facts, result.anchors, result.failures),
        "<section><h2>Leaderboard</h2><p class='protocol'>Known-class test images against "
        "unknown-class test images; a linear head trained on the known classes of each trial; "
        "detectors at default hyperparameters (no unknown data informs a trial). OSCR = area "
        "under CCR vs FPR; CCR@x = correctly classified and accepted known images at FPR x.</p>"
        + "".join(board) + "</section>",
        "<section><h2>Per trial</h2>" + _trials_facts(result)
        + _trial_table(result, "auroc", "AUROC", dets) + _trial_table(result, "oscr", "OSCR", dets)
        + "</section>",
        f"<section><h2>OSCR curves</h2><p class='small muted'>best {TOP} detectors by mean AUROC; "
        f"FPR axis linear below 1 %, logarithmic above</p><div class='grid small'>{panels}</div></section>",
        _details(result.meta),
    ]
    return _page(f"unseen open-set: {result.preset}", body)


def write_openset_report(result: OpenSetResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` of an open-set run into ``out_dir``; returns its path."""
    if not result.records:
        raise ValueError("the open-set result has no records; run the benchmark first")
    path = Path(out_dir) / "report.html"
    write_text(path, render_openset(result))
    return path


# --------------------------------------------------------------------------- one class


def _class_table(result: OneClassResult, dets: Sequence[str]) -> str:
    by = {(r["detector"], r["class"]): r["auroc"] for r in result.records}
    head = "".join(f"<th>{_e(n)}</th>" for n in result.class_names)
    rows = []
    for d in dets:
        cells = "".join(_heat_cell(by.get((d, c))) for c in range(len(result.class_names)))
        rows.append(f"<tr><td class='det'>{_e(d)}</td>{cells}</tr>")
    return (f"<div class='scroll'><table class='heat'><thead><tr><th>detector</th>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>")


def _class_bars(result: OneClassResult, dets: Sequence[str]) -> str:
    by = {(r["detector"], r["class"]): r["auroc"] for r in result.records}
    n = len(result.class_names)
    fig = Figure(figsize=(max(6.0, 0.75 * n + 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(dets))
    for i, d in enumerate(dets):
        vals = [100 * by.get((d, c), np.nan) for c in range(n)]
        ax.bar(np.arange(n) + (i - (len(dets) - 1) / 2) * width, vals, width,
               color=PALETTE[i % len(PALETTE)], label=d)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels(result.class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(40, 100)
    ax.set_ylabel("AUROC (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(5, len(dets)))
    fig.tight_layout()
    return f"<figure class='wide'><img src='{_png(fig)}' alt='per-class AUROC'></figure>"


def render_oneclass(result: OneClassResult) -> str:
    rows = result.summary_rows()
    dets = [r["detector"] for r in rows]
    facts = [("tasks", str(len(result.class_names))), ("detectors", str(len(dets))),
             ("best mean AUROC", _pm(rows[0]["auroc"]) if rows else "—")]
    cols = (("auroc", "AUROC"), ("aupr_in", "AUPR-In"), ("aupr_out", "AUPR-Out"),
            ("fpr95_id", "FPR95 ↓"))
    body = [
        _header(f"unseen one-class: {result.preset}", result.meta, facts, result.anchors,
                result.failures),
        "<section><h2>Leaderboard</h2><p class='protocol'>One task per class: fit on that class's "
        "training features, score the whole test set (that class normal, the rest novel). Mean "
        "± sample std over the tasks.</p>" + _board(rows, cols, "Mean over classes") + "</section>",
        "<section><h2>AUROC per class</h2>" + _class_table(result, dets)
        + _class_bars(result, dets[:TOP]) + "</section>",
        _details(result.meta),
    ]
    return _page(f"unseen one-class: {result.preset}", body)


def write_oneclass_report(result: OneClassResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` of a one-class run into ``out_dir``; returns its path."""
    if not result.records:
        raise ValueError("the one-class result has no records; run the benchmark first")
    path = Path(out_dir) / "report.html"
    write_text(path, render_oneclass(result))
    return path
