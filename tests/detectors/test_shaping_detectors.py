"""ReAct, DICE, ASH, SCALE and VRA: hand-computed values, plain references and exact identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unseen.detectors import create, get
from unseen.representation import Representation

D, C = 20, 3
NAMES = ["react", "dice", "ash", "scale", "vra"]


@pytest.fixture(scope="module")
def train() -> Representation:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(0.5, 1.0, size=(40, D)), 0.0)  # post-ReLU-like, many zeros
    return Representation(
        features=x.astype(np.float32),
        weight=rng.normal(size=(C, D)).astype(np.float32),
        bias=rng.normal(size=C).astype(np.float32),
    )


@pytest.fixture(scope="module")
def test_rep() -> Representation:
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(0.7, 1.5, size=(9, D)), 0.0)
    return Representation(features=x.astype(np.float32))


def energy(train: Representation, rows, weight=None) -> list[float]:
    """−log Σ_c exp(w_c · row + b_c), one sample at a time (shifted by the max: no overflow)."""
    w = (train.weight if weight is None else weight).astype(np.float64)
    b = train.bias.astype(np.float64)
    out = []
    for row in np.asarray(rows, dtype=np.float64):
        z = [float(w[c] @ row + b[c]) for c in range(len(b))]
        m = max(z)
        out.append(-(m + math.log(sum(math.exp(v - m) for v in z))))
    return out


def kept_indices(row: np.ndarray, percentile: float) -> set[int]:
    """The k = n − round(n·p/100) largest entries of `row` plus any tied with the k-th."""
    n = len(row)
    k = n - int(np.round(n * percentile / 100))
    kth = sorted(row.tolist(), reverse=True)[k - 1]
    return {j for j in range(n) if row[j] >= kth}


# -- ReAct ---------------------------------------------------------------------------------
def test_react_hand_value():
    # Pooled training activations 0..5: the 50th percentile is 2.5.
    train = Representation(
        features=np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]),
        weight=np.eye(2), bias=np.zeros(2),
    )
    det = create("react", percentile=50).fit(train)
    assert det.threshold_ == 2.5
    score = det.score(Representation(features=np.array([[1.0, 4.0]])))
    assert score[0] == pytest.approx(-math.log(math.exp(1.0) + math.exp(2.5)), rel=1e-12)


def test_react_matches_reference(train, test_rep):
    pooled = sorted(train.features.astype(np.float64).ravel().tolist())
    # 90th percentile with linear interpolation, by hand.
    pos = 0.9 * (len(pooled) - 1)
    lo = math.floor(pos)
    c = pooled[lo] + (pos - lo) * (pooled[lo + 1] - pooled[lo])
    clipped = [[min(v, c) for v in row] for row in test_rep.features.astype(np.float64)]
    det = create("react").fit(train)
    np.testing.assert_allclose(det.score(test_rep), energy(train, clipped), rtol=1e-10)


def test_react_at_100_is_energy_within_the_training_range(train):
    det = create("react", percentile=100).fit(train)
    top = float(train.features.max())
    assert det.threshold_ == top
    # All training rows, and a row just below the maximum, pass through unchanged.
    rows = np.vstack([train.features, np.full((1, D), top * 0.999, np.float32)])
    np.testing.assert_allclose(
        det.score(Representation(features=rows)), energy(train, rows), rtol=1e-12
    )


# -- DICE ----------------------------------------------------------------------------------
def test_dice_hand_value():
    # Mean training feature (1, 1): contributions equal the weights 1, 2, 3, −1; p = 50 keeps
    # the two largest (3 and 2), so the masked head is [[0, 2], [3, 0]].
    tr = Representation(
        features=np.array([[0.0, 2.0], [2.0, 0.0]]),
        weight=np.array([[1.0, 2.0], [3.0, -1.0]]), bias=np.zeros(2),
    )
    det = create("dice", p=50).fit(tr)
    np.testing.assert_array_equal(det.masked_weight_, [[0.0, 2.0], [3.0, 0.0]])
    score = det.score(Representation(features=np.array([[1.0, 1.0]])))
    assert score[0] == pytest.approx(-math.log(math.exp(2.0) + math.exp(3.0)), rel=1e-12)


@pytest.mark.parametrize("p", [10, 50, 90])
def test_dice_matches_reference(train, test_rep, p):
    w = train.weight.astype(np.float64)
    mean = [sum(train.features[i, j] for i in range(len(train.features))) / len(train.features)
            for j in range(D)]
    contrib = {(c, j): w[c, j] * mean[j] for c in range(C) for j in range(D)}
    n = C * D
    k = n - int(np.round(n * p / 100))
    kth = sorted(contrib.values(), reverse=True)[k - 1]
    masked = np.array([[w[c, j] if contrib[c, j] >= kth else 0.0 for j in range(D)]
                       for c in range(C)])
    det = create("dice", p=p).fit(train)
    np.testing.assert_allclose(
        det.score(test_rep), energy(train, test_rep.features, masked), rtol=1e-9
    )


def test_dice_at_0_is_energy(train, test_rep):
    det = create("dice", p=0).fit(train)
    np.testing.assert_allclose(det.score(test_rep), energy(train, test_rep.features), rtol=1e-12)


# -- ASH -----------------------------------------------------------------------------------
def ash_head() -> Representation:
    # Class 0 sums the activations, class 1 is constant 0: logits = [Σ a, 0].
    return Representation(
        features=np.zeros((1, 10)), weight=np.vstack([np.ones(10), np.zeros(10)]),
        bias=np.zeros(2),
    )


@pytest.mark.parametrize(
    ("variant", "class0_logit"),
    [
        ("p", 7.0 + 8.0 + 9.0),  # keeps 7, 8, 9
        ("b", 45.0),  # three units set to s1/K = 45/3
        ("s", 24.0 * math.exp(45.0 / 24.0)),  # kept sum 24 scaled by exp(s1/s2)
    ],
)
def test_ash_hand_values(variant, class0_logit):
    x = Representation(features=np.arange(10.0)[None, :])  # p = 70 keeps k = 3 of 10
    det = create("ash", variant=variant, percentile=70).fit(ash_head())
    assert det.score(x)[0] == pytest.approx(-math.log(math.exp(class0_logit) + 1.0), rel=1e-12)


@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("percentile", [65, 90])
def test_ash_matches_reference(train, test_rep, variant, percentile):
    shaped = []
    for row in test_rep.features.astype(np.float64):
        keep = kept_indices(row, percentile)
        s1 = sum(row)
        s2 = sum(row[j] for j in keep)
        new = []
        for j in range(D):
            if j not in keep:
                new.append(0.0)
            elif variant == "p":
                new.append(row[j])
            elif variant == "b":
                new.append(s1 / len(keep))
            else:
                new.append(row[j] * math.exp(s1 / s2))
        shaped.append(new)
    det = create("ash", variant=variant, percentile=percentile).fit(train)
    np.testing.assert_allclose(det.score(test_rep), energy(train, shaped), rtol=1e-10)


def test_ash_keeps_all_ties_at_the_threshold():
    # p = 50 asks for k = 2 of 4 but three units tie at the 2nd-largest value: all are kept,
    # so ASH-P leaves x unchanged and ASH-B fills 3/3 = 1 into the same units.
    x = Representation(features=np.array([[1.0, 1.0, 1.0, 0.0]]))
    tr = Representation(features=np.zeros((1, 4)), weight=np.array([[1.0, 2.0, 4.0, 8.0],
                                                                     [0.0, 0.0, 0.0, 0.0]]),
                        bias=np.zeros(2))
    expected = -math.log(math.exp(7.0) + 1.0)
    for variant in ("p", "b"):
        assert create("ash", variant=variant, percentile=50).fit(tr).score(x)[0] == (
            pytest.approx(expected, rel=1e-12)
        )


def test_ash_p_at_0_is_energy_even_with_negative_features(train):
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(6, D))
    det = create("ash", variant="p", percentile=0).fit(train)
    np.testing.assert_allclose(
        det.score(Representation(features=rows)), energy(train, rows), rtol=1e-12
    )


def test_ash_b_at_0_is_energy_of_the_mean_vector(train, test_rep):
    rows = test_rep.features.astype(np.float64)
    means = [[row.sum() / D] * D for row in rows]
    det = create("ash", variant="b", percentile=0).fit(train)
    np.testing.assert_allclose(det.score(test_rep), energy(train, means), rtol=1e-12)


@pytest.mark.parametrize(("name", "params"), [("ash", {"variant": "s"}), ("scale", {})])
def test_sharpening_at_0_is_energy_of_e_times_x(train, test_rep, name, params):
    # Nothing is pruned, so s1 = s2 and every activation is multiplied by e¹.
    det = create(name, percentile=0, **params).fit(train)
    scaled = test_rep.features.astype(np.float64) * math.e
    np.testing.assert_allclose(det.score(test_rep), energy(train, scaled), rtol=1e-12)


@pytest.mark.parametrize(("name", "params"), [("ash", {"variant": "s"}), ("scale", {})])
def test_sharpening_rejects_negative_features(train, name, params):
    det = create(name, **params).fit(train)
    with pytest.raises(ValueError, match="non-negative"):
        det.score(Representation(features=-np.ones((2, D))))


@pytest.mark.parametrize(("name", "params"), [("ash", {"variant": "s"}), ("scale", {})])
def test_sharpening_of_an_all_zero_row_scores_the_bias(train, name, params):
    det = create(name, **params).fit(train)
    b = train.bias.astype(np.float64)
    expected = -math.log(sum(math.exp(v) for v in b))
    assert det.score(Representation(features=np.zeros((1, D))))[0] == pytest.approx(expected)


# -- SCALE ---------------------------------------------------------------------------------
def test_scale_hand_value():
    # p = 70 on 0..9: s1 = 45, s2 = 7 + 8 + 9 = 24; nothing pruned, all scaled by exp(45/24).
    x = Representation(features=np.arange(10.0)[None, :])
    det = create("scale", percentile=70).fit(ash_head())
    logit = 45.0 * math.exp(45.0 / 24.0)
    assert det.score(x)[0] == pytest.approx(-math.log(math.exp(logit) + 1.0), rel=1e-12)


@pytest.mark.parametrize("percentile", [65, 85, 95])
def test_scale_matches_reference(train, test_rep, percentile):
    scaled = []
    for row in test_rep.features.astype(np.float64):
        keep = kept_indices(row, percentile)
        r = sum(row) / sum(row[j] for j in keep)
        scaled.append([v * math.exp(r) for v in row])
    det = create("scale", percentile=percentile).fit(train)
    np.testing.assert_allclose(det.score(test_rep), energy(train, scaled), rtol=1e-10)


# -- VRA -----------------------------------------------------------------------------------
def test_vra_hand_value():
    # Pooled training activations 0..9: α = 20th percentile = 1.8, β = 80th = 7.2.
    tr = Representation(features=np.arange(10.0).reshape(5, 2), weight=np.array([[1.0] * 4,
                        [0.0] * 4])[:, :2], bias=np.zeros(2))
    det = create("vra", low=20, high=80, gamma=0.5).fit(tr)
    assert (det.alpha_, det.beta_) == (pytest.approx(1.8), pytest.approx(7.2))
    # g: 1 → 0 (below α), 2 → 2.5 (amplified), 7 → 7.5, 8 → 7.2 (above β: β).
    x = Representation(features=np.array([[1.0, 8.0], [2.0, 7.0]]))
    expected = [-math.log(math.exp(7.2) + 1.0), -math.log(math.exp(2.5 + 7.5) + 1.0)]
    np.testing.assert_allclose(det.score(x), expected, rtol=1e-12)


def test_vra_matches_reference(train, test_rep):
    det = create("vra", low=50, high=95, gamma=0.3).fit(train)
    a, b = np.percentile(train.features.astype(np.float64), [50, 95])
    shaped = [[0.0 if v < a else (b if v > b else v + 0.3) for v in row]
              for row in test_rep.features.astype(np.float64)]
    np.testing.assert_allclose(det.score(test_rep), energy(train, shaped), rtol=1e-10)


@pytest.mark.parametrize("p", [85, 95])
def test_vra_without_low_cut_or_gamma_is_react(train, test_rep, p):
    # low = 0 puts α at the smallest training activation (0 here, all test features ≥ 0).
    vra = create("vra", low=0, high=p, gamma=0.0).fit(train)
    react = create("react", percentile=p).fit(train)
    assert vra.alpha_ <= float(test_rep.features.min())
    np.testing.assert_array_equal(vra.score(test_rep), react.score(test_rep))


def test_vra_full_range_is_energy_on_training_features(train):
    det = create("vra", low=0, high=100, gamma=0.0).fit(train)
    np.testing.assert_allclose(det.score(train), energy(train, train.features), rtol=1e-12)


# -- common --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_unchunked(train, test_rep, name):
    det = create(name).fit(train)
    whole = det.score(test_rep)
    det.chunk_size = 2
    # BLAS may round a 1-row product differently from a 2-row one in the last bit.
    np.testing.assert_allclose(det.score(test_rep), whole, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip(train, test_rep, name):
    det = create(name).fit(train)
    state = det.fitted_state()
    for value in state.values():
        assert isinstance(value, np.ndarray | float | int | bool)
    again = get(name).from_state(det.get_params(), state)
    np.testing.assert_array_equal(again.score(test_rep), det.score(test_rep))


def test_score_only_parameters_need_no_refit(train, test_rep):
    det = create("ash", variant="p", percentile=65).fit(train)
    det.set_params(variant="s", percentile=90)
    fresh = create("ash", variant="s", percentile=90).fit(train)
    np.testing.assert_array_equal(det.score(test_rep), fresh.score(test_rep))
    assert get("ash").score_params == {"variant", "percentile"}


@pytest.mark.parametrize(
    ("name", "params", "error"),
    [
        ("react", {"percentile": 101}, ValueError),
        ("react", {"percentile": -1}, ValueError),
        ("react", {"percentile": "90"}, TypeError),
        ("dice", {"p": 100}, ValueError),
        ("dice", {"p": float("nan")}, ValueError),
        ("ash", {"variant": "q"}, ValueError),
        ("ash", {"percentile": 100}, ValueError),
        ("scale", {"percentile": -5}, ValueError),
        ("vra", {"low": 90, "high": 80}, ValueError),
        ("vra", {"gamma": -0.1}, ValueError),
        ("vra", {"gamma": float("inf")}, ValueError),
    ],
)
def test_invalid_hyperparameters(train, name, params, error):
    with pytest.raises(error, match=name):
        create(name, **params).fit(train)


def test_invalid_score_parameter_set_after_fit(train, test_rep):
    # Refused when set (the constraints are checked by set_params), and nothing changes.
    det = create("ash").fit(train)
    before = det.score(test_rep)
    with pytest.raises(ValueError, match="variant"):
        det.set_params(variant="x")
    assert det.variant == "s"
    np.testing.assert_array_equal(det.score(test_rep), before)


def test_percentile_keeping_nothing_is_an_error(train):
    # 99.9 % of 10 units rounds to 10: nothing would be kept.
    det = create("scale", percentile=99.9).fit(train)
    with pytest.raises(ValueError, match="keeps none"):
        det.score(Representation(features=np.ones((1, D))))
