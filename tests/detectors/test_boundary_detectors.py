"""fDBD, NCI, GradNorm, OpenMax and WeiPer against hand computations and plain references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import brentq
from scipy.spatial import distance as spd

from unseen import Representation
from unseen.detectors import MissingInputError, create, get
from unseen.detectors.openset import LIBMR_TRANSLATE, fit_high, weibull_mle
from unseen.detectors.weiper import _bin_counts, _histograms, _smooth

NAMES = ["fdbd", "nci", "gradnorm", "openmax", "weiper"]
#: small settings so the WeiPer tests stay fast
WEIPER_SMALL = {"n_repeats": 4, "n_bins": 10, "smoothing": 3, "smoothing_perturbed": 4}


def _rep(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, labels=None) -> Representation:
    features = np.asarray(features, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    return Representation(
        features=features, logits=features @ weight.T + bias, labels=labels, weight=weight, bias=bias
    )


@pytest.fixture
def aligned() -> tuple[Representation, Representation]:
    """(train, test): 3 Gaussian classes in 6-D with a head aligned to the class centres, so every
    class has plenty of correctly classified samples; the test set mixes ID and far-away points."""
    rng = np.random.default_rng(1)
    centres = 3.0 * rng.normal(size=(3, 6))
    labels = np.repeat(np.arange(3), 60)
    train = centres[labels] + rng.normal(size=(180, 6))
    test = np.vstack([centres[[0, 1, 2, 0]] + rng.normal(size=(4, 6)), 4 * rng.normal(size=(7, 6))])
    bias = np.array([0.1, -0.2, 0.3])
    return _rep(train, centres, bias, labels), _rep(test, centres, bias)


def _small(name: str, **params):
    if name == "weiper":
        params = {**WEIPER_SMALL, **params}
    return create(name, **params)


# -- shared behaviour ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_unchunked(name: str, aligned) -> None:
    train, test = aligned
    det = _small(name).fit(train)
    whole = det.score(test)
    det.chunk_size = 3
    np.testing.assert_allclose(det.score(test), whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_fitted_state_round_trip(name: str, aligned) -> None:
    train, test = aligned
    det = _small(name).fit(train)
    state = det.fitted_state()
    allowed = (np.ndarray, int, float, str, bool, type(None), np.generic)
    for key, value in state.items():
        items = value if isinstance(value, list) else [value]
        assert all(isinstance(v, allowed) for v in items), (key, type(value))
    copies = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()}
    rebuilt = get(name).from_state(det.get_params(), copies)
    np.testing.assert_array_equal(rebuilt.score(test), det.score(test))


@pytest.mark.parametrize("name", ["fdbd", "nci", "gradnorm", "weiper"])
def test_head_is_required_at_fit_only(name: str, aligned) -> None:
    train, test = aligned
    with pytest.raises(MissingInputError, match="head"):
        _small(name).fit(Representation(features=train.features))
    det = _small(name).fit(train)
    features_only = Representation(features=test.features)
    np.testing.assert_array_equal(det.score(features_only), det.score(test))


# -- fDBD ---------------------------------------------------------------------------------------
def test_fdbd_hand_computed_2d() -> None:
    weight = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
    bias = [0.0, 0.5, 0.0]
    train = _rep([[1.0, 1.0], [3.0, 1.0], [2.0, 4.0]], weight, bias)  # mean (2, 2)
    test = _rep([[3.0, 1.0]], weight, bias)
    # logits (3, 1.5, -4): class 0; gaps 1.5 / |(1,-1)| and 7 / |(2,1)|
    mean_distance = (1.5 / math.sqrt(2) + 7 / math.sqrt(5)) / 2
    det = create("fdbd").fit(train)
    assert det.score(test)[0] == pytest.approx(-mean_distance / math.sqrt(2), rel=1e-12)
    det = create("fdbd", distance_as_normalizer=False).fit(train)
    assert det.score(test)[0] == pytest.approx(-mean_distance / math.sqrt(10), rel=1e-12)


def test_fdbd_matches_geometric_projection_reference(aligned) -> None:
    train, test = aligned
    w, b = train.weight, train.bias
    mean = train.features.mean(axis=0)
    expected = []
    for x in test.features:
        c = int(np.argmax(w @ x + b))
        distances = []
        for j in range(len(w)):
            if j == c:
                continue
            normal, offset = w[c] - w[j], b[c] - b[j]
            # foot of the perpendicular from x onto the boundary {y : normal·y + offset = 0}
            foot = x - (normal @ x + offset) / (normal @ normal) * normal
            distances.append(np.linalg.norm(x - foot))
        expected.append(-np.mean(distances) / np.linalg.norm(x - mean))
    np.testing.assert_allclose(create("fdbd").fit(train).score(test), expected, rtol=1e-10)


def test_fdbd_rejects_duplicate_class_weights() -> None:
    train = _rep([[1.0, 2.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], [0.0, 1.0])
    with pytest.raises(ValueError, match="identical weight"):
        create("fdbd").fit(train)
    with pytest.raises(ValueError, match="True or False"):
        create("fdbd", distance_as_normalizer="yes").fit(train)


# -- NCI ----------------------------------------------------------------------------------------
def test_nci_hand_computed_2d() -> None:
    weight, bias = [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]
    train = _rep([[0.0, 0.0], [2.0, 2.0]], weight, bias)  # global mean (1, 1)
    test = _rep([[3.0, 1.0]], weight, bias)
    # class 0; centred (2, 0): w0·(2,0)/2 = 1; ‖x‖₁ = 4
    assert create("nci", alpha=0.1).fit(train).score(test)[0] == pytest.approx(-1.4, rel=1e-12)
    assert create("nci", alpha=0.0).fit(train).score(test)[0] == pytest.approx(-1.0, rel=1e-12)


def test_nci_matches_loop_reference(aligned) -> None:
    train, test = aligned
    mean = train.features.mean(axis=0)
    expected = []
    for x in test.features:
        c = int(np.argmax(train.weight @ x + train.bias))
        centred = x - mean
        proximity = sum(train.weight[c, d] * centred[d] for d in range(len(x)))
        proximity /= math.sqrt(sum(v * v for v in centred))
        expected.append(-(proximity + 0.01 * sum(abs(v) for v in x)))
    np.testing.assert_allclose(create("nci", alpha=0.01).fit(train).score(test), expected, rtol=1e-10)


def test_nci_rejects_negative_alpha(aligned) -> None:
    with pytest.raises(ValueError, match="alpha"):
        create("nci", alpha=-1.0).fit(aligned[0])


# -- GradNorm -----------------------------------------------------------------------------------
def test_gradnorm_hand_computed() -> None:
    weight, bias = [[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0]
    x = [[math.log(3.0), 1.0]]  # logits (ln 3, 0): p = (3/4, 1/4), ‖p − u‖₁ = 1/2
    det = create("gradnorm").fit(_rep(x, weight, bias))
    assert det.score(_rep(x, weight, bias))[0] == pytest.approx(-0.5 * (math.log(3) + 1), rel=1e-12)


def test_gradnorm_equals_autograd_of_the_papers_loss() -> None:
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU()).double()
    fc = torch.nn.Linear(6, 5).double()
    n_classes = fc.out_features
    inputs = torch.randn(6, 4, dtype=torch.float64) * 2
    with torch.no_grad():
        features = body(inputs)
    rep = _rep(features.numpy(), fc.weight.detach().numpy(), fc.bias.detach().numpy())
    scores = create("gradnorm").fit(rep).score(rep)
    logsoftmax = torch.nn.LogSoftmax(dim=-1)
    for i, x in enumerate(inputs):
        uniform = torch.ones(1, n_classes) / n_classes
        for targets, factor in ((uniform, 1.0), (torch.ones(1, n_classes), n_classes)):
            body.zero_grad()
            fc.zero_grad()
            loss = torch.mean(torch.sum(-targets * logsoftmax(fc(body(x[None]))), dim=-1))
            loss.backward()
            grad_norm = fc.weight.grad.abs().sum().item()
            # targets 1/C: KL(u‖p) of the paper; ones (the authors' code): C times that
            assert -scores[i] * factor == pytest.approx(grad_norm, rel=1e-6)


# -- OpenMax ------------------------------------------------------------------------------------
def _weibull_mle(values: np.ndarray) -> tuple[float, float]:
    """Two-parameter Weibull MLE from its profile equation, solved with brentq."""
    y = values / values.max()  # the shape equation is scale-free; this avoids overflow

    def shape_equation(k: float) -> float:
        yk = y**k
        return (yk * np.log(y)).sum() / yk.sum() - 1.0 / k - np.log(y).mean()

    k = brentq(shape_equation, 1e-3, 1e8, xtol=1e-12, rtol=1e-14, maxiter=500)
    return k, values.max() * np.mean(y**k) ** (1.0 / k)


def _libmr_fit(distances: np.ndarray, tailsize: int) -> tuple[float, float, float]:
    tail = sorted(distances)[-tailsize:]
    small = tail[0]
    shape, scale = _weibull_mle(np.array([t + 10000.0 - small for t in tail]))
    return shape, scale, small


def _libmr_cdf(d: float, shape: float, scale: float, small: float) -> float:
    return 1.0 - math.exp(-(((d + 10000.0 - small) / scale) ** shape))


def test_fit_high_matches_libmr_procedure_with_independent_mle() -> None:
    rng = np.random.default_rng(3)
    distances = rng.gamma(2.0, 1.5, size=200)
    shape, scale, small = fit_high(distances, 20)
    ref_shape, ref_scale, ref_small = _libmr_fit(list(distances), 20)
    assert LIBMR_TRANSLATE == 10000.0
    assert small == ref_small == np.sort(distances)[-20]
    assert shape == pytest.approx(ref_shape, rel=1e-9)
    assert scale == pytest.approx(ref_scale, rel=1e-12)
    # scipy's generic maximum-likelihood fit agrees to its optimiser's precision
    tail = np.sort(distances)[-20:] + 10000.0 - small
    sp_shape, _, sp_scale = stats.weibull_min.fit(tail, floc=0)
    assert shape == pytest.approx(sp_shape, rel=1e-5)
    assert scale == pytest.approx(sp_scale, rel=1e-9)


def test_weibull_mle_on_known_weibull_data_agrees_with_scipy() -> None:
    sample = 3.0 * np.random.default_rng(4).weibull(2.0, size=5000)
    shape, scale = weibull_mle(sample)
    sp_shape, _, sp_scale = stats.weibull_min.fit(sample, floc=0)
    # scipy's generic optimiser stops ~1e-5 short of the maximum; ours is the exact root,
    # so it agrees to that precision and its likelihood is at least as high
    assert shape == pytest.approx(sp_shape, rel=1e-4)
    assert scale == pytest.approx(sp_scale, rel=1e-4)
    loglik = stats.weibull_min.logpdf(sample, shape, scale=scale).sum()
    assert loglik >= stats.weibull_min.logpdf(sample, sp_shape, scale=sp_scale).sum()
    assert shape == pytest.approx(2.0, rel=0.05)
    assert scale == pytest.approx(3.0, rel=0.05)


def test_fit_high_rejects_a_constant_tail() -> None:
    with pytest.raises(ValueError, match="identical"):
        fit_high(np.ones(30), 20)


def test_openmax_recalibration_hand_made_three_classes() -> None:
    mav = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    shape = np.array([2.0, 3.0, 1.5])
    scale = np.array([10000.5, 10001.0, 10000.2])
    small = np.array([0.01, 0.02, 0.005])
    state = {
        "mav_": mav,
        "weibull_shape_": shape,
        "weibull_scale_": scale,
        "weibull_small_": small,
        "fitted_": True,
        "n_features_in_": None,
        "n_classes_in_": 3,
    }
    det = get("openmax").from_state({"tailsize": 20, "alpha": 2, "distance": "eucos"}, state)
    v = np.array([3.0, 1.0, 2.0])
    cdf = [
        _libmr_cdf(spd.euclidean(v, mav[c]) / 200 + spd.cosine(v, mav[c]), shape[c], scale[c], small[c])
        for c in range(3)
    ]
    # alpha = 2: class 0 ranks first (weight 2/2), class 2 second (weight 1/2), class 1 untouched
    omega = [1.0 * cdf[0], 0.0, 0.5 * cdf[2]]
    revised = [v[c] * (1 - omega[c]) for c in range(3)]
    unknown = sum(v[c] * omega[c] for c in range(3))
    expected = math.exp(unknown) / (math.exp(unknown) + sum(math.exp(r) for r in revised))
    score = det.score(Representation(logits=v[None]))[0]
    assert score == pytest.approx(expected, rel=1e-10)
    assert 0.0 < expected < 1.0 and min(cdf) > 0.01  # the example exercises the recalibration


def test_openmax_matches_loop_reference(aligned) -> None:
    train, test = aligned
    tailsize, alpha = 15, 2
    det = create("openmax", tailsize=tailsize, alpha=alpha).fit(train)
    logits, labels = train.logits, train.labels
    models = []
    for c in range(3):
        avs = [v for v, y in zip(logits, labels, strict=True) if y == c and np.argmax(v) == c]
        mav = np.mean(avs, axis=0)
        dists = [spd.euclidean(mav, v) / 200 + spd.cosine(mav, v) for v in avs]
        models.append((mav, *_libmr_fit(dists, tailsize)))
    expected = []
    for v in test.logits:
        ranked = np.argsort(v)[::-1][:alpha]
        weights = np.zeros(3)
        for i, c in enumerate(ranked, start=1):
            weights[c] = (alpha + 1 - i) / alpha
        revised, unknown = [], 0.0
        for c, (mav, shape, scale, small) in enumerate(models):
            d = spd.euclidean(mav, v) / 200 + spd.cosine(mav, v)
            modified = v[c] * (1 - weights[c] * _libmr_cdf(d, shape, scale, small))
            revised.append(modified)
            unknown += v[c] - modified
        expected.append(math.exp(unknown) / (math.exp(unknown) + sum(math.exp(r) for r in revised)))
    np.testing.assert_allclose(det.score(test), expected, rtol=1e-7)
    np.testing.assert_allclose(det.mav_, [m[0] for m in models], rtol=1e-12)
    # far-away logits are more "unknown" than ID samples on average
    assert det.score(test)[4:].mean() > det.score(test)[:4].mean()


def test_openmax_needs_enough_correct_samples_and_search_space_drops_values(aligned) -> None:
    train, _ = aligned
    counts = [
        int(((train.labels == c) & (train.logits.argmax(1) == c)).sum()) for c in range(3)
    ]
    fewest = min(counts)
    with pytest.raises(ValueError, match="lower tailsize"):
        create("openmax", tailsize=fewest + 1).fit(train)
    space = get("openmax").search_space(train)
    assert space["tailsize"] == [t for t in [10, 20, 50, 100] if t <= fewest]
    assert space["alpha"] == [1, 2, 3]
    with pytest.raises(ValueError, match="exceeds the number of classes"):
        create("openmax", tailsize=10, alpha=4).fit(train)
    with pytest.raises(ValueError, match="distance"):
        create("openmax", tailsize=10, distance="manhattan").fit(train)


# -- WeiPer -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 3, 4, 15])
def test_weiper_smoothing_matches_torch_replicate_conv(size: int) -> None:
    # the authors' kernel: Conv1d(padding="same", padding_mode="replicate") with one uniform
    # filter per sample; samples are channels and the bins run along the length
    density = np.random.default_rng(size).random((5, 20))
    conv = torch.nn.Conv1d(5, 5, size, padding="same", padding_mode="replicate", bias=False)
    conv = conv.double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[range(5), range(5)] = 1.0 / size
        expected = conv(torch.from_numpy(density)).numpy()
    np.testing.assert_allclose(_smooth(density, size), expected, rtol=1e-12)


def _weiper_reference(train: Representation, test: Representation, p: dict, seed: int) -> list[float]:
    """A plain loop version of WeiPer+KLD as in the authors' weiper_kldiv code."""
    w, b = train.weight, train.bias
    r, n_bins = p["n_repeats"], p["n_bins"]
    n_classes, dim = w.shape
    noise = np.random.default_rng(seed).standard_normal((r, n_classes, dim))
    rows, biases = [], []
    for k in range(r):
        for c in range(n_classes):
            direction = noise[k, c] / np.linalg.norm(noise[k, c])
            rows.append(w[c] + p["perturbation_distance"] * np.linalg.norm(w[c]) * direction)
            biases.append(b[c])
    rows, biases = np.array(rows), np.array(biases)

    def perturbed(x):
        return [float(row @ x + bias) for row, bias in zip(rows, biases, strict=True)]

    def histogram(values, lo, hi):
        edges = np.linspace(lo, hi + 1e-8, n_bins + 1)
        counts = [0] * n_bins
        for v in values:
            for j in range(n_bins):
                if edges[j] <= v < edges[j + 1]:
                    counts[j] += 1
        return np.array(counts) / len(values)

    def smooth(h, size):
        left = (size - 1) // 2
        return np.array(
            [np.mean([h[min(max(i - left + j, 0), n_bins - 1)] for j in range(size)]) for i in range(n_bins)]
        )

    def sym_kl(p_, q_, eps):
        p_ = (p_ + eps) / (p_ + eps).sum()
        q_ = (q_ + eps) / (q_ + eps).sum()
        return sum(a * math.log(a / c) + c * math.log(c / a) for a, c in zip(p_, q_, strict=True))

    train_z = [perturbed(x) for x in train.features]
    lo, hi = train.features.min(), train.features.max()
    lo_p, hi_p = min(map(min, train_z)), max(map(max, train_z))
    mean_h = np.mean([histogram(x, lo, hi) for x in train.features], axis=0)
    mean_hp = np.mean([histogram(z, lo_p, hi_p) for z in train_z], axis=0)
    scores = []
    for x in test.features:
        z = perturbed(x)
        kl = sym_kl(mean_h, smooth(histogram(x, lo, hi), p["smoothing"]), 0.01)
        kl_p = sym_kl(mean_hp, smooth(histogram(z, lo_p, hi_p), p["smoothing_perturbed"]), 0.025)
        msp = 0.0
        for k in range(r):
            head = np.exp(z[k * n_classes : (k + 1) * n_classes])
            msp += max(head) / sum(head) / r
        scores.append(kl + p["lambda_1"] * kl_p - p["lambda_2"] * msp)
    return scores


