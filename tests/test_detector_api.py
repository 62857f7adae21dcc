"""The contract every detector follows, checked across the whole registry."""

from __future__ import annotations

import numpy as np
import pytest

import unseen
from unseen import Representation
from unseen.detectors import Detector, MissingInputError, NotFittedError, UnknownDetectorError
from unseen.detectors.base import INPUTS, logsumexp, softmax


@pytest.mark.parametrize("name", unseen.detectors.names())
def test_every_detector_declares_paper_inputs_and_a_grid_of_real_hyperparameters(name) -> None:
    cls = unseen.detectors.get(name)
    assert cls.name == name
    assert cls.paper.title and cls.paper.year >= 2000 and cls.paper.venue
    assert cls.requires and cls.requires <= INPUTS and cls.fit_requires <= INPUTS
    params = set(cls().get_params())
    assert set(cls.grid) <= params, f"{name} grid names {set(cls.grid) - params} are not in __init__"
    assert cls.score_params <= params
    for hp, values in cls.grid.items():
        assert values, f"{name}: empty grid for {hp}"
    assert cls.__doc__ and len(cls.__doc__) > 40


def test_registry_suggests_close_names_for_typos() -> None:
    with pytest.raises(UnknownDetectorError, match="did you mean mahalanobis"):
        unseen.detectors.create("mahalanobs")


def test_scoring_before_fitting_says_so(toy_rep) -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        unseen.detectors.create("knn").score(toy_rep)


def test_missing_inputs_are_named(toy_rep) -> None:
    no_labels = Representation(features=toy_rep.features)
    with pytest.raises(MissingInputError, match="mahalanobis.fit needs labels"):
        unseen.detectors.create("mahalanobis").fit(no_labels)
    det = unseen.detectors.create("msp").fit(toy_rep)
    with pytest.raises(MissingInputError, match="msp.score needs logits"):
        det.score(no_labels)


def test_dimension_mismatch_and_empty_input_are_refused(toy_rep) -> None:
    det = unseen.detectors.create("knn", k=5).fit(toy_rep)
    with pytest.raises(ValueError, match="fitted on 8-dimensional features but got 4"):
        det.score(Representation(features=np.zeros((2, 4))))
    with pytest.raises(ValueError, match="empty"):
        det.score(toy_rep.subset(slice(0, 0)))
    with pytest.raises(TypeError, match="expects a Representation"):
        det.score(toy_rep.features)


def test_hyperparameters_follow_sklearn_rules() -> None:
    det = unseen.detectors.create("energy", temperature=2.0)
    assert det.get_params() == {"temperature": 2.0}
    assert det.clone(temperature=3.0).get_params() == {"temperature": 3.0}
    assert det.set_params(temperature=5.0) is det and det.temperature == 5.0
    with pytest.raises(ValueError, match="has no hyperparameter"):
        det.set_params(T=1.0)
    assert repr(det) == "Energy(temperature=5.0)"


def test_chunked_scoring_equals_one_pass(toy_rep) -> None:
    for name in ("msp", "energy", "mahalanobis", "knn"):
        det = unseen.detectors.create(name).fit(toy_rep)
        whole = det.score(toy_rep)
        det.chunk_size = 7  # instance attribute shadows the class default
        np.testing.assert_allclose(det.score(toy_rep), whole, rtol=1e-12, atol=1e-12)


def test_non_finite_scores_are_an_error_not_an_answer(toy_rep) -> None:
    class Broken(Detector):
        name = "broken"
        requires = frozenset({"features"})

        def _score(self, rep):
            return np.full(len(rep), np.nan)

    with pytest.raises(FloatingPointError, match="non-finite"):
        Broken().fit(toy_rep).score(toy_rep)


def test_fitted_state_round_trip(toy_rep) -> None:
    det = unseen.detectors.create("mahalanobis").fit(toy_rep)
    state = det.fitted_state()
    assert all(k.endswith("_") for k in state)
    again = type(det).from_state(det.get_params(), state)
    np.testing.assert_array_equal(again.score(toy_rep), det.score(toy_rep))
    with pytest.raises(NotFittedError):
        unseen.detectors.create("msp").fitted_state()


