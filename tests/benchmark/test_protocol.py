"""The benchmark protocol: grid search on validation data, fit reuse, records, failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from unseen import Representation
from unseen.benchmark import BenchmarkSpec, DetectorFailedError, PreparedModel, SpecError, run
from unseen.benchmark.protocols.ood import grid_points, search
from unseen.detectors import registry
from unseen.detectors.base import Detector, Paper

_PAPER = Paper("test", "Nobody", "none", 2024)


class Column(Detector):
    """Score = features[:, axis] + shift; ``axis`` only affects scoring, ``shift`` the fit."""

    name = "test_column"
    paper = _PAPER
    requires = frozenset({"features"})
    grid: ClassVar[dict[str, list[Any]]] = {"shift": [0.0, 1.0], "axis": [1, 0, 2]}
    score_params = frozenset({"axis"})
    fits: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, shift: float = 0.0, axis: int = 0) -> None:
        self.shift = shift
        self.axis = axis

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")
        type(self).fits.append(self.get_params())
        self.offset_ = float(self.shift)

    def _score(self, rep: Representation) -> np.ndarray:
        if self.axis >= rep.features.shape[1]:
            raise ValueError(f"axis {self.axis} out of range")
        return rep.features[:, self.axis].astype(np.float64) + self.offset_


class Broken(Detector):
    name = "test_broken"
    paper = _PAPER
    requires = frozenset({"features"})

    def _score(self, rep: Representation) -> np.ndarray:
        raise RuntimeError("boom")


@pytest.fixture
def registered() -> Iterator[None]:
    Column.fits = []
    registry.register(Column)
    registry.register(Broken)
    yield
    registry._REGISTRY.pop(Column.name)
    registry._REGISTRY.pop(Broken.name)


def _reps(seed: int = 0) -> tuple[Representation, Representation, Representation]:
    """fit, ID val, OOD val: column 0 separates perfectly, 1 is noise, 2 is reversed."""
    rng = np.random.default_rng(seed)

    def rep(n: int, ood: bool) -> Representation:
        x = rng.normal(size=(n, 4))
        x[:, 0] = rng.uniform(2, 3, n) if ood else rng.uniform(0, 1, n)
        x[:, 2] = -x[:, 0] + 0.5 * rng.normal(size=n)
        return Representation(features=x.astype(np.float32))

    return rep(30, False), rep(40, False), rep(25, True)


def _auroc(id_s: np.ndarray, ood_s: np.ndarray) -> float:
    y = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
    return roc_auc_score(y, np.r_[id_s, ood_s])


def test_grid_points_is_the_cartesian_product_in_listed_order() -> None:
    pts = grid_points({"a": [1, 2], "b": ["x", "y", "z"]})
    assert pts == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    assert grid_points({}) == [{}]  # no hyperparameters: one point, the defaults


def test_search_picks_the_best_val_auroc_and_logs_every_point(registered: None) -> None:
    fit, val, ood_val = _reps()
    det, best, log = search(Column, fit, val, ood_val)
    assert best == {"shift": 0.0, "axis": 0}  # first shift on the tie (shift does not move AUROC)
    assert det.axis == 0 and det.shift == 0.0
    expected = {
        a: _auroc(val.features[:, a].astype(np.float64), ood_val.features[:, a].astype(np.float64))
        for a in (0, 1, 2)
    }
    assert expected[0] == 1.0 and expected[0] > max(expected[1], expected[2])
    assert [e["hparams"] for e in log] == grid_points(Column.grid)
    for entry in log:
        assert entry["val_auroc"] == pytest.approx(expected[entry["hparams"]["axis"]], abs=1e-12)
    assert [e["selected"] for e in log] == [False, True, False, False, False, False]


def test_search_ties_go_to_the_first_grid_point(registered: None, monkeypatch) -> None:
    fit, val, ood_val = _reps()
    for rep in (fit, val, ood_val):
        rep.features[:, 3] = rep.features[:, 0]  # column 3 is a copy of the perfect column 0
    monkeypatch.setattr(Column, "grid", {"shift": [0.0], "axis": [1, 3, 0, 2]})
    _, best, log = search(Column, fit, val, ood_val)
    assert best == {"shift": 0.0, "axis": 3}
    assert log[1]["val_auroc"] == log[2]["val_auroc"] == 1.0


def test_search_fits_once_per_non_score_params(registered: None) -> None:
    fit, val, ood_val = _reps()
    search(Column, fit, val, ood_val)
    assert Column.fits == [{"shift": 0.0, "axis": 1}, {"shift": 1.0, "axis": 1}]


def test_invalid_grid_points_are_skipped_and_listed(registered: None, monkeypatch) -> None:
    fit, val, ood_val = _reps()
    monkeypatch.setattr(Column, "grid", {"shift": [-1.0, 0.0], "axis": [9, 2]})
    _, best, log = search(Column, fit, val, ood_val)
    assert best == {"shift": 0.0, "axis": 2}
    assert ["error" in e for e in log] == [True, True, True, False]
    assert "shift must be >= 0" in log[0]["error"] and "axis 9" in log[2]["error"]
    monkeypatch.setattr(Column, "grid", {"shift": [-1.0], "axis": [0]})
    with pytest.raises(ValueError, match="every grid point failed"):
        search(Column, fit, val, ood_val)


# ----------------------------------------------------------------------------- run()


class _Identity(nn.Module):
    """A 'classifier' whose penultimate features are its inputs (the head's input)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def _spec(sizes: dict[str, int], seed: int = 0) -> BenchmarkSpec:
    rng = np.random.default_rng(seed)

    def data(n: int, ood: bool, centre: float = 2.5) -> TensorDataset:
        x = rng.normal(size=(n, 4)).astype(np.float32)
        x[:, 0] = rng.normal(centre if ood else 0.0, 1.0, n)
        y = np.full(n, -1) if ood else rng.integers(0, 3, n)
        return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    torch.manual_seed(0)
    model = _Identity(4, 3)
    return BenchmarkSpec(
        name="toy",
        model=lambda cache_dir: PreparedModel(model, head="head"),
        fit=data(50, False),
        val=data(40, False),
        test=data(60, False),
        ood_val=data(30, True),
        near={"a": data(sizes["a"], True, 1.0), "b": data(sizes["b"], True, 0.5)},
        far={"c": data(sizes["c"], True, 4.0)},
    )


def test_run_records_per_dataset_and_unweighted_group_means(registered: None) -> None:
    spec = _spec({"a": 10, "b": 200, "c": 20})
    result = run(spec, ["test_column"], cache=False, progress=False)
    by = {(r["group"], r["dataset"]): r for r in result.records}
    assert set(by) == {("near", "a"), ("near", "b"), ("near", "mean"), ("far", "c"),
                       ("far", "mean")}
    s = result.scores["test_column"]
    x = {k: ds.tensors[0].numpy().astype(np.float64) for k, ds in
         {"id": spec.test, "a": spec.near["a"], "b": spec.near["b"], "c": spec.far["c"]}.items()}
    axis = by[("near", "a")]["hparams"]["axis"]
    shift = by[("near", "a")]["hparams"]["shift"]
    for k in ("id", "a", "b", "c"):
        np.testing.assert_allclose(s[k], x[k][:, axis] + shift, rtol=1e-6)
    a, b = _auroc(s["id"], s["a"]), _auroc(s["id"], s["b"])
    assert by[("near", "a")]["auroc"] == pytest.approx(a, abs=1e-12)
    assert by[("near", "mean")]["auroc"] == pytest.approx((a + b) / 2, abs=1e-12)
    pooled = _auroc(s["id"], np.r_[s["a"], s["b"]])
    assert abs(pooled - (a + b) / 2) > 1e-3  # sizes differ, so a weighted mean would differ
    for metric in ("aupr_in", "aupr_out", "fpr95_id", "fpr95_ood"):
        mean = (by[("near", "a")][metric] + by[("near", "b")][metric]) / 2
        assert by[("near", "mean")][metric] == pytest.approx(mean, abs=1e-12)
    assert result.groups == {"near": ["a", "b"], "far": ["c"]}
    assert set(result.timings) == {"test_column"}
    acc = np.mean(np.argmax(spec.model(None).model(spec.test.tensors[0]).detach().numpy(), 1)
                  == spec.test.tensors[1].numpy())
    assert result.id_accuracy == pytest.approx(acc)


def test_a_failing_detector_stops_the_run_unless_keep_going(registered: None) -> None:
    spec = _spec({"a": 10, "b": 20, "c": 20})
    with pytest.raises(DetectorFailedError, match="'test_broken'.*RuntimeError: boom"):
        run(spec, ["test_column", "test_broken"], cache=False, progress=False)
    result = run(spec, ["test_broken", "test_column"], cache=False, progress=False,
                 keep_going=True)
    assert result.meta["failures"] == {"test_broken": "RuntimeError: boom"}
    assert {r["detector"] for r in result.records} == {"test_column"}
    assert "test_broken" not in result.search and "test_broken" not in result.scores


def test_run_is_deterministic(registered: None) -> None:
    # knn and weiper-free picks: a randomised detector (nnguide subsamples its bank) included
    names = ["msp", "energy", "knn", "vim", "nnguide", "test_column"]
    first = run(_spec({"a": 30, "b": 40, "c": 30}), names, cache=False, progress=False,
                keep_going=True)
    second = run(_spec({"a": 30, "b": 40, "c": 30}), names, cache=False, progress=False,
                 keep_going=True)
    assert first.records and first.records == second.records
    assert first.search == second.search
    assert first.meta["failures"] == second.meta["failures"]
    done = {r["detector"] for r in first.records} | set(first.meta["failures"])
    assert done == set(names)


def test_spec_rejects_ood_val_that_overlaps_a_test_set() -> None:
    from unseen.data.digits import ArrayImages

    imgs = np.arange(3 * 64, dtype=np.float32).reshape(3, 8, 8) % 17

    def ds(name: str, idx: list[int], label: int) -> ArrayImages:
        return ArrayImages(name, imgs[idx], np.full(len(idx), label), [str(i) for i in idx])

    ok = dict(model=lambda c: None, fit=ds("f", [0], 0), val=ds("v", [0], 0),
              test=ds("t", [1], 0))
    BenchmarkSpec(name="x", ood_val=ds("o", [2], -1), far={"n": ds("n", [0], -1)}, **ok)
    with pytest.raises(SpecError, match="ood_val and far/n share 1 sample"):
        BenchmarkSpec(name="x", ood_val=ds("o", [2], -1), far={"n": ds("n", [2], -1)}, **ok)
    with pytest.raises(SpecError, match="reserved"):
        BenchmarkSpec(name="x", ood_val=ds("o", [2], -1), far={"mean": ds("n", [0], -1)}, **ok)


def test_csid_sets_report_only_id_accuracy(registered: None) -> None:
    spec = _spec({"a": 10, "b": 20, "c": 20})
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    y = torch.tensor([0, 1, 2, 0])
    spec.csid = {"shifted": TensorDataset(x, y)}
    result = run(spec, ["test_column"], cache=False, progress=False)
    predicted = spec.model(None).model(x).argmax(1)
    assert result.meta["csid_accuracy"] == {"shifted": (predicted == y).float().mean().item()}
    assert "shifted" not in {r["dataset"] for r in result.records}


class _Named(TensorDataset):
    def identity(self) -> str:
        return "named:" + ",".join(str(float(t.double().sum())) for t in self.tensors)


class Probe(Detector):
    """Runs the network: score = −(max logit · k) from a fresh forward pass."""

    name = "test_probe"
    paper = _PAPER
    requires = frozenset({"network"})
    grid: ClassVar[dict[str, list[Any]]] = {"k": [1.0, -1.0]}
    passes = 0

    def __init__(self, k: float = 1.0) -> None:
        self.k = k

    def _score(self, rep: Representation) -> np.ndarray:
        out = []
        for x, _ in rep.source.batches():
            type(self).passes += 1
            out.append(rep.source.model(x).detach().double().numpy().max(axis=1))
        return -self.k * np.concatenate(out)


def test_network_detector_outcomes_are_restored_from_the_cache(registered: None, tmp_path) -> None:
    registry.register(Probe)
    try:
        spec = _spec({"a": 10, "b": 20, "c": 20})
        for split in ("fit", "val", "test", "ood_val"):
            setattr(spec, split, _Named(*getattr(spec, split).tensors))
        for group in ("near", "far"):
            getattr(spec, group).update({k: _Named(*d.tensors) for k, d in getattr(spec, group).items()})
        names = ["test_probe", "test_column"]
        first = run(spec, names, cache=tmp_path, progress=False)
        passes, fits = Probe.passes, len(Column.fits)
        assert passes > 0 and first.meta["restored"] == {}
        second = run(spec, names, cache=tmp_path, progress=False)
        assert Probe.passes == passes  # the network did not run again for test_probe
        assert len(Column.fits) > fits  # cache-based detectors are scored afresh
        assert second.records == first.records and second.search == first.search
        for k, v in first.scores["test_probe"].items():
            np.testing.assert_array_equal(second.scores["test_probe"][k], v)
        assert set(second.meta["restored"]) == {"test_probe"}
        # A damaged entry is a miss; another seed is another key; no cache stores nothing.
        for path in (tmp_path / "outcomes").glob("*.json"):
            path.write_text("{not json")
        third = run(spec, names, cache=tmp_path, progress=False)
        assert Probe.passes > passes and third.records == first.records
        passes = Probe.passes
        run(spec, names, cache=tmp_path, progress=False, seed=1)
        assert Probe.passes > passes
        assert len(list((tmp_path / "outcomes").glob("*.json"))) == 2
        passes = Probe.passes
        run(spec, names, cache=False, progress=False)
        assert Probe.passes > passes
    finally:
        registry._REGISTRY.pop(Probe.name)
