"""Classifier architectures for OOD detection, a registry, and safe checkpoint loading.

Every model exposes ``forward_features(x)`` (the penultimate features, i.e. the input of the
head module named by ``info(name).head``) and ``forward(x)`` (logits).
"""

from __future__ import annotations

from unseen.models.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    LoadReport,
    load_checkpoint,
    read_state_dict,
)
from unseen.models.registry import (
    ModelInfo,
    Preset,
    create,
    describe,
    info,
    names,
    preset,
    presets,
    pretrained,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadReport",
    "ModelInfo",
    "Preset",
    "create",
    "describe",
    "info",
    "load_checkpoint",
    "names",
    "preset",
    "presets",
    "pretrained",
    "read_state_dict",
]