def test_softmax_and_logsumexp_are_stable_on_huge_logits() -> None:
    z = np.array([[1000.0, 1000.0, -1000.0]])
    np.testing.assert_allclose(softmax(z), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(logsumexp(z), [1000.0 + np.log(2.0)])
    np.testing.assert_allclose(logsumexp(z, temperature=10.0), [10 * (100 + np.log(2.0))])


def test_constraints_are_checked_once_at_fit_and_set_params(toy_rep) -> None:
    # Construction never validates (scikit-learn's rule); fit does, with the detector's name.
    det = unseen.detectors.create("energy", temperature=-1.0)
    with pytest.raises(ValueError, match="energy temperature must be a finite number > 0, got -1.0"):
        det.fit(toy_rep)
    with pytest.raises(TypeError, match=r"knn k must be an integer >= 1, got '5' \(str\)"):
        unseen.detectors.create("knn", k="5").fit(toy_rep)
    # set_params refuses an invalid value and keeps every value as it was
    det = unseen.detectors.create("weiper", n_bins=10, smoothing=3, smoothing_perturbed=4).fit(toy_rep)
    with pytest.raises(ValueError, match="weiper smoothing=11 exceeds n_bins=10"):
        det.set_params(lambda_1=1.0, smoothing=11)
    assert (det.lambda_1, det.smoothing) == (2.5, 3)
    # a fitted state restored with bad hyperparameters is refused as fit would refuse it
    with pytest.raises(ValueError, match="weiper lambda_2 must be a finite number >= 0"):
        type(det).from_state({**det.get_params(), "lambda_2": -1.0}, det.fitted_state())


def test_score_grid_equals_scoring_point_by_point_and_reports_bad_points(toy_rep) -> None:
    det = unseen.detectors.create("energy").fit(toy_rep)
    got = det.score_grid(toy_rep, [{"temperature": 2.0}, {"temperature": 0.0}, {}])
    np.testing.assert_array_equal(got[0], -logsumexp(toy_rep.logits, 2.0))
    assert isinstance(got[1], ValueError) and "temperature" in str(got[1])
    np.testing.assert_array_equal(got[2], det.score(toy_rep))
    assert det.temperature == 1.0
    with pytest.raises(ValueError, match="not score-only"):
        unseen.detectors.create("vra").fit(toy_rep).score_grid(toy_rep, [{"low": 50}])


def test_registry_table_matches_the_registered_classes() -> None:
    from unseen.detectors import registry

    loaded = registry.load_all()
    assert sorted(loaded) == sorted(registry.MODULES) == unseen.detectors.names()
    for name, cls in loaded.items():
        assert cls.name == name
        assert cls.__module__ == f"unseen.detectors.{registry.MODULES[name]}"


def test_importing_the_detectors_loads_neither_torch_nor_faiss() -> None:
    import subprocess
    import sys

    code = (
        "import sys, unseen.detectors as d\n"
        "assert len(d.names()) >= 32\n"
        "d.create('msp')\n"
        "print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))\n"
        "d.create('knn'); d.create('odin')\n"
        "print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # faiss is imported only when knn first searches, torch with the network family
    assert done.stdout.split("\n")[:2] == ["[]", "['torch']"]


def test_outcome_key_hashes_the_method_file_and_its_shared_helpers_only() -> None:
    from unseen.benchmark.outcomes import code_files

    files = {n: [p.relative_to(p.parents[1]).as_posix() for p in code_files(unseen.detectors.get(n))]
             for n in ("odin", "gram", "adascale_a", "adascale_l")}
    assert files["odin"] == ["network/_common.py", "network/odin.py"]
    assert files["gram"] == ["network/_common.py", "network/gram.py"]
    assert files["adascale_a"] == files["adascale_l"] == ["network/_common.py", "network/adascale.py"]
