"""Rules every registered detector follows, checked across the whole registry: scores do not
depend on whether a grid search (or ``score_grid``) ran first; one label rule at fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from zoo import network_reps, toy_reps

from unseen.benchmark.protocols.ood import grid_points, search
from unseen.detectors import create, get, names
from unseen.representation import Representation, RepresentationError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors: thread start-up dominates, and the CI machine's cores are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def zoo() -> dict[str, dict[str, Representation]]:
    return {"toy": toy_reps(), "network": network_reps()}


def splits(zoo, name: str) -> dict[str, Representation]:
    return zoo["network" if "network" in get(name).requires else "toy"]


def spread(n: int, most: int) -> list[int]:
    """At most ``most`` indices of range(n), the first and the last included."""
    return sorted({round(i * (n - 1) / max(1, most - 1)) for i in range(min(n, most))})


def outcome(det_or_error):
    """Scores, or (type, message) of the ValueError that refused them."""
    if isinstance(det_or_error, ValueError):
        return (type(det_or_error), str(det_or_error))
    return det_or_error


def assert_same(a, b) -> None:
    if isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b
    else:
        np.testing.assert_array_equal(a, b)


def fresh_scores(name: str, point: dict, reps: dict[str, Representation]):
    cls = get(name)
    try:
        det = cls(**point).fit(reps["train"], reps["val"] if cls.needs_val else None)
        return det.score(reps["test"])
    except ValueError as exc:
        return outcome(exc)


@pytest.mark.parametrize("name", names())
def test_scores_do_not_depend_on_a_grid_search_having_run(zoo, name) -> None:
    cls = get(name)
    reps = splits(zoo, name)
    fit_val = reps["val"] if cls.needs_val else None
    points = grid_points(cls.search_space(reps["train"]))
    chosen = [points[i] for i in spread(len(points), 6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tempscale on separable toy data
        before = [fresh_scores(name, p, reps) for p in chosen]
        # A whole grid search on the same representations first, then each point afresh.
        search(cls, reps["train"], reps["val"], reps["ood_val"])
        for p, expected in zip(chosen, before, strict=True):
            assert_same(fresh_scores(name, p, reps), expected)
        # One fit per group of points that differ only in score-only hyperparameters, scored
        # with score_grid (validation first, as the search does), then point by point.
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(chosen):
            key = tuple((k, repr(v)) for k, v in p.items() if k not in cls.score_params)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            det = cls(**cls.shared_fit([chosen[i] for i in members]))
            try:
                det.fit(reps["train"], fit_val)
            except ValueError:
                # the shared fit is refused (its message names the fit point's values): so is
                # every point of the group on its own
                assert all(isinstance(before[i], tuple) for i in members)
                continue
            held = det.get_params()
            score_points = [{k: v for k, v in chosen[i].items() if k in cls.score_params}
                            for i in members]
            det.score_grid(reps["val"], score_points)
            got = det.score_grid(reps["test"], score_points)
            assert det.get_params() == held
            for i, point, scores in zip(members, score_points, got, strict=True):
                assert_same(outcome(scores), before[i])
                if not isinstance(before[i], tuple):
                    assert_same(det.set_params(**point).score(reps["test"]), before[i])


def with_labels(rep: Representation, labels: np.ndarray) -> Representation:
    out = rep.subset(slice(None))
    out.labels = labels
    return out


@pytest.mark.parametrize("name", names())
def test_fitting_on_data_labelled_ood_is_refused(zoo, name) -> None:
    # The one label rule: fit data are in-distribution, whether or not the detector reads labels.
    cls = get(name)
    reps = splits(zoo, name)
    labels = reps["train"].labels.copy()
    labels[[1, 4]] = -1
    bad = with_labels(reps["train"], labels)
    with pytest.raises(ValueError, match=rf"{name}: the training data contains 2 OOD labels \(-1\)"):
        create(name).fit(bad, reps["val"])
    if cls.needs_val:
        labels = reps["val"].labels.copy()
        labels[0] = -1
        with pytest.raises(ValueError, match="the validation data contains 1 OOD labels"):
            create(name).fit(reps["train"], with_labels(reps["val"], labels))


@pytest.mark.parametrize("name", names())
def test_labels_beyond_the_head_are_refused(zoo, name) -> None:
    cls = get(name)
    train = splits(zoo, name)["train"]
    labels = train.labels.copy()
    labels[0] = 3  # the head has classes 0, 1, 2
    if "logits" in cls.requires | cls.fit_requires or "network" in cls.requires:
        # the representation itself refuses labels beyond its logits' classes
        with pytest.raises(RepresentationError, match="labels reach 3 but logits have only 3"):
            with_labels(train, labels)
        return
    head_only = Representation(features=train.features, labels=labels, weight=train.weight,
                               bias=train.bias)
    with pytest.raises(ValueError, match="labels reach 3 but the classifier has only 3 classes"):
        create(name).fit(head_only)


@pytest.mark.parametrize("name", ["vim", "residual"])
def test_subspace_detectors_refuse_too_few_samples(zoo, name) -> None:
    # One sample used to give ViM scores around 4e16 (a residual of rounding noise).
    train = zoo["toy"]["train"]
    for n in (1, 4):  # dim = 4 (half of 8 features): at least 5 samples
        with pytest.raises(ValueError, match=f"needs more training samples than the principal "
                                             f"dimension dim=4, got {n}"):
            create(name).fit(train.subset(slice(0, n)))
    scores = create(name).fit(train.subset(slice(0, 5))).score(zoo["toy"]["test"])
    assert np.abs(scores).max() < 1e3
