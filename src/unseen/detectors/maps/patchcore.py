"""PatchCore: nearest-neighbour distance to a coreset memory bank of normal patches."""

from __future__ import annotations

from typing import Any, ClassVar

import faiss
import numpy as np

from unseen.detectors.base import Paper, softmax
from unseen.detectors.maps.base import MapDetector, flat_patches, patches_of
from unseen.representation import Representation


def greedy_coreset(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` picked by greedy k-center (Sener & Savarese 2018):
    start from a random row, then repeatedly add the row farthest from the rows picked so far."""
    return greedy_coresets(x[None], n, seed)[0]


def greedy_coresets(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """:func:`greedy_coreset` of each of the C equally long chunks ``x`` (C, m, d) at once: (C, n).

    One Python step serves every chunk (a batched matrix-vector product with
    ‖a − c‖² = ‖a‖² − 2 a·c + ‖c‖²), so the loop runs n times, not C · n. Chunk c starts from
    row ``default_rng(seed).integers(m, size=C)[c]``.
    """
    chunks, m, _ = x.shape
    if not 1 <= n <= m:
        raise ValueError(f"coreset size must lie in 1..{m}, got {n}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.einsum("cmd,cmd->cm", x, x)
    rows = np.arange(chunks)
    chosen = np.empty((chunks, n), dtype=np.int64)
    chosen[:, 0] = np.random.default_rng(seed).integers(m, size=chunks)
    nearest = np.full((chunks, m), np.inf, dtype=np.float32)
    for i in range(n):
        if i:
            chosen[:, i] = nearest.argmax(axis=1)
        centre = x[rows, chosen[:, i]]  # (C, d)
        dist = norms - 2 * np.matmul(x, centre[:, :, None])[:, :, 0] + norms[rows, chosen[:, i]][:, None]
        np.minimum(nearest, dist, out=nearest)
    return chosen


def project(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Johnson-Lindenstrauss projection onto ``dim`` Gaussian directions (identity if D <= dim)."""
    if x.shape[1] <= dim:
        return x
    matrix = np.random.default_rng(seed).normal(size=(x.shape[1], dim)) / np.sqrt(dim)
    return (x @ matrix.astype(np.float32)).astype(np.float32)


class PatchCore(MapDetector):
    """Roth et al., CVPR 2022. Memory bank M = coreset of the training patches; patch score

        s(p) = min_{m ∈ M} ‖p − m‖₂,

    image score with the paper's re-weighting (eq. 7) of the most anomalous patch p* and its
    nearest bank patch m*:

        s = (1 − exp‖p* − m*‖ / Σ_{m ∈ N_b(m*)} exp‖p* − m‖) · s(p*),

    where N_b(m*) are the b bank patches nearest to m* (m* included).

    The coreset is greedy k-center on a random projection to ``projection_dim`` = 128 dims,
    ``coreset_ratio`` = 10 % of the patches (the paper's defaults); b = ``num_neighbors`` = 9
    (anomalib's). The paper runs greedy over all patches at once; on a CPU that is about 1 h for
    Magnetic Tile Defects (585k patches, 58k centres, 58 ms per step), so by default greedy runs
    on random chunks of about ``chunk`` = 20,000 patches, taking 10 % of each (planning measurement on MTD
    with Lite0 blocks 4 + 10: image AUROC 0.954 vs 0.948 for a global greedy 1 % and 0.892 for a
    random 10 %). ``chunk=None`` is the
    paper's global greedy. Search is exact (faiss ``IndexFlatL2``).
    """

    name = "patchcore"
    paper = Paper(
        "Towards Total Recall in Industrial Anomaly Detection",
        "Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler",
        "CVPR",
        2022,
        "https://arxiv.org/abs/2106.08265",
    )
    grid: ClassVar[dict[str, list[Any]]] = {"coreset_ratio": [0.01, 0.1]}

    def __init__(
        self,
        coreset_ratio: float = 0.1,
        projection_dim: int = 128,
        chunk: int | None = 20000,
        num_neighbors: int = 9,
        seed: int = 0,
    ) -> None:
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.chunk = chunk
        self.num_neighbors = num_neighbors
        self.seed = seed

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if not 0 < self.coreset_ratio <= 1:
            raise ValueError(f"patchcore: coreset_ratio must lie in (0, 1], got {self.coreset_ratio}")
        x = flat_patches(train, self.name)
        self.bank_ = x[self._coreset(x)] if self.coreset_ratio < 1 else x

    def _coreset(self, x: np.ndarray) -> np.ndarray:
        """Greedy k-center per random chunk (``chunk=None``: one chunk, the paper's algorithm).

        The shuffled patches are cut into C = ceil(N / chunk) chunks of N // C rows, each giving
        round(ratio * N // C) centres; the fewer than C rows left over are not candidates."""
        n_chunks = -(-len(x) // self.chunk) if self.chunk else 1
        order = np.random.default_rng(self.seed).permutation(len(x)) if self.chunk else np.arange(len(x))
        length = len(x) // n_chunks
        body = order[: length * n_chunks].reshape(n_chunks, length)
        reduced = project(x[body.ravel()], self.projection_dim, self.seed).reshape(n_chunks, length, -1)
        n = max(1, round(self.coreset_ratio * length))
        return np.sort(np.take_along_axis(body, greedy_coresets(reduced, n, self.seed), axis=1).ravel())

    def _index(self) -> faiss.Index:
        held = self.__dict__.get("_faiss")
        if held is None or held[0] is not self.bank_:
            index = faiss.IndexFlatL2(self.bank_.shape[1])
            index.add(np.ascontiguousarray(self.bank_, dtype=np.float32))
            self._faiss = held = (self.bank_, index)
        return held[1]

    def _nearest(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        """Distance (N, h, w) and bank index of every patch's nearest bank patch."""
        patches = patches_of(rep, self.name)
        d2, idx = self._index().search(flat_patches(rep, self.name), 1)
        shape = patches.shape[:3]
        return np.sqrt(np.maximum(d2[:, 0], 0)).reshape(shape), idx[:, 0].reshape(shape)

    def _maps_scores(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self._nearest(rep)
        n = len(rep)
        flat_d, flat_i = dist.reshape(n, -1), idx.reshape(n, -1)
        star = flat_d.argmax(axis=1)
        s_star = flat_d[np.arange(n), star]
        p_star = flat_patches(rep, self.name).reshape(n, -1, self.bank_.shape[1])[np.arange(n), star]
        m_star = self.bank_[flat_i[np.arange(n), star]]
        b = min(self.num_neighbors, len(self.bank_))
        _, support = self._index().search(np.ascontiguousarray(m_star), b)
        dists = np.linalg.norm(p_star[:, None, :].astype(np.float64) - self.bank_[support], axis=2)
        weight = 1.0 - softmax(dists)[:, 0]
        return dist, weight * s_star
