"""Gram-matrix deviations (Sastry & Oore): higher-order Gram features against per-class ranges."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unseen.detectors.base import NotApplicableError, Paper, rep_memo
from unseen.detectors.network._common import NetworkDetector, inputs, source
from unseen.detectors.params import ModuleNames, Number
from unseen.detectors.registry import register
from unseen.representation import Hook, Representation


def gram_features(activation: torch.Tensor, powers: int) -> torch.Tensor:
    """(B, P, C) Gram features of orders p = 1..P, in float64:

        feature_{p,i} = sign(r_i) |r_i|^{1/p},   r_i = Σ_j (A^p (A^p)ᵀ)_ij,

    A the (C, positions) activation of one sample (a 2-D activation is one position per unit)
    and A^p its element-wise power: the p-th root of the row sums of the p-th order Gram
    matrix."""
    a = activation.detach().double()
    a = a.reshape(a.shape[0], a.shape[1], -1)
    out = []
    for p in range(1, powers + 1):
        ap = a**p
        # Σ_j (A Aᵀ)_ij = Σ_s A_is Σ_j A_js: no C × C matrix needed.
        rows = (ap * ap.sum(dim=1, keepdim=True)).sum(dim=2)
        out.append(rows.sign() * rows.abs() ** (1.0 / p))
    return torch.stack(out, dim=1)


@register
class Gram(NetworkDetector):
    """Gram-matrix deviations: how far a sample's higher-order Gram features leave the range seen
    on training samples predicted as the same class.

        δ(m, M, v) = max(m − v, 0) / (|m| + 10⁻⁶) + max(v − M, 0) / (|M| + 10⁻⁶),
        δ_l(x) = Σ_p Σ_i δ(Mins[ŷ][l][p][i], Maxs[ŷ][l][p][i], G_l^p(x)_i),
        score(x) = Σ_l δ_l(x) / (E_val[δ_l] + 10⁻⁷),

    ŷ the predicted class (from the cached logits), Mins/Maxs the per-class extremes of each Gram
    feature over the training samples predicted as that class, E_val the mean layer deviation of
    the ID validation samples. Sastry & Oore, ICML 2020. Default p = 1..10 (``powers=10``, the
    paper's); grid powers ∈ {10, 5, 1} (ours: OpenOOD v1.5 has no search for it).

    ``layers``: module names whose outputs are used. Default: every direct child of the model
    whose output is a feature map (≥ 3-D), e.g. ``conv1``, ``bn1``, ``layer1``..``layer4``,
    ``avgpool`` of a ResNet, resolved in ``fit`` (``layers_``); the authors record far more
    (every convolution and activation inside the blocks).

    Differences: G_l^p(x)_i is the p-th root of row i's sum of A^p (A^p)ᵀ (see
    :func:`gram_features`), as in the authors' code and OpenOOD; the paper describes the
    flattened matrix (A^p (A^p)ᵀ)^{1/p}, whose C(C+1)/2 values per layer and power are too many
    to keep for wide layers. The 10⁻⁶ and 10⁻⁷ guards are the authors' code's. The
    authors' code also divides each deviation by the sample's MSP, which the paper does not; we
    do not. OpenOOD v1.5's ``gram`` differs more: it takes Mins/Maxs by true label, collapses
    each Gram vector to its sum before comparing, updates Maxs with the batch minimum, and skips
    the validation normalisation.

    ``powers`` only changes scoring up to the order fitted: a detector fitted with ``powers=P``
    keeps the ranges and validation means of every order p ≤ P, so ``set_params(powers=q)`` with
    q ≤ P scores as a detector fitted with q; a grid search fits once with the largest order
    (:meth:`shared_fit`). Per-order deviations are memoised per representation, so the
    validation pass of ``fit`` also serves its scoring.
    """

    name = "gram"
    paper = Paper(
        "Detecting Out-of-Distribution Examples with Gram Matrices",
        "Sastry, Oore",
        "ICML",
        2020,
        "https://proceedings.mlr.press/v119/sastry20a.html",
    )
    requires = frozenset({"logits", "network"})
    needs_val = True
    grid: ClassVar[dict[str, list[Any]]] = {"powers": [10, 5, 1]}
    score_params = frozenset({"powers"})
    constraints = {"layers": ModuleNames(none=True), "powers": Number(1, integer=True)}

    def __init__(self, layers: list[str] | None = None, powers: int = 10) -> None:
        self.layers = layers
        self.powers = powers

    @classmethod
    def shared_fit(cls, points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        # The largest order: its fit keeps every lower one.
        orders = [int(p.get("powers", 10)) for p in points]
        return dict(points[orders.index(max(orders))])

    def _batches(self, rep: Representation, powers: int) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """Batch by batch: the rows covered and, per layer, their (B, P, C) Gram features (so
        nothing of size N × features is ever held)."""
        store: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Hook:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
                store[name] = gram_features(out, powers)
            return hook

        src, start = source(rep), 0
        with src.running({n: keep(n) for n in self.layers_}), torch.no_grad():
            for x in inputs(rep, self.name):
                store.clear()
                src.model(x)
                yield slice(start, start + len(x)), [store[n].cpu().numpy() for n in self.layers_]
                start += len(x)

    def _layer_deviations(self, rep: Representation) -> np.ndarray:
        """(N, L, P) deviation of each row at each layer and order from its predicted class's
        ranges, P the fitted order; memoised per representation (and its source and logits)."""
        memo = rep_memo(self, "_deviations", self.mins_, self.maxs_)
        hit = memo.get(rep)
        if hit is not None and hit[0] is rep.source and hit[1] is rep.logits:
            return hit[2]
        pred = np.asarray(rep.logits).argmax(axis=1)
        out = []
        for rows, feats in self._batches(rep, self.powers_):
            devs = []
            for f, lo, hi in zip(feats, self.mins_, self.maxs_, strict=True):
                m, big = lo[pred[rows]], hi[pred[rows]]
                below = np.maximum(m - f, 0.0) / (np.abs(m) + 1e-6)
                above = np.maximum(f - big, 0.0) / (np.abs(big) + 1e-6)
                devs.append((below + above).sum(axis=2))  # (B, P): summed over the C features
            out.append(np.stack(devs, axis=1))
        memo[rep] = (rep.source, rep.logits, np.concatenate(out))
        return memo[rep][2]

    def _class_ranges(self, train: Representation) -> None:
        """Per layer, the (classes, P, C) minimum and maximum of each Gram feature over the
        training rows predicted as each class."""
        logits = self._array(train, "logits")
        pred = np.asarray(logits).argmax(axis=1)
        n_classes = logits.shape[1]
        self.mins_: list[np.ndarray] = []
        self.maxs_: list[np.ndarray] = []
        for rows, feats in self._batches(train, self.powers_):
            if not self.mins_:
                self.mins_ = [np.full((n_classes, *f.shape[1:]), np.inf) for f in feats]
                self.maxs_ = [np.full((n_classes, *f.shape[1:]), -np.inf) for f in feats]
            p = pred[rows]
            for c in np.unique(p):
                for f, lo, hi in zip(feats, self.mins_, self.maxs_, strict=True):
                    np.minimum(lo[c], f[p == c].min(axis=0), out=lo[c])
                    np.maximum(hi[c], f[p == c].max(axis=0), out=hi[c])

    def _fit(self, train: Representation, val: Representation | None) -> None:
        assert val is not None  # needs_val
        self.powers_ = int(self.powers)
        if self.layers is not None:
            self.layers_ = [str(n) for n in self.layers]
        else:
            shapes = source(train).block_output_shapes()
            self.layers_ = [n for n, shape in shapes.items() if len(shape) >= 3]
            if not self.layers_:
                raise NotApplicableError(
                    "gram found no direct child of the model that outputs a feature map; name "
                    "the layers with layers=[...]"
                )
        logits = self._array(train, "logits")
        pred = np.asarray(logits).argmax(axis=1)
        n_classes = logits.shape[1]
        missing = [c for c in range(n_classes) if not np.any(pred == c)]
        if missing:
            raise ValueError(
                f"gram needs at least one training sample predicted as each class; classes "
                f"{missing[:10]} have none"
            )
        self._class_ranges(train)
        self.val_mean_ = self._layer_deviations(val).mean(axis=0)  # (L, P)

    def _score(self, rep: Representation) -> np.ndarray:
        return self._from_deviations(self._layer_deviations(rep), int(self.powers))

    def _from_deviations(self, deviations: np.ndarray, q: int) -> np.ndarray:
        if q > self.powers_:
            raise ValueError(
                f"gram was fitted with powers={self.powers_} and cannot score powers={q}; "
                "fit again with the larger order"
            )
        devs = deviations[:, :, :q].sum(axis=2)
        return (devs / (self.val_mean_[:, :q].sum(axis=1) + 1e-7)).sum(axis=1)

    def _score_grid(
        self, rep: Representation, points: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray | ValueError]:
        # One pass of the network serves every order.
        deviations = self._layer_deviations(rep)
        out: list[np.ndarray | ValueError] = []
        for point in points:
            try:
                out.append(self._from_deviations(deviations, int(point.get("powers", self.powers))))
            except ValueError as exc:
                out.append(exc)
        return out
