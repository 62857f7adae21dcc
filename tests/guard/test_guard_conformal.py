"""Conformal calibration, p-values and BH selection (Bates et al., Ann. Statist. 2023)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from guard_data import scores_rep

from unseen import detectors
from unseen.guard import (
    CalibrationError,
    Guard,
    benjamini_hochberg,
    conformal_threshold,
    p_values,
    threshold_rank,
)


def one_d_guard() -> Guard:
    """A guard whose score is the input value itself: mls on a single logit −x."""
    return Guard(detectors.create("mls")).fit(scores_rep(np.zeros(3)))


def reference_bh(p: list[float], q: float) -> set[int]:
    """Benjamini–Hochberg written out: largest k with p_(k) <= k q / m, reject the k smallest."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    k_star = 0
    for k in range(1, m + 1):
        if p[order[k - 1]] <= k * q / m:
            k_star = k
    return set(order[:k_star])


# -- threshold rank and refusal ------------------------------------------------------------------
@pytest.mark.parametrize("alpha", ["0.01", "0.05", "0.1", "0.07", "0.2", "0.25", "0.3", "0.5"])
def test_rank_is_the_exact_ceiling_and_refusal_when_n_too_small(alpha: str) -> None:
    a = Fraction(alpha)
    for n in range(1, 400):
        k = math.ceil((n + 1) * (1 - a))
        if k > n:
            with pytest.raises(CalibrationError, match="too few"):
                threshold_rank(n, float(alpha))
        else:
            assert threshold_rank(n, float(alpha)) == k, (n, alpha)


def test_guard_refuses_too_small_calibration_set() -> None:
    guard = one_d_guard()
    with pytest.raises(CalibrationError, match="n >= 19"):
        guard.calibrate(scores_rep(np.arange(18.0)), alpha=0.05)
    guard.calibrate(scores_rep(np.arange(19.0)), alpha=0.05)  # n = 19: k = ⌈20·0.95⌉ = 19
    assert guard.threshold == 18.0


def test_alpha_must_lie_in_open_unit_interval() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            threshold_rank(100, bad)


# -- p-values by hand ----------------------------------------------------------------------------
def test_p_values_on_a_hand_example_with_ties() -> None:
    cal = np.array([1.0, 2.0, 2.0, 3.0, 5.0])  # n = 5, n + 1 = 6
    test = np.array([0.0, 2.0, 2.5, 3.0, 5.0, 6.0])
    # #{s_i >= s}: 5, 4, 2, 2, 1, 0  ->  p = (1 + count) / 6
    expected = np.array([6, 5, 3, 3, 2, 1]) / 6
    np.testing.assert_allclose(p_values(cal, test), expected, rtol=0, atol=1e-15)
    guard = one_d_guard().calibrate(scores_rep(cal[::-1]), alpha=0.34)
    pred = guard.predict(scores_rep(test))
    np.testing.assert_allclose(pred.p_value, expected, rtol=0, atol=1e-15)
    # k = ⌈6 · 0.66⌉ = 4, so the threshold is the 4th smallest score, 3; flag s > 3.
    assert guard.threshold == 3.0
    np.testing.assert_array_equal(pred.is_ood, [False, False, False, False, True, True])


def test_is_ood_equals_small_p_value_exactly_with_ties() -> None:
    rng = np.random.default_rng(0)
    guard = one_d_guard()
    for n in (19, 20, 39, 50, 99, 100, 137):
        cal = rng.integers(0, 6, size=n).astype(np.float64)  # heavy ties
        test = np.concatenate([np.arange(-1, 8, 0.5), cal])  # on, between and beyond ties
        for alpha in (0.05, 0.07, 0.1, 0.2, 0.3, 1 / 3, 0.5):
            if (n + 1) * alpha < 1:
                continue
            guard.calibrate(scores_rep(cal), alpha)
            pred = guard.predict(scores_rep(test), record=False)
            np.testing.assert_array_equal(pred.is_ood, pred.score > guard.threshold)
            np.testing.assert_array_equal(pred.is_ood, pred.p_value <= alpha)


# -- the guarantee, by simulation ------------------------------------------------------------------
def test_false_alarm_rate_is_at_most_alpha_and_not_too_conservative() -> None:
    rng = np.random.default_rng(1)
    draws, n, m, alpha = 4000, 50, 100, 0.05
    cal = rng.normal(size=(draws, n))
    test = rng.normal(size=(draws, m))
    thr = conformal_threshold(cal, alpha)
    per_draw = (test > thr[:, None]).mean(axis=1)
    mean, se = per_draw.mean(), per_draw.std(ddof=1) / np.sqrt(draws)
    assert mean <= alpha + 3 * se
    assert mean >= alpha - 1 / (n + 1) - 3 * se
    # For continuous scores the marginal rate is exactly 1 − k/(n + 1) = 2/51.
    assert abs(mean - 2 / 51) <= 4 * se


