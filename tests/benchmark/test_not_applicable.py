"""Not applicable is not a failure (issue #16): declared refusals are listed, and the run goes on."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
from test_protocol import _PAPER, Column, _spec

from unseen import Representation
from unseen.benchmark import DetectorFailedError, run, write_outputs
from unseen.benchmark.result import COLUMNS
from unseen.detectors import create, registry
from unseen.detectors.base import Detector, MissingInputError, NotApplicableError

REASON = "test_refuses needs a head with 2 classes or more"


class Refuses(Detector):
    """Refuses every model at fit, as a declared requirement."""

    name = "test_refuses"
    paper = _PAPER
    requires = frozenset({"features"})

    def _fit(self, train: Representation, val: Representation | None) -> None:
        raise NotApplicableError(REASON)


class Mixed(Detector):
    """One grid point refused by a requirement, the other invalid: a failure, not a refusal."""

    name = "test_mixed"
    paper = _PAPER
    requires = frozenset({"features"})
    grid: ClassVar[dict[str, list[Any]]] = {"mode": ["refuse", "invalid"]}

    def __init__(self, mode: str = "refuse") -> None:
        self.mode = mode

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if self.mode == "refuse":
            raise NotApplicableError("test_mixed refuses")
        raise ValueError("test_mixed: invalid value")


@pytest.fixture
def registered() -> Iterator[None]:
    for cls in (Column, Refuses, Mixed):
        registry.register(cls)
    yield
    for cls in (Column, Refuses, Mixed):
        registry._REGISTRY.pop(cls.name)


def test_declared_refusals_are_not_applicable_errors() -> None:
    assert issubclass(MissingInputError, NotApplicableError)
    assert issubclass(NotApplicableError, ValueError)  # callers catching bad input still do
    x = np.array([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]], dtype=np.float32)
    rep = Representation(features=x, logits=x[:, :2], weight=np.eye(2, 3, dtype=np.float32),
                         bias=np.zeros(2, dtype=np.float32))
    det = create("scale", percentile=10).fit(rep)
    with pytest.raises(NotApplicableError, match="non-negative"):
        det.score(rep)


def test_run_lists_not_applicable_detectors_and_goes_on(registered: None, tmp_path) -> None:
    spec = _spec({"a": 10, "b": 20, "c": 20})  # features of a linear model: negative values
    names = ["test_refuses", "scale", "ash", "test_column"]
    result = run(spec, names, cache=False, progress=False)  # no keep_going: nothing failed
    assert set(result.not_applicable) == {"test_refuses", "scale"}
    assert result.not_applicable["test_refuses"] == REASON
    assert result.not_applicable["scale"].startswith("scale needs non-negative (post-ReLU) features")
    assert result.meta["failures"] == {}
    ranked = {r["detector"] for r in result.records}
    assert ranked == {"ash", "test_column"}
    for name in result.not_applicable:
        assert name not in result.timings and name not in result.search and name not in result.scores
    # ASH-S refuses these features too, but ASH-P and -B apply: only those grid points are dropped
    ash_log = result.search["ash"]
    refused = [p for p in ash_log if "error" in p]
    assert refused and all(p["hparams"]["variant"] == "s" and "NotApplicableError" in p["error"]
                           for p in refused)
    assert all("val_auroc" in p for p in ash_log if p["hparams"]["variant"] != "s")

    files = write_outputs(result, tmp_path)
    saved = json.loads(files["results.json"].read_text())
    assert saved["not_applicable"] == result.not_applicable
    assert {r["detector"] for r in saved["records"]} == ranked  # no fake records
    rows = list(csv.DictReader(io.StringIO(files["results.csv"].read_text())))
    assert list(rows[0]) == [*COLUMNS, "not_applicable"]
    na_rows = {r["detector"]: r for r in rows if r["not_applicable"]}
    assert set(na_rows) == {"test_refuses", "scale"}
    assert na_rows["test_refuses"]["not_applicable"] == REASON
    assert all(na_rows["scale"][m] == "" for m in ("auroc", "fpr95_id", "dataset"))
    page = files["report.html"].read_text()
    assert "2 detector(s) do not apply to this model or data" in page
    assert f"<b>test_refuses</b>: <code>{REASON}</code>" in page


def test_a_refusal_mixed_with_a_genuine_error_is_a_failure(registered: None) -> None:
    spec = _spec({"a": 10, "b": 20, "c": 20})
    with pytest.raises(DetectorFailedError, match="every grid point failed"):
        run(spec, ["test_mixed"], cache=False, progress=False)
    result = run(spec, ["test_mixed", "test_column"], cache=False, progress=False, keep_going=True)
    assert result.not_applicable == {}
    assert "test_mixed" in result.meta["failures"]


def test_without_refusals_the_csv_keeps_its_columns(registered: None) -> None:
    result = run(_spec({"a": 10, "b": 20, "c": 20}), ["test_column"], cache=False, progress=False)
    assert result.not_applicable == {}
    assert result.to_csv().splitlines()[0] == ",".join(COLUMNS)
    assert result.to_json()["not_applicable"] == {}
