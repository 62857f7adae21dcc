"""The self-contained HTML report of a run.

``page``: the OOD-detection report (leaderboard, heat table, figures, search tables).
"""

from unseen.benchmark.report.page import write_report

__all__ = ["write_report"]
