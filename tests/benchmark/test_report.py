"""Tests for the HTML report: ordering, highlighting, escaping, embedded figures, self-containedness."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from unseen.benchmark.report import write_report
from unseen.benchmark.result import METRICS, BenchmarkResult
from unseen.metrics import evaluate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROUPS = {"near": ["ssb_hard", "ninco"], "far": ["inat", "textures", "openimage_o"]}
#: detector -> mean shift of its OOD scores; insertion order deliberately not the ranking
SHIFTS = {"msp": 0.6, "energy": 0.9, "knn": 1.8, "mahalanobis": 0.3, "vim": 1.4, "odin": 1.1}
SCRIPT_HP = "<script>alert(1)</script>"


def make_result(
    groups: dict[str, list[str]] = GROUPS,
    shifts: dict[str, float] = SHIFTS,
    unscored: tuple[str, ...] = ("react",),
    n: int = 150,
) -> BenchmarkResult:
    """Gaussian scores, ID ~ N(0, 1) and OOD ~ N(shift * (1 + 0.3 j), 1); records from unseen.metrics.

    Detectors in ``unscored`` get records (copied from the first detector, lowered by 0.01) but no
    scores, as when a run drops its arrays.
    """
    rng = np.random.default_rng(0)
    records: list[dict[str, Any]] = []
    scores: dict[str, dict[str, np.ndarray]] = {}
    for det, shift in shifts.items():
        hp = {"k": 50, "note": SCRIPT_HP} if det == "knn" else {"temperature": 1.0}
        scores[det] = {"id": rng.normal(size=n)}
        for group, datasets in groups.items():
            per_ds = []
            for j, ds in enumerate(datasets):
                scores[det][ds] = rng.normal(shift * (1 + 0.3 * j) * (2 if group == "far" else 1), size=n)
                m = evaluate(scores[det]["id"], scores[det][ds])
                per_ds.append({k: m[k] for k in METRICS})
                records.append({"detector": det, "hparams": hp, "group": group, "dataset": ds, **per_ds[-1]})
            means = {k: float(np.mean([r[k] for r in per_ds])) for k in METRICS}
            records.append({"detector": det, "hparams": hp, "group": group, "dataset": "mean", **means})
    first = next(iter(shifts))
    for det in unscored:
        for rec in [r for r in records if r["detector"] == first]:
            records.append({**rec, "detector": det, "hparams": {}, "auroc": rec["auroc"] - 0.01})
    # the protocol's log format: the chosen point is marked, a failed point carries its error
    search = {
        "knn": [
            {"hparams": {"k": 1, "note": SCRIPT_HP}, "val_auroc": 0.8, "selected": False},
            {"hparams": {"k": 50, "note": SCRIPT_HP}, "val_auroc": 0.82, "selected": True},
            {"hparams": {"k": 500, "note": SCRIPT_HP}, "error": "ValueError: k > n", "selected": False},
        ]
    }
    return BenchmarkResult(
        preset="digits",
        id_accuracy=0.9876,
        records=records,
        groups=groups,
        scores=scores,
        search=search,
        timings={**{d: 0.5 + i for i, d in enumerate(shifts)}, "extract": 3.0},
        meta={"model": "DigitsCNN", "date": "2026-11-27T15:00:00Z", "wall_time_s": 12.5},
    )


class Page(HTMLParser):
    """Collects the leaderboard's rows (cell text and class), figures and img sources."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self.row_detectors: list[str] = []
        self.figures: list[dict[str, str]] = []
        self.images: list[str] = []
        self.in_board = False
        self.cell: list[str] | None = None
        self.cell_class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and a.get("id") == "leaderboard":
            self.in_board = True
        elif self.in_board and tag == "tr" and "data-detector" in a:
            self.rows.append([])
            self.row_detectors.append(a["data-detector"])
        elif self.in_board and tag == "td" and self.row_detectors:
            self.cell, self.cell_class = [], a.get("class", "")
        elif tag == "figure":
            self.figures.append(a)
        elif tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_board = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(("".join(self.cell).strip(), self.cell_class))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchmarkResult, Path, str]:
    result = make_result()
    path = write_report(result, tmp_path_factory.mktemp("report") / "out")
    return result, path, path.read_text(encoding="utf-8")


def near_means(result: BenchmarkResult, group: str = "near", metric: str = "auroc") -> dict[str, float]:
    """Unweighted mean over the group's per-dataset records, recomputed independently of 'mean' rows."""
    out: dict[str, list[float]] = {}
    for r in result.records:
        if r["group"] == group and r["dataset"] != "mean":
            out.setdefault(r["detector"], []).append(r[metric])
    return {d: sum(v) / len(v) for d, v in out.items()}


