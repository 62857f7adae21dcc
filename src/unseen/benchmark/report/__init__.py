"""The self-contained HTML report of a run, and the tables it shares with the CLI.

``tables``: the tables as pure data (leaderboard, per-dataset metrics, search logs) and the one
definition of the detectors' order; the CLI leaderboard prints :func:`tables.leaderboard`.
``figures``: the matplotlib drawings (bars, ROC panels, score histograms) as PNG data URIs.
``page``: the HTML around them (:func:`write_report`); ``report.css`` is its stylesheet.
A new sub-task adds its own ``<task>.py`` here. matplotlib loads only when a page is written.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from unseen.benchmark.report.page import write_report

        return write_report
    raise AttributeError(f"module 'unseen.benchmark.report' has no attribute {name!r}")
