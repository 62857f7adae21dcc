"""report.tables: the tables as data, and the one detector order shared by the report and the CLI."""

from __future__ import annotations

import numpy as np
from test_report import GROUPS, make_result

from unseen.benchmark import leaderboard
from unseen.benchmark.report import tables


def test_detector_order_is_near_mean_auroc_recomputed_from_the_per_dataset_records() -> None:
    result = make_result()
    near = {
        d: np.mean([r["auroc"] for r in result.records
                    if r["detector"] == d and r["group"] == "near" and r["dataset"] != "mean"])
        for d in {r["detector"] for r in result.records}
    }
    assert tables.detector_order(result) == sorted(near, key=lambda d: -near[d])
    # the CLI leaderboard (timed detectors only: "react" has records but no timing) follows it
    assert [row["detector"] for row in leaderboard(result)] == [
        d for d in tables.detector_order(result) if d in result.timings
    ]


def test_group_means_table_marks_each_columns_best() -> None:
    result = make_result()
    board = tables.group_means_table(result)
    assert [c[:2] for c in board.columns[:2]] == [("near", "mean"), ("near", "mean")]
    assert len(board.columns) == len(GROUPS) * len(tables.COLUMNS)
    for j, (_, _, metric, higher) in enumerate(board.columns):
        values = [cells[j].value for _, cells in board.rows]
        best = max(values) if higher else min(values)
        marked = [cells[j].value for _, cells in board.rows if cells[j].best]
        assert marked and all(v == best for v in marked), metric


def test_search_table_flattens_hparams_and_finds_the_chosen_row() -> None:
    points = [{"hparams": {"k": 1}, "val_auroc": 0.7}, {"hparams": {"k": 5}, "val_auroc": 0.9},
              {"hparams": {"k": 9}, "error": "ValueError: k > n"}]
    table = tables.search_table(points, {"k": 5})
    assert table.columns == ("k", "val_auroc", "error")
    assert [hit for hit, _ in table.rows] == [False, True, False]
    assert table.rows[2][1] == {"k": 9, "error": "ValueError: k > n"}