def test_weiper_matches_loop_reference(aligned) -> None:
    train, test = aligned
    params = {**WEIPER_SMALL, "perturbation_distance": 2.1, "lambda_1": 1.5, "lambda_2": 0.7}
    det = create("weiper", seed=5, **params).fit(train)
    expected = _weiper_reference(train, test, {**params}, seed=5)
    np.testing.assert_allclose(det.score(test), expected, rtol=1e-9)


def test_weiper_perturbations_have_the_relative_length_delta(aligned) -> None:
    train, _ = aligned
    det = create("weiper", perturbation_distance=1.8, **WEIPER_SMALL).fit(train)
    w_tilde, b_tilde = det._perturbed_head()
    w = train.weight
    shift = w_tilde.reshape(4, 3, -1) - w[None]
    expected = np.tile(1.8 * np.linalg.norm(w, axis=1), (4, 1))
    np.testing.assert_allclose(np.linalg.norm(shift, axis=2), expected, rtol=1e-12)
    np.testing.assert_array_equal(b_tilde, np.tile(train.bias, 4))


def test_weiper_is_deterministic_under_a_seed(aligned) -> None:
    train, test = aligned
    first = create("weiper", seed=3, **WEIPER_SMALL).fit(train).score(test)
    second = create("weiper", seed=3, **WEIPER_SMALL).fit(train).score(test)
    other = create("weiper", seed=4, **WEIPER_SMALL).fit(train).score(test)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_weiper_checksum_catches_a_different_perturbation(aligned) -> None:
    train, test = aligned
    det = create("weiper", **WEIPER_SMALL).fit(train)
    state = {**det.fitted_state(), "perturbation_checksum_": det.perturbation_checksum_ + 1.0}
    with pytest.raises(RuntimeError, match="refit"):
        get("weiper").from_state(det.get_params(), state).score(test)


