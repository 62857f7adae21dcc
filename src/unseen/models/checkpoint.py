"""Load PyTorch checkpoints into the models of this package, with clear errors.

Checkpoints are read with ``torch.load(..., weights_only=True)``: no arbitrary pickles.
Accepted layouts: a raw state dict, or a dict holding it under ``state_dict``, ``model`` or
``net`` (akamaster's ``{"state_dict": ..., "best_prec1": ...}``, for example). A ``module.``
prefix on every key (saved from ``nn.DataParallel``) is stripped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

WRAPPER_KEYS = ("state_dict", "model", "net")
_PREFIX = "module."
_BN_COUNTER = "num_batches_tracked"
_MAX_LISTED = 10


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not hold a state dict."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model's."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        source: str,
    ) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        parts = [f"checkpoint {source} does not match the model:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shape_mismatches:
            shapes = [f"{k} (checkpoint {c}, model {m})" for k, c, m in shape_mismatches]
            parts.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
        super().__init__("\n  ".join(parts))


@dataclass(frozen=True)
class LoadReport:
    """Keys left out when loading with ``strict=False`` (``num_batches_tracked`` excluded)."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def read_state_dict(source: str | Path | Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Return the tensors of a checkpoint file or in-memory dict, unwrapped and unprefixed."""
    name = "<in-memory state dict>"
    obj: object = source
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for corrupt or unsafe files
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        found = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{name} holds no state dict (found {found})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{name}: entries are not tensors: {_listing(bad)}")
    state = dict(obj)
    if all(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items()}
    return state


def load_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping[str, object],
    *,
    strict: bool = True,
) -> LoadReport:
    """Copy the weights of ``source`` (a file or a state dict) into ``model``.

    Differences in BatchNorm ``num_batches_tracked`` buffers alone are ignored: they do not
    affect inference, and many checkpoints (akamaster's, pre-0.4 PyTorch) lack them. With
    ``strict=True`` any other missing or unexpected key raises :class:`CheckpointMismatchError`
    listing them (``num_batches_tracked`` included, so the full picture is visible). With
    ``strict=False`` the matching keys are loaded and the others reported. Shape mismatches
    always raise.
    """
    name = str(source) if isinstance(source, (str, Path)) else "<in-memory state dict>"
    state = read_state_dict(source)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    relevant_missing = [k for k in missing if not k.endswith(_BN_COUNTER)]
    relevant_unexpected = [k for k in unexpected if not k.endswith(_BN_COUNTER)]
    if shapes or (strict and (relevant_missing or relevant_unexpected)):
        raise CheckpointMismatchError(missing, unexpected, shapes, name)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return LoadReport(tuple(relevant_missing), tuple(relevant_unexpected))


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    rest = len(items) - _MAX_LISTED
    return f"{shown}, ... and {rest} more" if rest > 0 else shown