def test_guarantee_through_the_guard_api() -> None:
    rng = np.random.default_rng(2)
    guard = one_d_guard()
    draws, n, m, alpha = 1000, 99, 50, 0.05
    rates = np.empty(draws)
    for d in range(draws):
        guard.calibrate(scores_rep(rng.exponential(size=n)), alpha)
        rates[d] = guard.predict(scores_rep(rng.exponential(size=m)), record=False).is_ood.mean()
    mean, se = rates.mean(), rates.std(ddof=1) / np.sqrt(draws)
    # n + 1 = 100 and α(n + 1) = 5: the bound is attained, 1 − 95/100 = 0.05.
    assert alpha - 1 / (n + 1) - 3 * se <= mean <= alpha + 3 * se


def test_p_values_are_super_uniform_also_with_discrete_scores() -> None:
    rng = np.random.default_rng(3)
    draws, n = 3000, 30
    grid = np.array([0.05, 0.1, 0.2, 0.5, 0.8])
    for sampler in (lambda size: rng.normal(size=size), lambda size: rng.poisson(2.0, size)):
        cal = np.sort(sampler((draws, n)).astype(np.float64), axis=1)
        test = sampler(draws).astype(np.float64)
        p = np.array([p_values(cal[d], test[d : d + 1])[0] for d in range(draws)])
        for t in grid:
            rate = (p <= t).mean()
            assert rate <= t + 3 * np.sqrt(t * (1 - t) / draws), (t, rate)


# -- Benjamini–Hochberg ---------------------------------------------------------------------------
def test_bh_hand_examples() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.5])
    # thresholds k q / m = .02 .04 .06 .08 .10: sorted p .01 .03 .04 pass, .2 .5 fail
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.1), [True, True, True, False, False])
    # step-up: p_(2), p_(3) fail their thresholds (.02, .03) but p_(4) = .039 <= .04 passes
    p = np.array([0.9, 0.039, 0.005, 0.035, 0.03])
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), [False, True, True, True, True])
    assert not benjamini_hochberg(np.array([0.5, 0.6]), 0.1).any()


def test_bh_agrees_with_a_reference_implementation() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        m = int(rng.integers(1, 40))
        p = np.round(rng.uniform(0, 0.3, size=m), 3)  # rounding makes ties
        q = float(rng.choice([0.05, 0.1, 0.2]))
        assert set(np.flatnonzero(benjamini_hochberg(p, q))) == reference_bh(list(p), q)


def test_select_applies_bh_to_the_guards_p_values() -> None:
    guard = one_d_guard().calibrate(scores_rep(np.arange(1.0, 20.0)), alpha=0.05)  # n = 19
    test = np.array([25.0, 19.5, 18.5, 3.0, 30.0])
    # p = (1 + #{s_i >= s}) / 20 with #{s_i >= s} = 0, 0, 1, 17, 0
    p = np.array([1, 1, 2, 18, 1]) / 20
    np.testing.assert_allclose(guard.predict(scores_rep(test)).p_value, p)
    expected = np.zeros(5, dtype=bool)
    expected[sorted(reference_bh(list(p), 0.2))] = True
    np.testing.assert_array_equal(guard.select(scores_rep(test), fdr=0.2), expected)
    assert expected.tolist() == [True, True, True, False, True]


def test_bh_on_conformal_p_values_controls_the_fdr() -> None:
    rng = np.random.default_rng(5)
    draws, n, m, pi, q = 800, 200, 100, 0.2, 0.1
    fdp = np.empty(draws)
    power = np.empty(draws)
    for d in range(draws):
        cal = np.sort(rng.normal(size=n))
        is_out = rng.random(m) < pi
        test = rng.normal(size=m) + 2.5 * is_out
        flagged = benjamini_hochberg(p_values(cal, test), q)
        fdp[d] = (flagged & ~is_out).sum() / max(1, flagged.sum())
        power[d] = (flagged & is_out).sum() / max(1, is_out.sum())
    se = fdp.std(ddof=1) / np.sqrt(draws)
    # Bates et al. 2023: FDR <= q · m0 / m, about q (1 − π) = 0.08 here.
    assert fdp.mean() <= q * (1 - pi) + 3 * se
    assert power.mean() > 0.3  # the selection does find outliers
