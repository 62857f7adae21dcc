"""kNN at scale: what faiss IVF and IVF-PQ cost in recall and AUROC against the exact search.

    python benchmarks/knn_ivf.py --fit FIT.safetensors --test ID_TEST.safetensors \\
        --ood OOD.safetensors [--k 50]
    python benchmarks/knn_ivf.py --synthetic                # no files: a 50,000 × 512 mixture

The representation files are any saved :class:`unseen.Representation` (the cache's entries,
e.g. the cifar10 preset's ``id/fit``, ``id/test`` and ``near/tin``). The detector is kNN (Sun et
al., ICML 2022): distance to the k-th nearest L2-normalised training feature. The rows compare
the exact search (``IndexFlatL2``, what :class:`unseen.detectors.distance.KNN` runs) with
``IndexIVFFlat`` and ``IndexIVFPQ`` at several ``nprobe``: recall@k (the fraction of the exact k
neighbours found, over ID test and OOD queries), AUROC of ID test against OOD, bank memory and
search time (build time apart). ``nlist`` = 4·√N lists, trained on the bank with seed 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

import unseen
from unseen import Representation
from unseen.detectors.distance import l2_normalise


def synthetic(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(10, 512))) * 1.5

    def draw(n: int, shift: float) -> np.ndarray:
        lab = rng.integers(0, 10, n)
        return np.maximum(centres[lab] + shift + rng.normal(size=(n, 512)), 0).astype(np.float32)

    return draw(50_000, 0.0), draw(5_000, 0.0), draw(5_000, 0.35)


def exact(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    return index.search(queries, k)


def approx(index: faiss.Index, bank: np.ndarray, queries: np.ndarray, k: int,
           nprobes: list[int]) -> list[tuple[int, float, float, np.ndarray, np.ndarray]]:
    t0 = time.perf_counter()
    index.train(bank)
    index.add(bank)
    build = time.perf_counter() - t0
    out = []
    for nprobe in nprobes:
        index.nprobe = nprobe
        t0 = time.perf_counter()
        dist, ids = index.search(queries, k)
        out.append((nprobe, build, time.perf_counter() - t0, dist, ids))
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", type=Path)
    ap.add_argument("--test", type=Path)
    ap.add_argument("--ood", type=Path)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--pq-m", type=int, default=16, help="PQ sub-quantisers (8 bits each)")
    args = ap.parse_args()
    faiss.omp_set_num_threads(2)
    if args.synthetic:
        fit, test, ood = synthetic(0)
        what = "synthetic 512-d mixture (50,000 / 5,000 / 5,000 shifted)"
    else:
        fit, test, ood = (np.ascontiguousarray(Representation.load(p).features)
                          for p in (args.fit, args.test, args.ood))
        what = f"{args.fit.name[:12]}… {len(fit):,} fit / {len(test):,} ID test / {len(ood):,} OOD"
    bank, queries = l2_normalise(fit), l2_normalise(np.concatenate([test, ood]))
    n_id, dim, k = len(test), bank.shape[1], args.k
    nlist = int(4 * np.sqrt(len(bank)))
    t0 = time.perf_counter()
    d_true, i_true = exact(bank, queries, k)
    t_exact = time.perf_counter() - t0

    def auroc(dist: np.ndarray) -> float:
        s = np.sqrt(np.maximum(dist[:, -1].astype(np.float64), 0))
        return unseen.metrics.auroc(s[:n_id], s[n_id:])

    table = Table(title=f"kNN (k={k}) on {what}, d={dim}, nlist={nlist}, 2 threads")
    for col in ("index", "nprobe", "recall@k", "AUROC", "Δ AUROC", "bank MB", "build s", "search s"):
        table.add_column(col, justify="left" if col == "index" else "right")
    base = auroc(d_true)
    table.add_row("Flat (exact)", "–", "1.000", f"{100 * base:.2f}", "0", f"{bank.nbytes / 1e6:.1f}",
                  "0", f"{t_exact:.2f}")
    faiss_seed = {"seed": 0}
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    ivf.cp.seed = faiss_seed["seed"]
    m = args.pq_m if dim % args.pq_m == 0 else 8
    pq = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, nlist, m, 8)
    pq.cp.seed = faiss_seed["seed"]
    for name, index, mb in (("IVF-Flat", ivf, bank.nbytes / 1e6),
                            (f"IVF-PQ m={m}×8 bit", pq, len(bank) * m / 1e6)):
        for nprobe, build, secs, dist, ids in approx(index, bank, queries, k, [1, 4, 16, 64]):
            a = auroc(dist)
            table.add_row(name, str(nprobe), f"{recall(ids, i_true):.3f}", f"{100 * a:.2f}",
                          f"{100 * (a - base):+.2f}", f"{mb:.1f}", f"{build:.1f}", f"{secs:.2f}")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
