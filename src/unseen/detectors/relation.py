"""Relation (Kim et al., NeurIPS 2023): how strongly a sample relates to the training bank by
feature similarity and logit agreement; its exact all-pairs kernel and the class-aligned block
skipping that keeps it affordable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from unseen.detectors import _threads
from unseen.detectors._threads import map_threads
from unseen.detectors.base import Detector, Paper, softmax
from unseen.detectors.distance import l2_normalise
from unseen.detectors.params import Number
from unseen.detectors.registry import register
from unseen.representation import Representation


@dataclass(frozen=True)
class _RelationBank:
    """The training side of ``relation`` laid out for scoring; derived from the fitted state."""

    features_t: np.ndarray  # (D, N) float64 unit columns, sorted by predicted class
    probs_t: np.ndarray  # (C, N) float64 softmax columns, same order
    starts: np.ndarray  # (blocks + 1,) block boundaries: ≤ bank_block samples of one class each
    block_max: np.ndarray  # (blocks, C) float64: per block, the largest probability of each class


def _power_(x: np.ndarray, exponent: float, scratch: np.ndarray) -> None:
    """x ← x ** exponent in place, ``scratch`` being a buffer of x's shape.

    Integer exponents go by repeated squaring: a generic ``pow`` costs several times more than
    the few multiplications, and the grid's exponents are all integers.
    """
    if not float(exponent).is_integer() or exponent < 1:
        np.power(x, exponent, out=x)
        return
    n = int(exponent)
    while n % 2 == 0:  # x^(2m) = (x²)^m
        np.multiply(x, x, out=x)
        n //= 2
    if n == 1:
        return
    # n odd: x^n = x · (x²)^((n − 1) / 2), scratch running through x², x⁴, …
    np.multiply(x, x, out=scratch)
    n //= 2
    while True:
        if n % 2:
            x *= scratch
        n //= 2
        if not n:
            return
        np.multiply(scratch, scratch, out=scratch)


@register
class Relation(Detector):
    """Neural relation graph: the (negated) degree of x in a graph whose edges to the training
    samples x_j weigh

        k(x, x_j) = max(⟨u, u_j⟩, 0) · ⟨p, p_j⟩,   u = feature / ‖feature‖₂,  p = softmax(z),
        score(x) = −Σ_j [k(x, x_j) > τ] · k(x, x_j)^pow,

    with the edge cut-off τ = 0.03 of the authors' code. Kim, Yun, Song, NeurIPS 2023. Default
    pow = 1 (the authors' recommendation for OOD detection); grid pow ∈ {1, 2, 4, 6, 8} (OpenOOD
    v1.5's ``relation.yml``). OpenOOD returns the degree as confidence (our score negated); the
    authors' code scores 1 / (degree + 10⁻⁶), which ranks identically. The authors' optional
    subsampling of the training graph is not included.

    Exact, in float64, in blocks of ``bank_block`` training samples (so memory stays bounded)
    shared among one thread per core. Training samples are grouped by predicted class, and a
    query skips a block when Σ_c p_c max_{j ∈ block} p_jc, an upper bound of every edge weight
    in the block, is below τ: all those edges would be cut anyway, so the scores are unchanged.
    :meth:`score_grid` computes the degrees of every pow asked for in one pass, since the edge
    weights cost far more than the powers.
    """

    name = "relation"
    paper = Paper(
        "Neural Relation Graph: A Unified Framework for Identifying Label Noise and Outlier Data",
        "Kim, Yun, Song",
        "NeurIPS",
        2023,
        "https://arxiv.org/abs/2301.12321",
    )
    requires = frozenset({"features", "logits"})
    grid: ClassVar[dict[str, list[Any]]] = {"pow": [1, 2, 4, 6, 8]}
    score_params = frozenset({"pow"})
    constraints = {"pow": Number(0, low_open=True), "threshold": Number(0)}
    chunk_size = 4096
    bank_block: ClassVar[int] = 256
    #: relative slack on the skip bound, far above the rounding of cos (≤ 1 + ~1e-15) and ⟨p, p_j⟩,
    #: so a skipped block never holds an edge that the blockwise computation would keep
    _BOUND_SLACK: ClassVar[float] = 1e-4

    def __init__(self, pow: float = 1, threshold: float = 0.03) -> None:
        self.pow = pow
        self.threshold = threshold

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self.bank_features_ = l2_normalise(self._array(train, "features"), dtype=np.float64)
        self.bank_probs_ = softmax(self._array(train, "logits"))

    def _bank(self) -> _RelationBank:
        cached = self.__dict__.get("_relation_bank")
        key = (self.bank_features_, self.bank_probs_, self.bank_block)
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return cached[1]
        probs = self.bank_probs_
        # Blocks hold one predicted class each, most confident first, so the confident blocks
        # get small maxima for the other classes and are skipped by those classes' queries.
        predicted = probs.argmax(axis=1)
        order = np.lexsort((-probs.max(axis=1), predicted))
        class_starts = np.searchsorted(predicted[order], np.unique(predicted))
        class_ends = [*class_starts[1:], len(order)]
        starts = np.concatenate(
            [np.arange(a, b, self.bank_block) for a, b in zip(class_starts, class_ends, strict=True)]
        )
        bank = _RelationBank(
            features_t=np.ascontiguousarray(self.bank_features_[order].T, dtype=np.float64),
            probs_t=np.ascontiguousarray(probs[order].T, dtype=np.float64),
            starts=np.append(starts, len(order)),
            block_max=np.maximum.reduceat(probs[order], starts, axis=0),
        )
        self._relation_bank = (key, bank)
        return bank

    def _score(self, rep: Representation) -> np.ndarray:
        return -self._degrees(rep, self._bank(), [self.pow])[0]

    def _score_grid(
        self, rep: Representation, points: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray | ValueError]:
        exponents = sorted({point.get("pow", self.pow) for point in points})
        degrees = dict(zip(exponents, self._degrees(rep, self._bank(), exponents), strict=True))
        return [-degrees[point.get("pow", self.pow)] for point in points]

    def _degrees(self, rep: Representation, bank: _RelationBank, exponents: list[float]) -> np.ndarray:
        """Σ_j [k(x, x_j) > τ] · k(x, x_j)^e for each exponent e (rows) and sample x (columns)."""
        u = l2_normalise(self._array(rep, "features"), dtype=np.float64)
        p = softmax(self._array(rep, "logits"))
        n, size, threshold = len(p), int(np.diff(bank.starts).max()), self.threshold
        active = p @ bank.block_max.T * (1.0 + self._BOUND_SLACK) > threshold

        def degrees(blocks: range) -> np.ndarray:
            out = np.zeros((len(exponents), n))
            rel_buffer, scratch_buffer = np.empty(n * size), np.empty(n * size)
            keep_buffer = np.empty(n * size, dtype=bool)
            power_buffer = np.empty(n * size if len(exponents) > 1 else 0)
            for b in blocks:
                rows = np.flatnonzero(active[:, b])
                if rows.size == 0:
                    continue
                u_rows, p_rows = (u, p) if rows.size == n else (u[rows], p[rows])
                block = slice(bank.starts[b], bank.starts[b + 1])
                shape = (rows.size, bank.features_t[:, block].shape[1])
                rel = rel_buffer[: shape[0] * shape[1]].reshape(shape)
                scratch = scratch_buffer[: shape[0] * shape[1]].reshape(shape)
                keep = keep_buffer[: shape[0] * shape[1]].reshape(shape)
                np.matmul(u_rows, bank.features_t[:, block], out=rel)
                np.matmul(p_rows, bank.probs_t[:, block], out=scratch)
                # No max(cos, 0) needed: ⟨p, p_j⟩ ≥ 0 and τ ≥ 0, so a negative cosine is cut anyway.
                rel *= scratch
                np.greater(rel, threshold, out=keep)
                rel *= keep
                for i, exponent in enumerate(exponents):
                    if i == len(exponents) - 1:
                        powered = rel
                    else:
                        powered = power_buffer[: shape[0] * shape[1]].reshape(shape)
                        powered[...] = rel
                    _power_(powered, exponent, scratch)
                    out[i, rows] += powered.sum(axis=1)
            return out

        workers = _threads.worker_count()
        # Interleaved, so that every worker gets blocks of every class; the partial degrees are
        # added in a fixed order, so scores do not depend on thread timing.
        parts = map_threads(degrees, [range(w, len(bank.block_max), workers) for w in range(workers)])
        return np.sum(parts, axis=0)
