"""Value tests for the logit-based detectors: msp, mls, energy, tempscale, gen, klm, entropy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import log_softmax

from unseen.detectors import MissingInputError, create
from unseen.representation import Representation

LN2, LN3 = math.log(2.0), math.log(3.0)


def logits_rep(logits, labels=None) -> Representation:
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    return Representation(logits=np.asarray(logits, dtype=np.float64), labels=labels)


def random_rep(seed: int, n: int = 40, c: int = 5, scale: float = 3.0) -> Representation:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(n, c))
    # Labels drawn from the model's own softmax, so the data are a plausible classifier output.
    p = np.exp(log_softmax(logits, axis=1))
    labels = np.array([rng.choice(c, p=row) for row in p])
    return logits_rep(logits, labels)


def fitted(name: str, seed: int = 0, **hp):
    det = create(name, **hp)
    return det.fit(random_rep(seed), random_rep(seed + 100))


# -- msp / mls / energy ------------------------------------------------------------------------
def test_msp_hand_computed() -> None:
    # softmax(0, ln 3) = (1/4, 3/4); softmax(ln 2, ln 2, 0) = (2/5, 2/5, 1/5)
    det = create("msp").fit(logits_rep([[0.0, 1.0, 2.0]]))
    np.testing.assert_allclose(det.score(logits_rep([[0.0, LN3, -50.0]])), [-0.75], rtol=1e-12)
    np.testing.assert_allclose(det.score(logits_rep([[LN2, LN2, 0.0]])), [-0.4], rtol=1e-12)


def test_msp_is_shift_invariant_and_bounded() -> None:
    det = create("msp").fit(random_rep(0))
    rep = random_rep(1)
    shifted = logits_rep(rep.logits + 123.0)
    np.testing.assert_allclose(det.score(rep), det.score(shifted), rtol=1e-12)
    s = det.score(rep)
    assert np.all(s <= -1.0 / 5 + 1e-12) and np.all(s >= -1.0)


def test_mls_hand_computed() -> None:
    det = create("mls").fit(logits_rep([[0.0, 1.0]]))
    np.testing.assert_allclose(det.score(logits_rep([[1.0, 3.0], [-2.0, -5.0]])), [-3.0, 2.0])


@pytest.mark.parametrize(("temperature", "logits", "expected"), [
    (1.0, [0.0, LN3], -math.log(4.0)),          # −log(1 + 3)
    (2.0, [0.0, 2 * LN3], -2 * math.log(4.0)),  # −2 log(1 + exp(ln 3))
    (1.0, [1000.0, 1000.0], -(1000.0 + LN2)),   # stable for huge logits
])
def test_energy_hand_computed(temperature: float, logits: list[float], expected: float) -> None:
    det = create("energy", temperature=temperature).fit(logits_rep([logits]))
    np.testing.assert_allclose(det.score(logits_rep([logits])), [expected], rtol=1e-12)


def test_energy_rejects_bad_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        create("energy", temperature=0.0).fit(random_rep(0))


# -- entropy -----------------------------------------------------------------------------------
def test_entropy_hand_computed() -> None:
    det = create("entropy").fit(random_rep(0, c=2))
    got = det.score(logits_rep([[0.0, LN3], [1.0, 1.0], [0.0, 1000.0]]))
    expected = [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), LN2, 0.0]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)


def test_entropy_matches_loop_reference_and_max_is_uniform() -> None:
    rep = random_rep(3, c=7)
    got = create("entropy").fit(rep).score(rep)
    for row, s in zip(rep.logits, got, strict=True):
        e = [math.exp(v) for v in row]
        p = [v / sum(e) for v in e]
        assert s == pytest.approx(-sum(q * math.log(q) for q in p), rel=1e-10)
    assert np.all(got <= math.log(7) + 1e-12)
    uniform = create("entropy").fit(rep).score(logits_rep(np.zeros((1, 7))))
    np.testing.assert_allclose(uniform, [math.log(7)], rtol=1e-12)


# -- gen ---------------------------------------------------------------------------------------
def gen_reference(logits: np.ndarray, gamma: float, m: int) -> list[float]:
    out = []
    for row in logits:
        e = [math.exp(v - max(row)) for v in row]
        p = sorted((v / sum(e) for v in e), reverse=True)[:m]
        out.append(sum(q**gamma * (1 - q) ** gamma for q in p))
    return out


def test_gen_hand_computed() -> None:
    det = create("gen", gamma=1.0, M=2).fit(random_rep(0, c=3))
    # p = (1/4, 3/4): 2 · (1/4 · 3/4) = 0.375
    np.testing.assert_allclose(det.score(logits_rep([[0.0, LN3, -800.0]])), [0.375], atol=1e-12)
    det = create("gen", gamma=2.0, M=2).fit(random_rep(0, c=3))
    # p = (0.5, 0.3, 0.2), top two: (0.5·0.5)² + (0.3·0.7)² = 0.0625 + 0.0441
    got = det.score(logits_rep([np.log([0.2, 0.5, 0.3])]))
    np.testing.assert_allclose(got, [0.1066], rtol=1e-12)


@pytest.mark.parametrize(("gamma", "m"), [(0.1, 1), (0.1, 3), (0.5, 5), (10.0, 2), (0.01, 5)])
def test_gen_matches_loop_reference(gamma: float, m: int) -> None:
    rep = random_rep(4, c=5)
    got = create("gen", gamma=gamma, M=m).fit(rep).score(rep)
    np.testing.assert_allclose(got, gen_reference(rep.logits, gamma, m), rtol=1e-10)


def test_gen_m_above_classes_uses_all_classes() -> None:
    rep = random_rep(5, c=5)
    big = create("gen", M=100).fit(rep).score(rep)
    np.testing.assert_allclose(big, create("gen", M=5).fit(rep).score(rep), rtol=1e-12)


def test_gen_is_higher_for_flatter_predictions() -> None:
    det = create("gen").fit(random_rep(0, c=4))
    s = det.score(logits_rep([[10.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert s[0] < s[1] < s[2]


def test_gen_search_space_caps_m_at_classes() -> None:
    cls = type(create("gen"))
    assert cls.search_space(random_rep(0, c=60))["M"] == [10, 50, 60]
    assert cls.search_space(random_rep(0, c=5))["M"] == [5]
    assert cls.search_space(random_rep(0, c=5))["gamma"] == [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]


@pytest.mark.parametrize("hp", [{"gamma": 0.0}, {"M": 0}, {"M": 2.5}])
def test_gen_rejects_bad_hyperparameters(hp: dict) -> None:
    with pytest.raises(ValueError, match="gen"):
        create("gen", **hp).fit(random_rep(0))


# -- tempscale ---------------------------------------------------------------------------------
def nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(-np.mean(log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels]))


def test_tempscale_with_unit_temperature_equals_msp() -> None:
    det = fitted("tempscale")
    state = det.fitted_state() | {"temperature_": 1.0}
    unit = type(det).from_state(det.get_params(), state)
    rep = random_rep(7)
    np.testing.assert_allclose(unit.score(rep), create("msp").fit(rep).score(rep), rtol=1e-12)


def test_tempscale_scores_with_the_fitted_temperature() -> None:
    det = fitted("tempscale")
    state = det.fitted_state() | {"temperature_": 2.0}
    scaled = type(det).from_state(det.get_params(), state)
    # softmax((0, 2 ln 3) / 2) = (1/4, 3/4)
    np.testing.assert_allclose(scaled.score(logits_rep([[0.0, 2 * LN3, -50.0, -50.0, -50.0]])),
                               [-0.75], rtol=1e-9)


def test_tempscale_temperature_minimises_validation_nll() -> None:
    val = random_rep(11, n=300)
    det = create("tempscale").fit(random_rep(10), val)
    t = det.temperature_
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 801))
    best = min(nll(val.logits, val.labels, g) for g in grid)
    assert nll(val.logits, val.labels, t) <= best + 1e-9
    # First-order optimality in β = 1/T: E_p[z] − z_y averages to zero.
    p = np.exp(log_softmax(val.logits / t, axis=1))
    grad = np.mean((p * val.logits).sum(1) - val.logits[np.arange(len(val.labels)), val.labels])
    assert abs(grad) < 1e-5


def test_tempscale_recovers_the_generating_temperature() -> None:
    # Labels sampled from softmax(z / 2.5): the maximum-likelihood T converges to 2.5.
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(20000, 5))
    p = np.exp(log_softmax(logits / 2.5, axis=1))
    labels = (p.cumsum(1) > rng.random((20000, 1))).argmax(1)
    det = create("tempscale").fit(random_rep(0), logits_rep(logits, labels))
    assert det.temperature_ == pytest.approx(2.5, rel=0.05)


def test_tempscale_needs_validation_data() -> None:
    with pytest.raises(MissingInputError, match="validation"):
        create("tempscale").fit(random_rep(0))


def test_tempscale_rejects_ood_labels_in_validation() -> None:
    val = logits_rep([[1.0, 0.0], [0.0, 1.0]], [0, -1])
    with pytest.raises(ValueError, match="OOD"):
        create("tempscale").fit(logits_rep([[1.0, 0.0]], [0]), val)


def test_tempscale_warns_when_optimum_hits_the_bound() -> None:
    # Perfectly separated validation set: the NLL falls all the way to T → 0.
    val = logits_rep([[10.0, 0.0], [0.0, 10.0]], [0, 1])
    with pytest.warns(UserWarning, match="bound"):
        det = create("tempscale").fit(val, val)
    assert det.temperature_ == pytest.approx(0.01, rel=1e-4)


# -- klm ---------------------------------------------------------------------------------------
def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def test_klm_hand_computed() -> None:
    # Validation predictions: class 0 for (0.8, 0.2) and (0.6, 0.4) -> template (0.7, 0.3);
    # class 1 for (0.1, 0.9) -> template (0.1, 0.9).
    val = logits_rep(np.log([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]]))
    det = create("klm").fit(val, val)
    got = det.score(logits_rep(np.log([[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]])))
    expected = [
        0.0,
        min(kl([0.5, 0.5], [0.7, 0.3]), kl([0.5, 0.5], [0.1, 0.9])),
        min(kl([0.2, 0.8], [0.7, 0.3]), kl([0.2, 0.8], [0.1, 0.9])),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_klm_matches_loop_reference_and_ignores_unpredicted_classes() -> None:
    rng = np.random.default_rng(2)
    val_logits = rng.normal(size=(50, 4))
    val_logits[:, 3] -= 20.0  # class 3 is never predicted on validation: no template
    val = logits_rep(val_logits)
    test = random_rep(3, n=25, c=4)
    got = create("klm").fit(random_rep(1, c=4), val).score(test)

    def probs(row):
        e = [math.exp(v - max(row)) for v in row]
        return [v / sum(e) for v in e]

    val_p = [probs(r) for r in val_logits]
    templates = []
    for c in range(4):
        members = [p for p in val_p if max(range(4), key=p.__getitem__) == c]
        if members:
            templates.append([sum(col) / len(members) for col in zip(*members, strict=True)])
    assert len(templates) == 3
    expected = [min(kl(probs(r), t) for t in templates) for r in test.logits]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_klm_needs_validation_data() -> None:
    with pytest.raises(MissingInputError, match="validation"):
        create("klm").fit(random_rep(0))


# -- shared properties -------------------------------------------------------------------------
LOGIT_DETECTORS = [
    ("msp", {}), ("mls", {}), ("energy", {"temperature": 2.0}), ("entropy", {}),
    ("gen", {"gamma": 0.5, "M": 3}), ("tempscale", {}), ("klm", {}),
]


@pytest.mark.parametrize(("name", "hp"), LOGIT_DETECTORS)
def test_chunked_equals_unchunked(name: str, hp: dict) -> None:
    det = fitted(name, **hp)
    rep = random_rep(21, n=37)
    whole = det.score(rep)
    det.chunk_size = 4
    np.testing.assert_allclose(det.score(rep), whole, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "hp"), LOGIT_DETECTORS)
def test_state_round_trip(name: str, hp: dict) -> None:
    det = fitted(name, **hp)
    again = type(det).from_state(det.get_params(), det.fitted_state())
    rep = random_rep(22)
    np.testing.assert_array_equal(again.score(rep), det.score(rep))


@pytest.mark.parametrize(("name", "hp"), LOGIT_DETECTORS)
def test_scores_do_not_warn(name: str, hp: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted(name, **hp).score(logits_rep(np.array([[900.0, -900.0, 0.0, 1.0, 2.0]])))