# column layout of a leaderboard row: rank, detector, hparams, then 5 metrics per group, then time
def col(group_index: int, metric: str) -> int:
    order = ["auroc", "fpr95_id", "fpr95_ood", "aupr_in", "aupr_out"]
    return 3 + 5 * group_index + order.index(metric)


def test_writes_report_html_atomically_into_new_dir(report):
    _, path, _ = report
    assert path.name == "report.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no temp file left


def test_leaderboard_sorted_by_near_auroc_from_records(report):
    result, _, text = report
    means = near_means(result)
    expected = sorted(means, key=lambda d: -means[d])
    # the fixture's insertion order is not the ranking, so an unsorted table would fail
    assert list(dict.fromkeys(r["detector"] for r in result.records)) != expected
    page = parse(text)
    assert page.row_detectors == expected
    for det, row in zip(page.row_detectors, page.rows, strict=True):
        assert row[col(0, "auroc")][0] == f"{100 * means[det]:.2f}"


def test_best_value_of_each_column_is_highlighted(report):
    result, _, text = report
    page = parse(text)
    for gi, group in enumerate(result.groups):
        for metric, higher in [("auroc", True), ("fpr95_id", False), ("aupr_out", True),
                               ("fpr95_ood", False), ("aupr_in", True)]:
            means = near_means(result, group, metric)
            best = (max if higher else min)(means.values())
            winners = {d for d, v in means.items() if abs(v - best) < 1e-12}
            marked = {d for d, row in zip(page.row_detectors, page.rows, strict=True)
                      if "best" in row[col(gi, metric)][1].split()}
            assert marked == winners, (group, metric)
    # fastest detector: smallest timing
    times = {d: t for d, t in result.timings.items() if d in page.row_detectors}
    fastest = min(times, key=times.get)
    marked_time = [d for d, row in zip(page.row_detectors, page.rows, strict=True) if "best" in row[-1][1]]
    assert marked_time == [fastest]


def test_header_facts(report):
    _, _, text = report
    assert "DigitsCNN" in text and "98.76 %" in text and "2026-11-27T15:00:00Z" in text
    assert "12.50 s" in text  # wall time
    assert "extract <b>3.00 s</b>" in text  # a non-detector timing is shown as a stage


def test_text_is_escaped(report):
    _, _, text = report
    assert "<script" not in text.lower()
    assert html_escaped(SCRIPT_HP) in text


