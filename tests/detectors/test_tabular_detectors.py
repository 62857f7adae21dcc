"""Value tests for the tabular detectors: against scikit-learn's own scoring of the estimator
we fit with, against PyOD (the reference implementation ADBench ran) where the definitions
agree, against hand computations on tiny inputs, and a bit-identical persistence round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from unseen.detectors import create, get
from unseen.detectors.tabular import NAMES
from unseen.detectors.tabular.forest import average_path_length
from unseen.guard.persist import decode_state, encode_state
from unseen.representation import Representation

pyod = pytest.importorskip("pyod")


def skewed_table(seed: int, n: int = 200) -> np.ndarray:
    """Columns with clear positive and negative skew, a symmetric one, and repeated values."""
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.exponential(size=n),
        -rng.gamma(2.0, size=n),
        rng.normal(size=n),
        rng.integers(0, 5, size=n).astype(np.float64),
        rng.lognormal(size=n),
    ])


def rep(x: np.ndarray) -> Representation:
    return Representation(features=np.asarray(x, dtype=np.float64))


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    train = skewed_table(1)
    test = np.concatenate([skewed_table(2, 40), rng.normal(scale=6.0, size=(10, 5))])
    return train, test


# -- scikit-learn-fitted detectors: numpy scoring equals scikit-learn's ----------------------
def test_iforest_equals_sklearn_bit_for_bit(table):
    from sklearn.ensemble import IsolationForest

    train, test = table
    det = create("iforest", n_estimators=60, max_samples=128, seed=3).fit(rep(train))
    ref = IsolationForest(n_estimators=60, max_samples=128, random_state=3).fit(train)
    np.testing.assert_array_equal(det.score(rep(test)), -ref.score_samples(test))
    np.testing.assert_array_equal(det.fit_score(rep(train)), -ref.score_samples(train))


def test_average_path_length_by_hand():
    # c(256) = 2 (ln 255 + γ) − 2·255/256 = 10.2448; c(1) = 0, c(2) = 1 by definition
    c = average_path_length(np.array([1, 2, 256]))
    assert c[0] == 0.0 and c[1] == 1.0
    assert c[2] == pytest.approx(2 * (math.log(255) + 0.5772156649015329) - 2 * 255 / 256, abs=1e-12)
    assert c[2] == pytest.approx(10.2448, abs=1e-4)


def test_lof_equals_sklearn_and_pyod(table):
    from pyod.models.lof import LOF
    from sklearn.neighbors import LocalOutlierFactor

    train, test = table
    det = create("lof", n_neighbors=10)
    fit_scores = det.fit_score(rep(train))
    ref = LocalOutlierFactor(n_neighbors=10, novelty=True).fit(train)
    np.testing.assert_allclose(det.score(rep(test)), -ref.score_samples(test), rtol=1e-12)
    np.testing.assert_allclose(fit_scores, -ref.negative_outlier_factor_, rtol=1e-12)
    p = LOF(n_neighbors=10).fit(train)
    np.testing.assert_allclose(fit_scores, p.decision_scores_, rtol=1e-9)
    np.testing.assert_allclose(det.score(rep(test)), p.decision_function(test), rtol=1e-9)


def test_lof_by_hand():
    # 1-D points 0, 1, 2, 10 with k = 1: k-dist = 1, 1, 1, 8 (nearest other point)
    # lrd = 1/reach: 0 → reach(0,1) = max(1, kd(1)=1) = 1; 1 → nn 0 or 2 (tie, both give 1);
    # 2 → nn 1: 1; 10 → nn 2: max(8, 1) = 8, lrd = 1/8. A query at 5: nn 2 at distance 3,
    # reach = max(3, 1) = 3, lrd(5) = 1/3, LOF = lrd(2)/lrd(5) = 3.
    det = create("lof", n_neighbors=1).fit(rep(np.array([[0.0], [1.0], [2.0], [10.0]])))
    np.testing.assert_allclose(det.lrd_, 1 / (np.array([1, 1, 1, 8.0]) + 1e-10))
    assert det.score(rep(np.array([[5.0]])))[0] == pytest.approx(3.0, rel=1e-9)


def test_ocsvm_equals_sklearn_and_pyod_up_to_offset(table):
    from pyod.models.ocsvm import OCSVM
    from sklearn.svm import OneClassSVM

    train, test = table
    det = create("ocsvm", nu=0.3, gamma="scale").fit(rep(train))
    ref = OneClassSVM(nu=0.3, gamma="scale").fit(train)
    np.testing.assert_allclose(det.score(rep(test)), -ref.score_samples(test), rtol=1e-10)
    det = create("ocsvm").fit(rep(train))  # PyOD's defaults: nu 0.5, gamma 1/d
    p = OCSVM().fit(train)
    # PyOD returns −decision_function = −(Σ α K − ρ): ours plus the offset ρ = −intercept
    np.testing.assert_allclose(det.score(rep(test)) - det.intercept_, p.decision_function(test),
                               rtol=1e-9, atol=1e-9)
    assert det.gamma_ == pytest.approx(1 / train.shape[1])


def test_pca_reconstruction_equals_sklearn_and_hand():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    train = rng.normal(size=(100, 6)) * np.array([5, 3, 2, 1, 0.5, 0.1])
    test = rng.normal(size=(20, 6))
    det = create("pca", n_components=0.9).fit(rep(train))
    ref = PCA(n_components=0.9, svd_solver="full").fit(train)
    assert det.components_.shape[0] == ref.n_components_
    residual = test - ref.inverse_transform(ref.transform(test))
    np.testing.assert_allclose(det.score(rep(test)), (residual**2).sum(1), rtol=1e-9)
    # by hand: training points on the line y = x; keeping 1 direction, the score of (1, −1)
    # is its squared distance to that line through the mean (0, 0): 2
    line = np.array([[-2.0, -2.0], [-1, -1], [1, 1], [2, 2]])
    det = create("pca", n_components=1).fit(rep(line))
    assert det.score(rep(np.array([[1.0, -1.0], [3.0, 3.0]]))) == pytest.approx([2.0, 0.0], abs=1e-12)


def test_pca_keeps_a_residual_and_rejects_bad_counts():
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert create("pca", n_components=0.999999).fit(rep(x)).components_.shape[0] == 2
    with pytest.raises(ValueError, match="n_components"):
        create("pca", n_components=3).fit(rep(x))


def test_kde_equals_sklearn_and_pyod(table):
    from pyod.models.kde import KDE
    from sklearn.neighbors import KernelDensity

    train, test = table
    for bw in (0.7, "scott", "silverman"):
        det = create("kde", bandwidth=bw).fit(rep(train))
        ref = KernelDensity(bandwidth=bw).fit(train)
        assert det.bandwidth_ == pytest.approx(ref.bandwidth_, rel=1e-12)
        got = det.score(rep(test))
        # scikit-learn's tree KDE loses digits dozens of nats into the tail (the last 10 rows
        # are far outliers); a direct sum per row is the reference there
        np.testing.assert_allclose(got[:40], -ref.score_samples(test[:40]), rtol=1e-9)
        h, (n, d) = ref.bandwidth_, train.shape
        direct = [-(np.log(np.exp(-((train - x) ** 2).sum(1) / (2 * h * h) + 700).sum()) - 700
                    - math.log(n) - d / 2 * math.log(2 * math.pi * h * h)) for x in test]
        np.testing.assert_allclose(got, direct, rtol=1e-9)
    p = KDE().fit(train)
    np.testing.assert_allclose(create("kde").fit_score(rep(train)), p.decision_scores_, rtol=1e-9)


def test_kde_by_hand():
    # one training point at 0, h = 1: −log N(x; 0, 1) = x²/2 + log √(2π)
    det = create("kde", bandwidth=1.0).fit(rep(np.zeros((1, 1))))
    assert det.score(rep(np.array([[2.0]])))[0] == pytest.approx(2.0 + 0.5 * math.log(2 * math.pi))


def test_kthnn_equals_pyod_and_hand(table):
    from pyod.models.knn import KNN

    train, test = table
    det = create("kthnn", n_neighbors=5)
    fit_scores = det.fit_score(rep(train))
    p = KNN(n_neighbors=5).fit(train)
    np.testing.assert_allclose(fit_scores, p.decision_scores_, rtol=1e-12)
    np.testing.assert_allclose(det.score(rep(test)), p.decision_function(test), rtol=1e-12)
    small = create("kthnn", n_neighbors=2).fit(rep(np.array([[0.0, 0], [3, 4], [6, 8]])))
    # from (0, 0): the 2nd nearest is (6, 8) at 10; in fit_score (0, 0) is not its own neighbour
    assert small.score(rep(np.array([[0.0, 0.0]])))[0] == pytest.approx(5.0)
    assert small.fit_score(rep(np.array([[0.0, 0], [3, 4], [6, 8]])))[0] == pytest.approx(10.0)


# -- ECOD, COPOD, HBOS: our formulas against PyOD -------------------------------------------
@pytest.mark.parametrize(("ours", "theirs"), [("ecod", "ECOD"), ("copod", "COPOD")])
def test_tail_detectors_equal_pyod(table, ours, theirs):
    import importlib

    ref_cls = getattr(importlib.import_module(f"pyod.models.{ours}"), theirs)
    train, test = table
    hp = {"aggregate": "pyod"} if ours == "ecod" else {}
    det = create(ours, **hp)
    fit_scores = det.fit_score(rep(train))
    ref = ref_cls().fit(train)
    np.testing.assert_allclose(fit_scores, ref.decision_scores_, rtol=1e-6, atol=1e-9)
    # PyOD scores a batch jointly with the training rows; for a batch of one row the
    # definitions agree, as long as that row does not flip the sign of a column's skewness
    # (PyOD takes it from train + row, we from train)
    from scipy.stats import skew

    same = [bool((np.sign(skew(np.vstack([train, r]), axis=0)) == np.sign(skew(train, axis=0))).all())
            for r in test]
    assert sum(same) >= 40
    ours_rows = det.score(rep(test[same]))
    theirs_rows = [ref.decision_function(row[None])[0] for row in test[same]]
    np.testing.assert_allclose(ours_rows, theirs_rows, rtol=1e-6, atol=1e-9)


def test_ecod_paper_aggregate_by_hand():
    # training column [1, 2, 3, 4] (skew 0 → the auto tail is the right one), query 0:
    # left: (1 + 0)/5 → U_l = log 5; right: (1 + 4)/5 → U_r = 0. Two copies of the column:
    # paper: max(2 log 5, 0, 0) = 2 log 5; pyod: Σ max(U_l, U_r, U_l + U_r) = 2 log 5.
    x = np.tile(np.array([[1.0], [2], [3], [4]]), (1, 2))
    for agg in ("paper", "pyod"):
        det = create("ecod", aggregate=agg).fit(rep(x))
        assert det.score(rep(np.array([[0.0, 0.0]])))[0] == pytest.approx(2 * math.log(5))
    # columns skewed in opposite directions, a query extreme low in col 0 and high in col 1:
    # paper takes the max of the *sums* (left sum, right sum, skew-chosen sum)
    train = np.array([[0.0, 0.0], [0, 1], [1, 0], [10, 10], [0, 0]])  # both columns: γ > 0
    det = create("ecod").fit(rep(train))
    q = np.array([[-1.0, 20.0]])
    ul = np.array([math.log(6 / 1), math.log(6 / 6)])  # #≤: 0 and 5 of the 5 rows
    ur = np.array([math.log(6 / 6), math.log(6 / 1)])
    want = max(ul.sum(), ur.sum(), ur.sum())  # both γ > 0 → the skew tail is the right one
    assert det.score(rep(q))[0] == pytest.approx(want)
    assert create("ecod", aggregate="pyod").fit(rep(train)).score(rep(q))[0] == pytest.approx(
        np.maximum(ul, ur).sum()
    )


def test_hbos_equals_pyod_and_hand(table):
    from pyod.models.hbos import HBOS

    train, test = table
    outside = np.array([[train[:, 0].min() - 1e-3, 0, 0, 0, 1.0], [1e3, 0, 0, 0, 1.0]])
    test = np.concatenate([test, outside])
    for bins in (5, 10, 20):
        det = create("hbos", n_bins=bins)
        fit_scores = det.fit_score(rep(train))
        ref = HBOS(n_bins=bins).fit(train)
        np.testing.assert_allclose(fit_scores, ref.decision_scores_, rtol=1e-9)
        np.testing.assert_allclose(det.score(rep(test)), ref.decision_function(test), rtol=1e-9)
    # by hand: column [0, 0, 0, 1], 2 bins on [0, 1] of width 0.5: densities 1.5 and 0.5
    det = create("hbos", n_bins=2, alpha=0.1, tol=0.5).fit(rep(np.array([[0.0], [0], [0], [1]])))
    got = det.score(rep(np.array([[0.2], [0.9], [1.2], [5.0]])))
    lo, hi = -math.log2(1.5 + 0.1), -math.log2(0.5 + 0.1)
    # 0.2 → bin 1; 0.9 → bin 2; 1.2 is 0.2 above the last edge, within tol · width = 0.25 → bin 2;
    # 5.0 is farther → the feature's lowest density, that of bin 2
    np.testing.assert_allclose(got, [lo, hi, hi, hi])


# -- all: persistence, errors ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_persistence_round_trip_is_bit_identical(name, table, tmp_path):
    train, test = table
    det = create(name).fit(rep(train))
    encoded, arrays = encode_state(det.fitted_state(), "s.")
    save_file(arrays, str(tmp_path / "a.safetensors"))
    state = decode_state(encoded, load_file(str(tmp_path / "a.safetensors")))
    loaded = get(name).from_state(det.get_params(), state)
    np.testing.assert_array_equal(loaded.score(rep(test)), det.score(rep(test)))


@pytest.mark.parametrize(
    ("name", "hp", "match"),
    [("lof", {"n_neighbors": 500}, "n_neighbors"), ("kthnn", {"n_neighbors": 0}, "n_neighbors"),
     ("hbos", {"n_bins": 1}, "n_bins"), ("kde", {"bandwidth": -1.0}, "bandwidth"),
     ("ecod", {"aggregate": "mean"}, "aggregate"), ("ocsvm", {"nu": 0.0}, "nu")],
)
def test_bad_hyperparameters_raise_clearly(name, hp, match, table):
    with pytest.raises(ValueError, match=match):
        create(name, **hp).fit(rep(table[0]))


def test_scores_rank_a_planted_outlier_first():
    # every detector, fitted on a Gaussian blob, scores a far point above all blob points
    # (axis-aligned scales 3, 1, 0.3, 0.1: pca keeps 2 directions; the planted point is 10σ
    # out in the two minor ones, so it is also extreme in those features' marginals)
    rng = np.random.default_rng(5)
    scale = np.array([3.0, 1.0, 0.3, 0.1])
    train = rng.normal(size=(300, 4)) * scale
    test = np.concatenate([rng.normal(size=(50, 4)) * scale, [[0.0, 0.0, 3.0, 1.0]]])
    for name in NAMES:
        s = create(name).fit(rep(train)).score(rep(test))
        assert s[-1] > s[:-1].max(), name