def test_weiper_validates_hyperparameters(aligned) -> None:
    with pytest.raises(ValueError, match="exceeds n_bins"):
        create("weiper", n_bins=10, smoothing=11).fit(aligned[0])
    with pytest.raises(ValueError, match="perturbation_distance"):
        create("weiper", perturbation_distance=0.0).fit(aligned[0])


def test_weiper_fit_in_chunks_equals_one_pass(aligned) -> None:
    train, test = aligned
    whole = create("weiper", **WEIPER_SMALL).fit(train)
    chunked = create("weiper", **WEIPER_SMALL)
    chunked.chunk_size = 7  # fit streams the training rows in chunks of this size
    chunked.fit(train)
    for key in ("feature_range_", "perturbed_range_", "feature_density_", "perturbed_density_"):
        np.testing.assert_allclose(getattr(chunked, key), getattr(whole, key), rtol=1e-12)
    np.testing.assert_allclose(chunked.score(test), whole.score(test), rtol=1e-12)


def test_weiper_histograms_match_searchsorted_on_edges_and_non_finite_values() -> None:
    # The bins are guessed from the equal spacing and then corrected; the reference is the plain
    # per-value search over np.linspace's edges (values outside count in the denominator only).
    # Ranges down to a few float spacings wide, where the edges themselves are rounded coarsely.
    rng = np.random.default_rng(7)
    coarse = 0
    for _ in range(300):
        lo = rng.normal() * 10 ** rng.uniform(-3, 7)
        hi = lo + abs(rng.normal()) * 10 ** rng.uniform(-12, 3)
        n_bins = int(rng.integers(2, 300))
        edges = np.linspace(lo, hi + 1e-8, n_bins + 1)
        coarse += np.diff(edges).min() < 1e3 * np.spacing(np.abs(edges).max())
        row = np.concatenate([
            edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
            rng.uniform(lo - 1, hi + 1, 300), [np.nan, np.inf, -np.inf, 1e300, -1e300],
        ])
        values = np.stack([row, rng.permutation(row)])
        expected = np.zeros((2, n_bins))
        for i, v in enumerate(values):
            idx = np.searchsorted(edges, v, side="right") - 1
            expected[i] = np.bincount(idx[(idx >= 0) & (idx < n_bins)], minlength=n_bins)
        expected /= values.shape[1]
        np.testing.assert_array_equal(_histograms(values, lo, hi, n_bins), expected)
        np.testing.assert_array_equal(
            _bin_counts(values, lo, hi, n_bins), (expected * values.shape[1]).sum(axis=0).round()
        )
    assert 20 < coarse < 280  # both the guessed and the searched bins are exercised