def html_escaped(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_embedded_images_are_valid_pngs(report):
    _, _, text = report
    page = parse(text)
    assert page.images
    for src in page.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        raw = base64.b64decode(src[len(prefix):], validate=True)
        assert raw[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
        assert 200 <= w <= 1500 and 150 <= h <= 1500, (w, h)


def test_one_roc_panel_per_ood_dataset_with_top5_scored_detectors(report):
    result, _, text = report
    page = parse(text)
    rocs = [f for f in page.figures if f.get("class") == "roc"]
    assert [f["data-dataset"] for f in rocs] == [ds for dss in GROUPS.values() for ds in dss]
    means = near_means(result)
    scored = sorted((d for d in means if d in result.scores), key=lambda d: -means[d])
    assert "react" not in result.scores and len(scored) == 6
    for f in rocs:
        assert f["data-detectors"].split(",") == scored[:5]


def test_one_histogram_per_scored_detector(report):
    result, _, text = report
    page = parse(text)
    hists = [f["data-detector"] for f in page.figures if f.get("class") == "hist"]
    means = near_means(result)
    assert hists == sorted(result.scores, key=lambda d: -means[d])
    # every figure has exactly one image: bars + ROC panels + histograms
    assert len(page.images) == 1 + 5 + 6


def test_no_external_references(report):
    _, _, text = report
    lowered = text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", lowered)
    assert "<link" not in lowered and "@import" not in lowered and "url(" not in lowered
    assert "<script" not in lowered


def search_rows(text: str) -> list[tuple[bool, list[str]]]:
    rows = re.findall(r'<tr class="(chosen|)"><td>(.*?)</tr>', text, flags=re.S)
    return [(cls == "chosen", re.findall(r"<td>(.*?)</td>", "<td>" + body)) for cls, body in rows]


def test_search_table_marks_the_chosen_grid_point(report):
    _, _, text = report
    rows = search_rows(text)
    assert [chosen for chosen, _ in rows] == [False, True, False]
    # columns: k, note, val_auroc (as %), error; missing cells are dashes
    assert rows[1][1] == ["50", html_escaped(SCRIPT_HP), "82.00", "—"]
    assert rows[2][1][2:] == ["—", "ValueError: k &gt; n"]


def test_search_without_selected_marks_matches_chosen_hparams(tmp_path):
    result = make_result(shifts={"a": 1.0}, unscored=(), n=40)
    result.scores = {}
    result.search = {"a": [{"hparams": {"temperature": t}, "val_auroc": 0.7} for t in (0.5, 1.0, 2.0)]}
    rows = search_rows(write_report(result, tmp_path).read_text(encoding="utf-8"))
    assert [chosen for chosen, _ in rows] == [False, True, False]  # the records say temperature=1.0


def test_ties_keep_run_order_and_no_scores_means_no_plots(tmp_path):
    base = make_result(shifts={"z": 1.0, "a": 1.0}, unscored=(), n=40)
    copied = [{**r, "detector": "m"} for r in base.records if r["detector"] == "z"]
    result = BenchmarkResult(preset="p", id_accuracy=None, records=base.records + copied, groups=GROUPS)
    page = parse(write_report(result, tmp_path).read_text(encoding="utf-8"))
    means = near_means(result)
    assert means["z"] == means["m"]
    assert means["z"] != means["a"]
    # "m" ties "z" and was run after it, so it comes right after "z"
    expected = ["z", "m", "a"] if means["z"] > means["a"] else ["a", "z", "m"]
    assert page.row_detectors == expected
    assert len(page.images) == 1  # only the bar chart: nothing to draw ROC curves or histograms from


def test_protocol_meta_failures_and_time_fallbacks(tmp_path):
    """The protocol's meta has extract_seconds and failures but no date or wall time."""
    result = make_result(shifts={"a": 1.0, "b": 0.5}, unscored=(), n=40)
    result.scores = {}
    result.timings = {"a": 1.25, "b": 2.5}
    result.meta = {"model": "m", "extract_seconds": 4.0, "failures": {"bad<1>": "ValueError: x < y"}}
    text = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "Time (extract + detectors)</span><b>7.75 s</b>" in text  # 4.0 + 1.25 + 2.5
    assert "extract <b>4.00 s</b>" in text
    assert "Report date" in text
    assert "<b>bad&lt;1&gt;</b>: <code>ValueError: x &lt; y</code>" in text


def test_single_group_and_missing_extras(tmp_path):
    """One group, no search, no timings, no meta: the page still renders, sorted by that group."""
    groups = {"far": ["inat", "textures"]}
    full = make_result(groups=groups, shifts={"a": 0.2, "b": 1.0, "c": 0.5}, unscored=(), n=60)
    result = BenchmarkResult(preset="p", id_accuracy=None, records=full.records, groups=groups,
                             scores={k: v for k, v in full.scores.items() if k != "b"})
    text = write_report(result, tmp_path).read_text(encoding="utf-8")
    page = parse(text)
    means = near_means(result, "far")
    assert page.row_detectors == sorted(means, key=lambda d: -means[d]) == ["b", "c", "a"]
    assert [f["data-dataset"] for f in page.figures if f.get("class") == "roc"] == ["inat", "textures"]
    assert [f["data-detector"] for f in page.figures if f.get("class") == "hist"] == ["c", "a"]
    assert "near" not in text.split("<style>")[0]  # no near group anywhere in the head
    assert "Hyperparameter search" not in text


def test_dataset_without_scores_gets_no_roc_panel(tmp_path):
    result = make_result(shifts={"a": 1.0, "b": 0.5}, unscored=(), n=60)
    for s in result.scores.values():
        del s["inat"]
    text = write_report(result, tmp_path).read_text(encoding="utf-8")
    rocs = [f["data-dataset"] for f in parse(text).figures if f.get("class") == "roc"]
    assert rocs == ["ssb_hard", "ninco", "textures", "openimage_o"]


def test_empty_records_raise(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        write_report(BenchmarkResult(preset="p", id_accuracy=None, records=[], groups={}), tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_non_finite_scores_raise(tmp_path):
    result = make_result(shifts={"a": 1.0}, unscored=(), n=40)
    result.scores["a"]["ninco"][3] = np.nan
    with pytest.raises(ValueError, match="non-finite|NaN"):
        write_report(result, tmp_path)
    assert list(tmp_path.iterdir()) == []
