"""Benchmarks: descriptions and presets, the OpenOOD v1.5 protocol, results and their files."""

from __future__ import annotations

from unseen.benchmark.outputs import leaderboard, load_scores, write_outputs
from unseen.benchmark.presets import (
    UnknownPresetError,
    describe_preset,
    get_preset,
    preset_names,
    register_preset,
)
from unseen.benchmark.protocols.ood import DetectorFailedError, run
from unseen.benchmark.result import BenchmarkResult
from unseen.benchmark.spec import AsOOD, BenchmarkSpec, PreparedModel, SpecError

__all__ = [
    "AsOOD",
    "BenchmarkResult",
    "BenchmarkSpec",
    "DetectorFailedError",
    "PreparedModel",
    "SpecError",
    "UnknownPresetError",
    "describe_preset",
    "get_preset",
    "leaderboard",
    "load_scores",
    "preset_names",
    "register_preset",
    "run",
    "write_outputs",
]
