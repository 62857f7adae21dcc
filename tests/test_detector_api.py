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
