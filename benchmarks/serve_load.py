"""Load test of `unseen serve`: requests/s and latency percentiles over loopback.

Starts its own uvicorn process on 127.0.0.1 (a free port) serving either a given guard
directory or a synthetic one (KNN on 128-D features, 10 classes, 5,000 training and 1,000
calibration vectors), then sends a bounded number of ``POST /v1/predict-features`` requests
with batch 1 and batch 32 from 4 concurrent clients (threads, one httpx client each), and prints
one table row per batch size. Exits 1 if any request failed.

    .venv/bin/python benchmarks/serve_load.py [--guard DIR] [--requests 400] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

HOST = "127.0.0.1"


def synthetic_guard(path: Path, seed: int = 0) -> Path:
    from unseen import Representation, detectors
    from unseen.guard import Guard

    rng = np.random.default_rng(seed)
    classes, dim = 10, 128
    centres = rng.normal(scale=2.0, size=(classes, dim))
    weight = rng.normal(size=(classes, dim)).astype(np.float32)
    bias = np.zeros(classes, np.float32)

    def rep(n: int) -> Representation:
        labels = rng.integers(0, classes, n)
        x = np.maximum(centres[labels] + rng.normal(size=(n, dim)), 0).astype(np.float32)
        return Representation(x, x @ weight.T + bias, labels, weight, bias)

    guard = Guard(detectors.create("knn", k=50)).fit(rep(5000)).calibrate(rep(1000), alpha=0.05)
    return guard.save(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{proc.stdout.read().decode()}")
        try:
            r = httpx.get(base + "/healthz", timeout=2.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not ready within {timeout:.0f} s")


def run_load(base: str, body: bytes, total: int, clients: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_client = [total // clients + (i < total % clients) for i in range(clients)]

    def worker(n: int) -> None:
        nonlocal errors
        mine, bad = [], 0
        with httpx.Client(base_url=base, timeout=30.0) as client:
            for _ in range(n):
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/predict-features", content=body,
                                    headers={"content-type": "application/json"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - t0)
                bad += not ok
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=worker, args=(n,)) for n in per_client]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guard", type=Path, help="guard directory (default: synthetic)")
    parser.add_argument("--requests", type=int, default=400, help="requests per batch size")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        guard_dir = args.guard or synthetic_guard(Path(tmp) / "guard")
        port = free_port()
        base = f"http://{HOST}:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "unseen", "serve", str(guard_dir), "--host", HOST,
             "--port", str(port), "--log-level", "warning", "--max-batch", str(max(batches))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            health = wait_ready(base, proc)
            kind, dim = next(iter(health["predict_features_accepts"].items()))
            rng = np.random.default_rng(1)
            print(f"guard: {health['detector']}, {kind} of dimension {dim}, "
                  f"{args.clients} clients, {args.requests} requests per batch size, {HOST}")
            print(f"{'batch':>5} {'requests':>8} {'req/s':>8} {'inputs/s':>9} "
                  f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
            failed = 0
            for batch in batches:
                rows = np.abs(rng.normal(size=(batch, dim))).round(5).tolist()
                body = json.dumps({kind: rows}).encode()
                run_load(base, body, 2 * args.clients, args.clients)  # warm-up
                lat, errors, wall = run_load(base, body, args.requests, args.clients)
                ms = np.percentile(np.array(lat) * 1e3, [50, 99])
                rps = len(lat) / wall
                print(f"{batch:>5} {len(lat):>8} {rps:>8.1f} {rps * batch:>9.0f} "
                      f"{ms[0]:>8.2f} {ms[1]:>8.2f} {errors:>6}")
                failed += errors
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
