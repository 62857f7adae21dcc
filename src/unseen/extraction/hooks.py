"""The hook plumbing every pass over a model shares: eval mode, forward hooks on named modules,
capture of the penultimate feature, and the output shapes of the model's blocks.

Used by the extraction pass (:mod:`unseen.extraction.core`) and, through
:class:`unseen.extraction.NetworkSource`, by the detectors that run the network again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from unseen.representation import Hook


def module_named(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``model``, or a ValueError listing the names it has."""
    modules = dict(model.named_modules())
    if name not in modules:
        options = ", ".join(n for n in modules if n)[:400]
        raise ValueError(f"the model has no module named {name!r}; it has: {options}")
    return modules[name]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block; its own mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, Hook]) -> Iterator[None]:
    """Forward hooks on the named modules for the duration of the block."""
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(module_named(model, name).register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def feature_capture(
    model: nn.Module,
    head: nn.Module | None,
    feature_module: str | None,
    store: dict[str, Any],
    key: str = "features",
) -> Iterator[None]:
    """Keep each forward pass's penultimate feature, flattened to (batch, D), in ``store[key]``:
    the output of ``feature_module`` when named, otherwise the input of ``head``."""
    if feature_module is not None:
        handle = module_named(model, feature_module).register_forward_hook(
            lambda _m, _i, out: store.__setitem__(key, out.flatten(1))
        )
    elif head is not None:
        handle = head.register_forward_pre_hook(
            lambda _m, inp: store.__setitem__(key, inp[0].flatten(1))
        )
    else:
        raise ValueError(
            "the network source has neither a head nor a named feature layer: extract with "
            "penultimate='<module>' so the detector can find the features"
        )
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def running(
    model: nn.Module,
    hooks: Mapping[str, Hook] | None = None,
    features: dict[str, Any] | None = None,
    *,
    head: nn.Module | None = None,
    feature_module: str | None = None,
) -> Iterator[None]:
    """Eval mode, ``hooks`` on their modules and, when ``features`` is given, the penultimate
    feature captured into it (see :func:`feature_capture`); all undone on exit."""
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(forward_hooks(model, hooks or {}))
        if features is not None:
            stack.enter_context(feature_capture(model, head, feature_module, features))
        yield


def child_output_shapes(
    model: nn.Module, x: torch.Tensor, exclude: nn.Module | None
) -> dict[str, tuple[int, ...]]:
    """Output shape on input ``x`` of each direct child of ``model`` except ``exclude``, in
    registration order; children that return no tensor are left out."""
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str) -> Hook:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)
        return hook

    names = [n for n, m in model.named_children() if m is not exclude]
    with running(model, {n: keep(n) for n in names}), torch.no_grad():
        model(x)
    return {n: shapes[n] for n in names if n in shapes}
