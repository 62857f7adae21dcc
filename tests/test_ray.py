"""Extraction, sharded scoring and serving on a local Ray cluster, against the local code paths.

One 2-CPU cluster (127.0.0.1 only, no dashboard) serves the whole module and is shut down at the
end; the module is skipped when ray is not installed. The local reference runs decode in this
process (``num_workers=0``): the datasets' tricks fire in any other process.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn
from torch.utils.data import Dataset

import unseen
from unseen import Representation, detectors
from unseen.detectors.sharded import score_sharded
from unseen.extraction.runners import LocalRunner

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")

from unseen.extraction.ray import RayRunner  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    # workers import unseen, and this module's datasets and reducers, from where we do
    path = [str(Path(unseen.__file__).resolve().parents[1]), str(Path(__file__).parent)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(path)}})
    yield ray
    ray.shutdown()


class Images(Dataset):
    """Seeded random 3×8×8 images with labels; optional tricks for the worker processes.

    ``slow_row``: in any process but the creator's, every read leaves a file in ``marker``
    (a folder) and reading ``slow_row`` first waits until some row >= ``slow_until`` was read
    elsewhere, then sleeps ``slow_s`` seconds: the shard holding it finishes after another
    one, however loaded the machine. ``kill_row``: the first read of that row in another
    process (``marker`` does not exist yet) creates ``marker`` and kills the process.
    """

    def __init__(self, n: int, seed: int = 0, *, slow_row: int = -1, slow_until: int = 0,
                 slow_s: float = 0.0, kill_row: int = -1, marker: str = "") -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.seed, self.creator = seed, os.getpid()
        self.slow_row, self.slow_until, self.slow_s = slow_row, slow_until, slow_s
        self.kill_row, self.marker = kill_row, marker
        self.transform = None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        elsewhere = os.getpid() != self.creator
        if elsewhere and self.slow_row >= 0:
            self._wait_if_slow(i)
        if elsewhere and i == self.kill_row and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return self.x[i], int(self.y[i])

    def _wait_if_slow(self, i: int) -> None:
        Path(self.marker, str(i)).touch()
        if i != self.slow_row:
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            int(p.name) >= self.slow_until for p in Path(self.marker).iterdir()
        ):
            time.sleep(0.05)
        time.sleep(self.slow_s)

    def identity(self) -> str:
        return f"images:n={len(self)}:seed={self.seed}"


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3),
    ).eval()


def gap(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(2, 3))


def max_abs_diff(a: Representation, b: Representation) -> float:
    diffs = [np.abs(np.asarray(a.features) - b.features).max(),
             np.abs(np.asarray(a.logits) - b.logits).max()]
    diffs += [np.abs(np.asarray(a.layers[k]) - b.layers[k]).max() for k in a.layers]
    return float(max(diffs))


def assert_same(dist: Representation, local: Representation, tol: float = 1e-5) -> float:
    diff = max_abs_diff(dist, local)
    assert diff <= tol, f"distributed differs from local by {diff:.3g}"
    np.testing.assert_array_equal(dist.labels, local.labels)
    np.testing.assert_array_equal(dist.weight, local.weight)
    np.testing.assert_array_equal(dist.bias, local.bias)
    assert sorted(dist.layers) == sorted(local.layers)
    return diff


def test_distributed_equals_local_and_shares_its_cache_entry(cluster, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    data, model = Images(150), small_cnn()
    local = unseen.extract(model, data, batch_size=32, num_workers=0, layers={"0": gap}, progress=False)
    runner = RayRunner(num_actors=2, batch_size=16)
    dist = unseen.extract(model, data, batch_size=32, layers={"0": gap}, progress=False,
                          cache=tmp_path, runner=runner)
    diff = assert_same(dist, local)
    with capsys.disabled():
        print(f"\n[ray] distributed vs local extraction: max |diff| = {diff:.3g} "
              f"over features, logits and layers of 150 rows")
    assert {k: v for k, v in dist.meta.items() if k != "cache_key"} == local.meta
    assert len(runner.arrival_) >= 2  # the work really was split into shards

    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    again = unseen.extract(model, data, batch_size=32, layers={"0": gap}, progress=False,
                           cache=tmp_path)
    handle.remove()
    assert calls == []  # a cache hit: the local run did not run the model
    assert again.meta == dist.meta and again.meta["cache_key"] == dist.meta["cache_key"]
    assert len(list((tmp_path / "representations").iterdir())) == 1
    assert max_abs_diff(again, local) <= 1e-5


def test_row_order_survives_a_slow_first_shard(cluster, tmp_path: Path) -> None:
    data = Images(96, seed=1, slow_row=0, slow_until=16, slow_s=2.0, marker=str(tmp_path))
    model = small_cnn()
    local = unseen.extract(model, data, batch_size=16, num_workers=0, progress=False)
    runner = RayRunner(num_actors=2, batch_size=16)
    dist = unseen.extract(model, data, batch_size=16, progress=False, runner=runner)
    assert runner.arrival_[0] != 0  # rows 0-15 came back after other shards ...
    assert sorted(runner.arrival_) == list(range(0, 96, 16))
    assert_same(dist, local)  # ... yet sit first


def test_a_killed_actor_is_replaced_and_nothing_is_lost(cluster, tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    data = Images(80, seed=2, kill_row=40, marker=str(marker))
    model = small_cnn()
    local = unseen.extract(model, data, batch_size=16, num_workers=0, progress=False)
    dist = unseen.extract(model, data, batch_size=16, progress=False,
                          runner=RayRunner(num_actors=2, batch_size=16))
    assert marker.exists()  # an actor did die on row 40
    assert len(dist) == 80
    assert_same(dist, local)


def test_sharded_scoring_equals_one_process(cluster, toy_rep: Representation) -> None:
    for name, params in (("knn", {"k": 5}), ("mahalanobis", {})):
        det = detectors.create(name, **params).fit(toy_rep)
        whole = det.score(toy_rep)
        on_ray = score_sharded(det, toy_rep, runner=RayRunner(), shard_rows=70)
        here = score_sharded(det, toy_rep, runner=LocalRunner(), shard_rows=70)
        np.testing.assert_allclose(on_ray, whole, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(here, on_ray)


def test_sharded_scoring_refuses_what_cannot_be_split(toy_rep: Representation) -> None:
    with pytest.raises(detectors.NotFittedError):
        score_sharded(detectors.create("knn"), toy_rep)
    net = next(n for n in detectors.names() if "network" in detectors.get(n).requires)
    det = detectors.get(net)()
    det.fitted_ = True
    with pytest.raises(ValueError, match="runs the network again"):
        score_sharded(det, toy_rep)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_replicas_answer_like_the_single_process_service(cluster, tmp_path: Path,
                                                                toy_rep: Representation) -> None:
    from ray import serve

    from unseen.guard import Guard
    from unseen.guard.http import create_app
    from unseen.guard.ray_serve import REPLICA_HEADER, guard_application

    guard = Guard(detectors.create("knn", k=5)).fit(toy_rep.subset(slice(0, 200)))
    guard.calibrate(toy_rep.subset(slice(200, 300)), alpha=0.1)
    guard_dir = guard.save(tmp_path / "guard")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(guard_application(guard_dir, replicas=2, num_cpus=0.5), name="unseen-guard",
                  route_prefix="/")
        query = {"features": (toy_rep.features[::37] * np.float32(1.5)).tolist()}
        expected = TestClient(create_app(Guard.load(guard_dir))).post(
            "/v1/predict-features", json=query).json()
        replicas = set()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(16):
                r = http.post("/v1/predict-features", json=query)
                assert r.status_code == 200, r.text
                assert r.json() == expected
                replicas.add(r.headers[REPLICA_HEADER])
            metrics = http.get("/metrics")
        assert len(replicas) == 2  # both replicas answered, each the same
        assert metrics.status_code == 200 and metrics.headers[REPLICA_HEADER] in replicas
        # one replica's counters: some, not all, of the 16 queries' rows
        seen = int(float(re.search(r"^unseen_inputs_total (\S+)$", metrics.text, re.M)[1]))
        rows = len(query["features"])
        assert seen % rows == 0 and 0 < seen < 16 * rows
    finally:
        serve.shutdown()
