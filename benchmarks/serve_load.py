"""Load test of `unseen serve`: requests/s and latency percentiles over loopback.

Starts its own uvicorn process on 127.0.0.1 (a free port) serving either a given guard
directory or a synthetic one (KNN on 128-D features, 10 classes, 5,000 training and 1,000
calibration vectors), then sends a bounded number of ``POST /v1/predict-features`` requests
with batch 1 and batch 32 from 4 concurrent clients (threads, one httpx client each), and prints
one table row per batch size. Exits 1 if any request failed.

With ``--adversarial`` it serves a synthetic image guard (an untrained, seeded MNIST ConvNet with
KNN on its features) and runs normal traffic (batch-1 feature and 28x28 image predictions from
``--clients`` clients) plus a ``/healthz`` probe every 50 ms, for ``--seconds`` without and then
with adversarial clients beside it: a batch of 64 all-zero 4096x4096 PNGs (3 MB, refused by the
request pixel budget) alternating with one such image (within budget, decoded), 14 MB JSON
bodies (declared and chunked), and ``--stalled`` clients that send a head and a few body bytes and
then stall until the body timeout answers 408. It prints p50/p99 of normal requests and of
``/healthz`` per phase, error counts, the server's peak RSS against the configured budget
(RSS after warm-up + ``Limits.memory_bound_bytes()``), and the adversaries' status counts.
Exits 1 on any 5xx or transport error of normal traffic.

    .venv/bin/python benchmarks/serve_load.py [--guard DIR] [--requests 400] [--clients 4]
    .venv/bin/python benchmarks/serve_load.py --adversarial [--seconds 20] [--stalled 32]
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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


# -- the adversarial mix ---------------------------------------------------------------------------
def synthetic_image_guard(path: Path, seed: int = 0) -> Path:
    import torch

    from unseen import detectors, models
    from unseen.data import transforms as T
    from unseen.guard import Guard

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    digits = [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(600)]
    guard = Guard(detectors.create("knn", k=10), models.create("mnist_convnet", num_classes=10),
                  model_name="mnist_convnet", transform=T.mnist_transform())
    return guard.fit(digits[:400]).calibrate(digits[400:], alpha=0.05).save(path)


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class Phase:
    """Collects latencies and status codes from the threads of one phase."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.normal: list[tuple[float, int]] = []  # (seconds, status; 0 = transport error)
        self.health: list[tuple[float, int]] = []
        self.adversary: Counter[str] = Counter()
        self.peak_rss = 0

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def add(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            getattr(self, kind).append((seconds, status))

    def tag(self, what: str, status: object) -> None:
        with self.lock:
            self.adversary[f"{what} -> {status}"] += 1


def timed(client: httpx.Client, method: str, url: str, **kwargs: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    try:
        status = client.request(method, url, **kwargs).status_code
    except httpx.HTTPError:
        status = 0
    return time.perf_counter() - t0, status


def normal_client(base: str, phase: Phase, features: bytes, image: bytes) -> None:
    with httpx.Client(base_url=base, timeout=30.0) as client:
        i = 0
        while phase.running():
            if i % 2:
                phase.add("normal", *timed(client, "POST", "/v1/predict", files=[
                    ("files", ("digit.png", image, "image/png"))]))
            else:
                phase.add("normal", *timed(client, "POST", "/v1/predict-features", content=features,
                                           headers={"content-type": "application/json"}))
            i += 1


def health_probe(base: str, phase: Phase) -> None:
    with httpx.Client(base_url=base, timeout=30.0) as client:
        while phase.running():
            phase.add("health", *timed(client, "GET", "/healthz"))
            time.sleep(0.05)


def rss_sampler(pid: int, phase: Phase) -> None:
    while phase.running():
        phase.peak_rss = max(phase.peak_rss, rss_bytes(pid))
        time.sleep(0.05)


def big_images_client(base: str, phase: Phase) -> None:
    zero = png(np.zeros((4096, 4096), np.uint8))
    batch = [("files", (f"{i}.png", zero, "image/png")) for i in range(64)]
    with httpx.Client(base_url=base, timeout=60.0) as client:
        while phase.running():
            phase.tag("64 x 4096^2 PNG", timed(client, "POST", "/v1/predict", files=batch)[1])
            phase.tag("1 x 4096^2 PNG", timed(client, "POST", "/v1/predict", files=batch[:1])[1])


def big_json_client(base: str, phase: Phase, dim: int) -> None:
    row = "[" + ", ".join(["0.1234567890123"] * dim) + "]"
    body = ('{"features": [' + ", ".join([row] * (14_000_000 // len(row))) + "]}").encode()

    def chunks():  # the same body, streamed without a Content-Length
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    with httpx.Client(base_url=base, timeout=60.0) as client:
        headers = {"content-type": "application/json"}
        while phase.running():
            phase.tag("14 MB JSON", timed(client, "POST", "/v1/predict-features", content=body,
                                          headers=headers)[1])
            phase.tag("14 MB JSON chunked", timed(client, "POST", "/v1/predict-features",
                                                  content=chunks(), headers=headers)[1])


def stalled_client(port: int, phase: Phase, route: str) -> None:
    # a declared length within the route's cap, a few bytes of it, then silence
    length = 100_000 if route == "/v1/predict-features" else 1_000_000
    ctype = "application/json" if route == "/v1/predict-features" else "multipart/form-data; boundary=b"
    head = (f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + b"--b\r\n" + b"1, " * 30
    while phase.running():
        try:
            with socket.create_connection((HOST, port), timeout=60) as sock:
                sock.sendall(head)
                status = sock.recv(64).split(b" ", 2)[1].decode()  # waits for the 408
        except (OSError, IndexError):
            status = "closed"
        phase.tag(f"stalled {route}", status)


def run_phase(base: str, port: int, pid: int, args: argparse.Namespace, dim: int,
              adversarial: bool) -> Phase:
    rng = np.random.default_rng(2)
    features = json.dumps({"features": np.abs(rng.normal(size=(1, dim))).round(5).tolist()}).encode()
    image = png(rng.integers(0, 256, size=(28, 28), dtype=np.uint8))
    phase = Phase(args.seconds)
    threads = [threading.Thread(target=normal_client, args=(base, phase, features, image))
               for _ in range(args.clients)]
    threads += [threading.Thread(target=health_probe, args=(base, phase)),
                threading.Thread(target=rss_sampler, args=(pid, phase))]
    if adversarial:
        threads += [threading.Thread(target=big_images_client, args=(base, phase)),
                    threading.Thread(target=big_json_client, args=(base, phase, dim))]
        routes = ("/v1/predict-features", "/v1/predict")
        threads += [threading.Thread(target=stalled_client, args=(port, phase, routes[i % 2]))
                    for i in range(args.stalled)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return phase


def summarise(name: str, phase: Phase) -> int:
    def pct(rows: list[tuple[float, int]]) -> str:
        ms = np.percentile([r[0] * 1e3 for r in rows], [50, 99]) if rows else [np.nan] * 2
        return f"{len(rows):>6} {ms[0]:>8.1f} {ms[1]:>8.1f}"

    bad = [s for _, s in phase.normal + phase.health if s == 0 or s >= 500]
    other = [s for _, s in phase.normal + phase.health if 200 < s < 500]
    print(f"{name:<12} {pct(phase.normal)} {pct(phase.health)} "
          f"{len(bad):>4} {len(other):>5} {phase.peak_rss / 2**20:>8.0f}")
    return len(bad)


def adversarial_main(args: argparse.Namespace) -> int:
    from unseen.guard.http import Limits

    limits = Limits(body_timeout_s=args.body_timeout)
    with tempfile.TemporaryDirectory() as tmp:
        guard_dir = args.guard or synthetic_image_guard(Path(tmp) / "guard")
        port = free_port()
        base = f"http://{HOST}:{port}"
        code = ("import sys; from unseen.guard.http import Limits, serve; "
                "serve(sys.argv[1], port=int(sys.argv[2]), log_level='warning', "
                "limits=Limits(body_timeout_s=float(sys.argv[3])))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(guard_dir), str(port),
                                 str(args.body_timeout)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            health = wait_ready(base, proc)
            dim = health["predict_features_accepts"]["features"]
            warm = Phase(0)
            warm.deadline = time.monotonic() + 3
            normal_client(base, warm, json.dumps({"features": [[0.5] * dim]}).encode(),
                          png(np.zeros((28, 28), np.uint8)))
            baseline = rss_bytes(proc.pid)
            budget = baseline + limits.memory_bound_bytes()
            print(f"guard: {health['detector']} on mnist_convnet features ({dim}-d), "
                  f"{args.clients} normal clients, {args.seconds:g} s per phase, "
                  f"{args.stalled} stalled clients, body timeout {args.body_timeout:g} s, "
                  f"{limits.workers} workers, {HOST}")
            print(f"{'phase':<12} {'normal':>6} {'p50 ms':>8} {'p99 ms':>8} {'health':>6} "
                  f"{'p50 ms':>8} {'p99 ms':>8} {'5xx':>4} {'4xx':>5} {'RSS MiB':>8}")
            failed = summarise("quiet", run_phase(base, port, proc.pid, args, dim, False))
            attack = run_phase(base, port, proc.pid, args, dim, True)
            failed += summarise("adversarial", attack)
            peak = rss_bytes(proc.pid, "VmHWM")
            print(f"peak RSS (VmHWM) {peak / 2**20:.0f} MiB; budget {budget / 2**20:.0f} MiB "
                  f"(RSS after warm-up {baseline / 2**20:.0f} MiB + Limits.memory_bound_bytes() "
                  f"{limits.memory_bound_bytes() / 2**20:.0f} MiB)")
            print("adversaries: " + ", ".join(f"{k}: {v}" for k, v in sorted(attack.adversary.items())))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guard", type=Path, help="guard directory (default: synthetic)")
    parser.add_argument("--adversarial", action="store_true",
                        help="normal traffic with and without the adversarial mix (image guard)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per adversarial phase")
    parser.add_argument("--stalled", type=int, default=32, help="stalled clients")
    parser.add_argument("--body-timeout", type=float, default=5.0, help="server body timeout (s)")
    parser.add_argument("--requests", type=int, default=400, help="requests per batch size")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    args = parser.parse_args()
    if args.adversarial:
        return adversarial_main(args)
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
