"""NAC: neuron activation coverage of the training data, scored per neuron state."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unseen.detectors.base import MissingInputError, Paper
from unseen.detectors.network._common import (
    NetworkDetector,
    autograd,
    float_input,
    inputs,
    source,
)
from unseen.detectors.params import Even, ModuleNames, Number
from unseen.detectors.registry import register
from unseen.representation import Hook, Representation


def nac_edges(m: int) -> np.ndarray:
    """The m bin edges of the authors' code for sigmoid states in [0, 1]: log-spaced, dense near 0
    and 1 (base 1000), the last interior edge nudged to 1.01, then 1.2; m − 1 bins."""
    half = m // 2
    left = np.log(np.linspace(1.0, np.sqrt(1e3), half)) / np.log(1e3)  # 0 .. 0.5
    edges = np.concatenate([left[:-1], (1.0 - left)[::-1]])
    edges[-1] += 1e-2
    return np.append(edges, 1.2)


def balanced_rows(classes: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` rows spread over the classes as evenly as they allow: each class's
    rows are shuffled (fixed ``seed``) and the classes take turns, in class order."""
    rng = np.random.default_rng(seed)
    turn = np.empty(len(classes), dtype=np.int64)
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        turn[rng.permutation(idx)] = np.arange(len(idx))
    return np.sort(np.lexsort((classes, turn))[:n])


def _pooled(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


@register
class NAC(NetworkDetector):
    """Neuron activation coverage (NAC-UE): how well the training data cover each neuron's state.

        ẑ = sigmoid(β · z ⊙ ∂KL(u ‖ softmax(f(x))) / ∂z)   (per unit, u the uniform distribution),
        Φ_n(s) = min(count_n(bin(s)) / O, 1),
        score(x) = −(1/L) Σ_l (1/N_l) Σ_n Φ_n(ẑ_n(x)),

    count_n(b) the number of training states of unit n in bin b of M − 1 bins (the authors'
    log-spaced edges, :func:`nac_edges`), L the layers. Liu et al., ICLR 2024 (official code in
    the authors' OpenOOD fork, ``BierOne/ood_coverage``, which we follow). For feature maps, z and
    the gradient are summed over spatial positions first (the authors' ResNet pooling; channels on
    axis 1). The gradient is that of Σ_c −(1/C) log softmax_c, which equals KL(u ‖ p) up to a
    constant.

    ``layers``: module names; default None = the penultimate features (the head's input, or the
    extraction's feature module), the authors' ``avgpool`` configuration. Defaults M = 50, O = 50,
    β = 100 and grid O ∈ {10, 50} (the authors' CIFAR-10 ``avgpool`` settings and sweep). The
    coverage is built on a class-balanced subset of ``fit_size`` training rows (default 1000, as
    the authors; O counts states, so it is tuned for that size), drawn with a fixed seed by
    :func:`balanced_rows` (by label, or by predicted class without labels); ``fit_size=None``
    uses every row. Simplifications: one (M, O, β) shared by all layers (the authors tune them
    per layer). M must be even (the authors' edges assume it). The paper writes Φ with a density;
    the code, and we, use bin counts.
    """

    name = "nac"
    paper = Paper(
        "Neuron Activation Coverage: Rethinking Out-of-distribution Detection and Generalization",
        "Liu, Tian, Li, Ma, Wang",
        "ICLR",
        2024,
        "https://arxiv.org/abs/2306.02879",
    )
    requires = frozenset({"network"})
    grid: ClassVar[dict[str, list[Any]]] = {"M": [50], "O": [10, 50], "beta": [100]}
    score_params = frozenset({"O"})
    constraints = {
        "layers": ModuleNames(none=True),
        "M": Even(4),
        "O": Number(0, low_open=True),
        "beta": Number(0, low_open=True),
        "fit_size": Number(1, integer=True, none=True, text="a positive integer or None"),
    }

    def __init__(
        self,
        layers: list[str] | None = None,
        M: int = 50,
        O: float = 50,
        beta: float = 100,
        fit_size: int | None = 1000,
    ) -> None:
        self.layers = layers
        self.M = M
        self.O = O
        self.beta = beta
        self.fit_size = fit_size

    def _states(self, rep: Representation) -> list[np.ndarray]:
        """Per layer, the (N, units) sigmoid states of every row of ``rep``."""
        src = source(rep)
        store: dict[str, torch.Tensor] = {}
        names = ["features"] if self.layers is None else list(self.layers)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}

        def keep(name: str) -> Hook:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
                store[name] = out
            return hook

        hooks = {} if self.layers is None else {n: keep(n) for n in names}
        with src.running(hooks, features=store if self.layers is None else None):
            for x in inputs(rep, self.name):
                store.clear()
                with autograd():
                    out = src.model(float_input(x, self.name))
                    loss = -(torch.log_softmax(out, dim=1)).mean(dim=1).sum()
                    grads = torch.autograd.grad(loss, [store[n] for n in names])
                for n, g in zip(names, grads, strict=True):
                    z = _pooled(store[n].detach()).double()
                    prod = z * _pooled(g).double()
                    parts[n].append(torch.sigmoid(float(self.beta) * prod).cpu().numpy())
        return [np.concatenate(parts[n]) for n in names]

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if self.fit_size is not None and len(train) > self.fit_size:
            if train.labels is not None:
                classes = train.labels
            elif train.logits is not None:
                classes = train.logits.argmax(axis=1)
            else:
                raise MissingInputError(
                    f"nac.fit draws a class-balanced subset of fit_size={self.fit_size} rows from "
                    "labels or logits, and this Representation has neither: give one, or set "
                    "fit_size=None to fit on every row"
                )
            train = train.subset(balanced_rows(np.asarray(classes), int(self.fit_size)))
        edges = nac_edges(int(self.M))
        self.counts_ = []
        for states in self._states(train):
            bins = np.searchsorted(edges, states, side="right") - 1  # (N, units)
            counts = np.zeros((len(edges) - 1, states.shape[1]))
            inside = (bins >= 0) & (bins < len(edges) - 1)
            unit = np.broadcast_to(np.arange(states.shape[1]), bins.shape)
            np.add.at(counts, (bins[inside], unit[inside]), 1.0)
            self.counts_.append(counts)

    def _score(self, rep: Representation) -> np.ndarray:
        edges = nac_edges(int(self.M))
        total = np.zeros(len(rep))
        for states, counts in zip(self._states(rep), self.counts_, strict=True):
            if states.shape[1] != counts.shape[1]:
                raise ValueError(
                    f"nac was fitted on a layer with {counts.shape[1]} units but got {states.shape[1]}"
                )
            coverage = np.minimum(counts / float(self.O), 1.0)
            bins = np.searchsorted(edges, states, side="right") - 1
            inside = (bins >= 0) & (bins < len(edges) - 1)
            unit = np.broadcast_to(np.arange(states.shape[1]), bins.shape)
            phi = np.where(inside, coverage[np.clip(bins, 0, len(edges) - 2), unit], 0.0)
            total += phi.mean(axis=1)
        return -total / len(self.counts_)
