"""Benchmarks: descriptions and presets, the protocols of every sub-task, results and their files.

Names load on first use: a tabular preset imports neither torch nor the OOD protocol.
"""

from __future__ import annotations

from typing import Any

from unseen import _lazy

_LAZY: _lazy.Table = {
    **_lazy.table("unseen.benchmark.outputs", "leaderboard", "load_scores", "write_outputs"),
    **_lazy.table(
        "unseen.benchmark.presets",
        "UnknownPresetError", "describe_preset", "get_preset", "preset_names", "register_preset",
    ),
    **_lazy.table("unseen.benchmark.protocols.ood", "DetectorFailedError", "run"),
    **_lazy.table("unseen.benchmark.result", "BenchmarkResult"),
    **_lazy.table("unseen.benchmark.spec", "AsOOD", "BenchmarkSpec", "PreparedModel", "SpecError"),
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    return _lazy.load("unseen.benchmark", _LAZY, name)


def __dir__() -> list[str]:
    return sorted(_LAZY)
