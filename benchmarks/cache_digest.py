"""What checking a cache entry's digest costs against loading the entry (issue #11, defect 4).

    PYTHONPATH=src python benchmarks/cache_digest.py              # a ~100 MB representation
    PYTHONPATH=src python benchmarks/cache_digest.py --mb 400 --repeats 7

Writes one representation (float32 features, int64 labels) of about ``--mb`` MB with
``unseen.cache.put`` into a temporary cache and times, interleaved round by round (median and
min-max over the rounds, so a busy minute on a shared machine hits every variant alike):

* ``Representation.load (mmap)``: what a cache hit cost before digests: the header and a map.
* ``load + read all features``: the map plus one pass over every feature (``features.sum()``),
  which the first detector's fit does anyway.
* ``sha256 of the file``: :func:`unseen.cache.file_digest` (streamed in 4 MiB chunks).
* ``blake2b of the file``: the same loop with ``hashlib.blake2b``, for comparison.
* ``cache.get (digest + load)``: the checked hit as the extraction now does it.

The file stays in the page cache between rounds (warm reads, as on a second cached run); a cold
read adds the disk's time to every variant that touches the data, digest or not.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unseen import cache
from unseen.representation import Representation


def _blake2b(path: Path) -> str:
    h = hashlib.blake2b()
    with path.open("rb") as fh:
        while chunk := fh.read(cache.DIGEST_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the cached file")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dim = 512
    rows = int(args.mb * 1e6 / (dim * 4 + 8))
    rng = np.random.default_rng(0)
    rep = Representation(features=rng.standard_normal((rows, dim), dtype=np.float32),
                         labels=rng.integers(0, 10, rows))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = cache.put(root, "bench", rep)
        size = path.stat().st_size
        del rep
        variants: dict[str, Callable[[], object]] = {
            "Representation.load (mmap)": lambda: Representation.load(path),
            "load + read all features": lambda: float(Representation.load(path).features.sum()),
            "sha256 of the file": lambda: cache.file_digest(path),
            "blake2b of the file": lambda: _blake2b(path),
            "cache.get (digest + load)": lambda: cache.get(root, "bench"),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for fn in variants.values():  # warm the page cache and the code paths once
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"cached file: {size / 1e6:.1f} MB ({rows:,} rows x {dim} float32 + labels), "
          f"{args.repeats} rounds, warm page cache")
    print(f"{'variant':<30} {'median ms':>10} {'min-max ms':>16} {'MB/s':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<30} {med * 1e3:>10.1f} {min(ts) * 1e3:>7.1f}-{max(ts) * 1e3:<8.1f}"
              f" {size / 1e6 / med:>8.0f}")


if __name__ == "__main__":
    main()
