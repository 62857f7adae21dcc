"""Sliding-window monitoring: OOD-fraction estimate, its clipping, and the binomial alarm."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from guard_data import scores_rep
from scipy import stats

from unseen import detectors
from unseen.guard import Guard, Monitor


def test_window_keeps_exactly_the_most_recent_inputs() -> None:
    mon = Monitor(0.05, window=4)
    mon.update(np.array([1, 0, 0], dtype=bool))
    mon.update(np.array([1, 1], dtype=bool))  # window: 0 0 1 1
    est = mon.estimate()
    assert (est.n, est.flagged, est.flag_rate) == (4, 2, 0.5)
    mon.update(np.array([0] * 9 + [1], dtype=bool))  # longer than the window: last 4 = 0 0 0 1
    assert (mon.estimate().n, mon.estimate().flagged) == (4, 1)
    assert (mon.total_seen, mon.total_flagged) == (15, 4)


def test_window_matches_a_deque_reference() -> None:
    rng = np.random.default_rng(0)
    mon, ref = Monitor(0.05, window=37), deque(maxlen=37)
    for _ in range(300):
        batch = rng.random(int(rng.integers(0, 50))) < 0.3
        mon.update(batch)
        ref.extend(batch.tolist())
        assert mon.counts() == (len(ref), sum(ref))


def test_flag_rate_interval_is_clopper_pearson() -> None:
    mon = Monitor(0.05, window=200)
    mon.update(np.arange(200) < 13)  # 13 of 200 flagged
    est = mon.estimate()
    ci = stats.binomtest(13, 200).proportion_ci(0.95, method="exact")
    np.testing.assert_allclose(est.flag_rate_ci, (ci.low, ci.high), rtol=1e-6)
    assert est.ood_fraction is None and est.tpr is None  # no TPR: flag rate only


def test_alarm_p_value_is_the_exact_binomial_tail() -> None:
    mon = Monitor(0.05, window=100, level=0.05)
    mon.update(np.arange(100) < 12)
    tail = sum(math.comb(100, j) * 0.05**j * 0.95 ** (100 - j) for j in range(12, 101))
    est = mon.estimate()
    assert est.alarm_p_value == pytest.approx(tail, rel=1e-9)
    assert est.alarm == (tail < 0.05) and est.alarm  # 12 % flagged at α = 5 %: alarm


def test_ood_fraction_by_hand_and_clipping_is_reported() -> None:
    mon = Monitor(0.05, alpha_hat=0.05, tpr=0.8, window=100)
    mon.update(np.arange(100) < 32)  # r = 0.32: π̂ = (0.32 − 0.05)/(0.8 − 0.05) = 0.36
    est = mon.estimate()
    assert est.ood_fraction == pytest.approx(0.36) and not est.ood_fraction_clipped
    mon.reset()
    mon.update(np.zeros(100, dtype=bool))  # r = 0: raw π̂ = −0.05/0.75 < 0, clipped to 0
    est = mon.estimate()
    assert est.ood_fraction_raw == pytest.approx(-1 / 15)
    assert est.ood_fraction == 0.0 and est.ood_fraction_clipped
    assert est.ood_fraction_ci[0] == 0.0


def test_tpr_must_exceed_the_false_alarm_rate() -> None:
    with pytest.raises(ValueError, match="tpr must lie"):
        Monitor(0.05, tpr=0.04)


def test_moment_estimator_is_unbiased_on_bernoulli_streams() -> None:
    rng = np.random.default_rng(1)
    pi, tpr, a = 0.3, 0.8, 0.05
    rate = pi * tpr + (1 - pi) * a
    est = []
    for _ in range(200):
        mon = Monitor(a, tpr=tpr, window=2000)
        mon.update(rng.random(2000) < rate)
        est.append(mon.estimate().ood_fraction_raw)
    est = np.array(est)
    assert abs(est.mean() - pi) <= 3 * est.std(ddof=1) / np.sqrt(len(est))


def test_ood_fraction_on_a_guarded_stream_is_close_to_truth() -> None:
    rng = np.random.default_rng(2)
    guard = Guard(detectors.create("mls")).fit(scores_rep(np.zeros(3)))
    guard.calibrate(scores_rep(rng.normal(size=1999)), alpha=0.05)  # α̂ = 100/2000
    assert guard.alpha_hat == pytest.approx(0.05)
    tpr = guard.estimate_tpr(scores_rep(rng.normal(2.5, 1.0, size=5000)))
    assert tpr == pytest.approx(1 - stats.norm.cdf(guard.threshold, loc=2.5), abs=0.02)
    guard.set_monitor(window=5000)
    is_out = rng.random(5000) < 0.3
    guard.predict(scores_rep(rng.normal(size=5000) + 2.5 * is_out))
    est = guard.monitor.estimate()
    assert est.n == 5000 and est.tpr == tpr
    assert abs(est.ood_fraction - is_out.mean()) < 0.04
    assert est.ood_fraction_ci[0] < is_out.mean() < est.ood_fraction_ci[1] + 0.02


def test_alarm_fires_when_elevated_and_rarely_under_the_null() -> None:
    rng = np.random.default_rng(3)
    trials, level = 300, 0.05
    null = elevated = 0
    for _ in range(trials):
        mon = Monitor(0.05, window=1000, level=level)
        mon.update(rng.random(1000) < 0.05)
        null += mon.estimate().alarm
        mon.reset()
        mon.update(rng.random(1000) < 0.09)
        elevated += mon.estimate().alarm
    assert null / trials <= level + 3 * math.sqrt(level * (1 - level) / trials)
    assert elevated / trials >= 0.95


def test_predict_feeds_the_monitor_unless_asked_not_to() -> None:
    guard = Guard(detectors.create("mls")).fit(scores_rep(np.zeros(3)))
    guard.calibrate(scores_rep(np.arange(1.0, 20.0)), alpha=0.05)
    guard.predict(scores_rep(np.array([0.0, 25.0, 30.0])))
    guard.predict(scores_rep(np.array([40.0])), record=False)
    est = guard.monitor.estimate()
    assert (est.n, est.flagged) == (3, 2)


def test_useless_tpr_warns_and_the_monitor_reports_the_flag_rate_only() -> None:
    guard = Guard(detectors.create("mls")).fit(scores_rep(np.zeros(3)))
    guard.calibrate(scores_rep(np.arange(1.0, 40.0)), alpha=0.05)
    with pytest.warns(UserWarning, match="cannot estimate the OOD fraction"):
        assert guard.estimate_tpr(scores_rep(np.full(10, -5.0))) == 0.0
    guard.predict(scores_rep(np.array([100.0, 0.0])))
    est = guard.monitor.estimate()
    assert est.tpr is None and est.ood_fraction is None and est.flag_rate == 0.5


def test_monitor_settings_survive_calibration_and_persistence(tmp_path) -> None:
    guard = Guard(detectors.create("mls")).fit(scores_rep(np.zeros(3)))
    guard.calibrate(scores_rep(np.arange(1.0, 40.0)), alpha=0.05)
    guard.set_monitor(window=7, level=0.2)
    guard.estimate_tpr(scores_rep(np.full(10, 100.0)))
    assert guard.monitor.tpr == 1.0
    guard.calibrate(scores_rep(np.arange(1.0, 60.0)), alpha=0.05)
    assert guard.tpr is None and guard.monitor.tpr is None  # a TPR belongs to a threshold
    assert (guard.monitor.window, guard.monitor.level) == (7, 0.2)
    guard.estimate_tpr(scores_rep(np.full(10, 100.0)))
    loaded = Guard.load(guard.save(tmp_path / "g"))
    assert (loaded.monitor.window, loaded.monitor.level, loaded.monitor.tpr) == (7, 0.2, 1.0)
