"""Anomaly-map detectors against independent straightforward implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from unseen import Representation
from unseen.detectors import maps as mapdet
from unseen.detectors.maps.base import anomaly_maps
from unseen.detectors.maps.patchcore import greedy_coreset, greedy_coresets, project


def _rep(n: int, seed: int, shift: float = 0.0, grid: int = 4, dim: int = 6) -> Representation:
    rng = np.random.default_rng(seed)
    patches = rng.normal(size=(n, grid, grid, dim)).astype(np.float32)
    patches[:, 1, 2] += shift  # a "defect" at one position
    return Representation(
        features=patches.mean(axis=(1, 2)),
        labels=np.zeros(n, dtype=np.int64),
        layers={"patches": patches},
        meta={"dims": [2, 4]},
    )


def _naive_greedy(x: np.ndarray, n: int, first: int) -> list[int]:
    chosen = [first]
    for _ in range(n - 1):
        d = cdist(x, x[chosen], "sqeuclidean").min(axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def test_greedy_coreset_matches_a_naive_loop() -> None:
    x = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    got = greedy_coreset(x, 25, seed=3)
    assert list(got) == _naive_greedy(x, 25, int(got[0]))
    assert got[0] == np.random.default_rng(3).integers(300, size=1)[0]
    chunks = np.random.default_rng(1).normal(size=(3, 200, 5)).astype(np.float32)
    both = greedy_coresets(chunks, 10, seed=4)
    for c in range(3):
        assert list(both[c]) == _naive_greedy(chunks[c], 10, int(both[c, 0]))


def test_patchcore_maps_and_reweighted_score_by_brute_force() -> None:
    train, test = _rep(12, 0), _rep(5, 1, shift=4.0)
    det = mapdet.create("patchcore", coreset_ratio=1.0, num_neighbors=3).fit(train)
    maps, scores = det.maps_and_scores(test)
    bank = train.layers["patches"].reshape(-1, 6).astype(np.float64)
    query = test.layers["patches"].reshape(5, -1, 6).astype(np.float64)
    for i in range(5):
        d = cdist(query[i], bank)
        patch = d.min(axis=1)
        assert np.allclose(maps[i].ravel(), patch, rtol=1e-5)
        star = int(np.argmax(patch))
        m_star = int(np.argmin(d[star]))
        support = np.argsort(cdist(bank[[m_star]], bank)[0], kind="stable")[:3]
        e = np.exp(d[star, support] - d[star, support].max())
        weight = 1 - e[0] / e.sum()  # support[0] is m* itself (distance 0 to itself)
        assert scores[i] == pytest.approx(weight * patch[star], rel=1e-5)
    assert (np.unravel_index(maps[0].argmax(), maps[0].shape)) == (1, 2)


def test_patchcore_chunked_coreset_keeps_ratio_and_global_is_greedy_on_projection() -> None:
    train = _rep(20, 0, dim=6)  # 320 patches
    chunked = mapdet.PatchCore(coreset_ratio=0.1, chunk=100).fit(train)
    assert len(chunked.bank_) == 4 * 8  # 320 patches in ceil(320 / 100) = 4 chunks of 80, 10 % each
    whole = mapdet.PatchCore(coreset_ratio=0.1, chunk=None, projection_dim=4).fit(train)
    flat = train.layers["patches"].reshape(-1, 6)
    expected = np.sort(greedy_coreset(project(flat, 4, 0), 32, 0))
    assert np.array_equal(whole.bank_, flat[expected])


def test_padim_matches_per_position_mahalanobis() -> None:
    train, test = _rep(30, 0), _rep(3, 1, shift=3.0)
    det = mapdet.create("padim", n_channels=4, eps=0.01, seed=0).fit(train)
    got = det.maps(test)
    ch = det.channels_
    for i, j in [(0, 0), (1, 2), (3, 1)]:
        x = train.layers["patches"][:, i, j][:, ch].astype(np.float64)
        prec = np.linalg.inv(np.cov(x, rowvar=False) + 0.01 * np.eye(4))
        diff = test.layers["patches"][:, i, j][:, ch] - x.mean(axis=0)
        want = np.sqrt(np.einsum("nc,cd,nd->n", diff, prec, diff))
        assert np.allclose(got[:, i, j], want, rtol=1e-4)


def test_spade_by_brute_force() -> None:
    train, test = _rep(15, 0), _rep(4, 1, shift=3.0)
    det = mapdet.create("spade", k=5, gallery=3).fit(train)
    maps, scores = det.maps_and_scores(test)
    d_img = cdist(test.features, train.features)
    for i in range(4):
        near = np.argsort(d_img[i], kind="stable")
        assert scores[i] == pytest.approx(d_img[i, near[:5]].mean(), rel=1e-5)
        gallery = train.layers["patches"][near[:3]].reshape(-1, 6)
        want = cdist(test.layers["patches"][i].reshape(-1, 6), gallery).min(axis=1)
        assert np.allclose(maps[i].ravel(), want, rtol=1e-4)


def test_dfm_matches_sklearn_pca_reconstruction() -> None:
    train, test = _rep(20, 0), _rep(3, 1, shift=2.0)
    det = mapdet.create("dfm", variance=0.9).fit(train)
    flat = train.layers["patches"].reshape(-1, 6).astype(np.float64)
    pca = PCA(n_components=0.9, svd_solver="full").fit(flat)
    assert det.components_.shape[1] == pca.n_components_
    q = test.layers["patches"].reshape(-1, 6).astype(np.float64)
    recon = pca.inverse_transform(pca.transform(q))
    want = ((q - recon) ** 2).sum(axis=1).reshape(3, 4, 4)
    maps, scores = det.maps_and_scores(test)
    assert np.allclose(maps, want, rtol=1e-6, atol=1e-9)
    assert np.allclose(scores, want.reshape(3, -1).max(axis=1))


def test_gaussian_ad_sums_ledoit_wolf_mahalanobis_over_stages() -> None:
    train, test = _rep(40, 0), _rep(5, 1, shift=1.0)
    got = mapdet.create("gaussian_ad").fit(train).score(test)
    want = np.zeros(5)
    for lo, hi in [(0, 2), (2, 6)]:
        lw = LedoitWolf().fit(train.features[:, lo:hi].astype(np.float64))
        want += np.sqrt(lw.mahalanobis(test.features[:, lo:hi].astype(np.float64)))
    assert np.allclose(got, want, rtol=1e-8)
    with pytest.raises(TypeError, match="no anomaly map"):
        mapdet.create("gaussian_ad").fit(train).maps(test)


def test_anomaly_maps_bilinear_then_gaussian() -> None:
    # 2x2 -> 4x4 bilinear (half-pixel centres): columns 0, 0.25, 0.75, 1 for a [0, 1] ramp.
    up = anomaly_maps(np.array([[[0.0, 1.0], [0.0, 1.0]]]), (4, 4), sigma=0)
    assert np.allclose(up[0], np.tile([0.0, 0.25, 0.75, 1.0], (4, 1)))
    # A unit impulse blurred with sigma 4 peaks at 1 / (2 pi sigma^2) and keeps its mass.
    delta = np.zeros((1, 64, 64))
    delta[0, 32, 32] = 1.0
    blurred = anomaly_maps(delta, (64, 64), sigma=4.0)
    assert blurred[0, 32, 32] == pytest.approx(1 / (2 * np.pi * 16), rel=1e-2)
    assert blurred.sum() == pytest.approx(1.0, rel=1e-4)


def test_map_detectors_refuse_other_grids_and_missing_patches() -> None:
    det = mapdet.create("padim", n_channels=4).fit(_rep(10, 0))
    with pytest.raises(ValueError, match="grids"):
        det.maps(_rep(2, 1, grid=5))
    with pytest.raises(ValueError, match="patch features"):
        mapdet.create("patchcore").fit(Representation(features=np.zeros((3, 2))))
    with pytest.raises(ValueError, match="unknown map detector"):
        mapdet.create("padim2")
