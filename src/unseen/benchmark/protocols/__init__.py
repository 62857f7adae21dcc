"""Protocols: how a benchmark turns representations into records, one module per sub-task.

``ood``: OpenOOD v1.5 (ID fit/val/test, OOD-val for the search, near/far OOD test groups).
"""
