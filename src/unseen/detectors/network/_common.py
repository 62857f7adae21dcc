"""What every network-in-the-loop detector shares: the base class and the torch helpers for
running the model through ``rep.source`` (a :class:`unseen.representation.NetworkSource`).

The hook plumbing itself (eval mode, forward hooks, feature capture) lives in
:mod:`unseen.extraction.hooks` and is reached only through the source's ``running()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from unseen.detectors.base import Detector
from unseen.representation import NetworkSource, Representation


class NetworkDetector(Detector):
    """Base of the detectors that run the network again (``"network"`` in ``requires``).

    Row chunks of the base class are cut on batch boundaries of ``rep.source``, so a chunked
    representation feeds the network exactly the batches the whole one would.
    """

    def _chunks(self, rep: Representation) -> list[Representation]:
        batch = max(1, int(source(rep).batch_size))
        step = max(batch, self.chunk_size // batch * batch)
        n = len(rep)
        if n <= step:
            return [rep]
        return [rep.subset(slice(i, i + step)) for i in range(0, n, step)]


def source(rep: Representation) -> NetworkSource:
    """``rep.source``; the base class has checked that it is there."""
    if rep.source is None:
        raise ValueError("this Representation has no source: extract it with unseen.extract()")
    return rep.source


def inputs(rep: Representation, who: str) -> Iterator[torch.Tensor]:
    """The representation's inputs, batch by batch, checking that the row count still matches."""
    seen = 0
    for x, _ in source(rep).batches():
        seen += len(x)
        yield x
    if seen != len(rep):
        raise ValueError(
            f"{who}: rep.source yielded {seen} inputs but the representation has {len(rep)} rows; "
            "the data changed since extraction: extract again"
        )


@contextmanager
def autograd() -> Iterator[None]:
    """Gradients on, even when the caller runs under ``torch.inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def float_input(x: torch.Tensor, who: str) -> torch.Tensor:
    """A leaf copy of ``x`` that records gradients (call inside :func:`autograd`)."""
    if not x.is_floating_point():
        raise TypeError(f"{who} differentiates through the inputs, so they must be floating point, "
                        f"got {x.dtype}")
    return x.detach().clone().requires_grad_(True)