def test_weiper_score_grid_over_score_only_params_equals_fresh_detectors(aligned,
                                                                        monkeypatch) -> None:
    train, test = aligned
    det = create("weiper", **WEIPER_SMALL).fit(train)
    grid = [
        {"lambda_1": 0.1, "lambda_2": 1.0, "smoothing": 1, "smoothing_perturbed": 10},
        {"lambda_1": 4.0, "lambda_2": 0.0, "smoothing": 10, "smoothing_perturbed": 2},
        {"lambda_1": 2.5, "lambda_2": 0.1, "smoothing": 3, "smoothing_perturbed": 4},
    ]
    for params in grid:
        got = det.set_params(**params).score(test)
        fresh = create("weiper", **{**WEIPER_SMALL, **params}).fit(train).score(test)
        np.testing.assert_array_equal(got, fresh)
    calls = []
    terms = type(det)._sample_terms
    monkeypatch.setattr(type(det), "_sample_terms", lambda self, rep: calls.append((self, rep))
                        or terms(self, rep))
    for params, got in zip(grid, det.score_grid(test, grid), strict=True):
        fresh = create("weiper", **{**WEIPER_SMALL, **params}).fit(train).score(test)
        np.testing.assert_array_equal(got, fresh)
    assert calls.count((det, test)) == 1  # its histograms computed once for the three points
    # a refit with another perturbation must not reuse the old histograms
    det.set_params(perturbation_distance=0.7).fit(train)
    fresh = create("weiper", **{**WEIPER_SMALL, **params, "perturbation_distance": 0.7}).fit(train)
    np.testing.assert_array_equal(det.score(test), fresh.score(test))


def test_weiper_does_not_depend_on_thread_count(aligned, monkeypatch) -> None:
    from unseen.detectors import _threads

    train, test = aligned
    before = create("weiper", **WEIPER_SMALL).fit(train)
    monkeypatch.setattr(_threads, "worker_count", lambda: 3)
    after = create("weiper", **WEIPER_SMALL)
    after.chunk_size = 50  # several fit chunks, shared among the threads
    after.fit(train)
    for key in ("feature_range_", "perturbed_range_", "feature_density_", "perturbed_density_"):
        np.testing.assert_allclose(getattr(after, key), getattr(before, key), rtol=1e-12)
    np.testing.assert_allclose(after.score(test), before.score(test), rtol=1e-12)
