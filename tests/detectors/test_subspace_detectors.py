"""ViM and Residual (Wang et al., CVPR 2022) against plain references written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unseen.detectors import MissingInputError, create, get
from unseen.detectors.subspace import default_dim
from unseen.representation import Representation

D, C = 6, 4


@pytest.fixture(scope="module")
def train() -> Representation:
    rng = np.random.default_rng(0)
    # Anisotropic features so the principal subspace is well defined.
    x = rng.normal(size=(50, D)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.25])
    return Representation(
        features=np.maximum(x + 1.0, 0.0).astype(np.float32),
        weight=rng.normal(size=(C, D)).astype(np.float32),
        bias=rng.normal(size=C).astype(np.float32),
    )


@pytest.fixture(scope="module")
def test_rep(train: Representation) -> Representation:
    rng = np.random.default_rng(1)
    return Representation(features=rng.normal(1.0, 2.0, size=(9, D)).astype(np.float32))


def reference_residuals(train: Representation, feats: np.ndarray, dim: int):
    """Origin, residual norms of `feats` and fitted α, computed step by step with loops."""
    w = train.weight.astype(np.float64)
    b = train.bias.astype(np.float64)
    origin = np.linalg.lstsq(w, -b, rcond=None)[0]  # the minimum-norm solution = −W⁺b
    xs = train.features.astype(np.float64)
    second_moment = np.zeros((D, D))
    for row in xs:
        y = row - origin
        second_moment += np.outer(y, y)
    second_moment /= len(xs)
    eigval, eigvec = np.linalg.eig(second_moment)
    order = np.argsort(-eigval.real)
    principal = eigvec.real[:, order[:dim]]

    def residual(row: np.ndarray) -> float:
        y = row - origin
        return float(np.linalg.norm(y - principal @ (principal.T @ y)))

    max_logits = [max(w[c] @ row + b[c] for c in range(C)) for row in xs]
    alpha = sum(max_logits) / sum(residual(row) for row in xs)
    return [residual(row) for row in feats.astype(np.float64)], alpha


def energy_of(train: Representation, row: np.ndarray) -> float:
    w, b = train.weight.astype(np.float64), train.bias.astype(np.float64)
    return -math.log(sum(math.exp(w[c] @ row + b[c]) for c in range(C)))


@pytest.mark.parametrize("dim", [2, 3])
def test_vim_matches_reference(train, test_rep, dim):
    res, alpha = reference_residuals(train, test_rep.features, dim)
    det = create("vim", dim=dim).fit(train)
    assert det.fitted_alpha_ == pytest.approx(alpha, rel=1e-9)
    expected = [
        alpha * r + energy_of(train, row)
        for r, row in zip(res, test_rep.features.astype(np.float64), strict=True)
    ]
    np.testing.assert_allclose(det.score(test_rep), expected, rtol=1e-9, atol=1e-9)


def test_vim_is_the_paper_virtual_logit_probability_in_logit_form(train, test_rep):
    # The paper scores p0 = e^{z0} / (e^{z0} + Σ e^{z_c}), z0 = α‖x^{P⊥}‖; ours is σ⁻¹(p0).
    det = create("vim", dim=3).fit(train)
    res, alpha = reference_residuals(train, test_rep.features, 3)
    w, b = train.weight.astype(np.float64), train.bias.astype(np.float64)
    for score, r, row in zip(det.score(test_rep), res, test_rep.features, strict=True):
        z0 = alpha * r
        p0 = math.exp(z0) / (math.exp(z0) + sum(math.exp(w[c] @ row + b[c]) for c in range(C)))
        assert 1.0 / (1.0 + math.exp(-score)) == pytest.approx(p0, rel=1e-9)


def test_vim_with_alpha_zero_is_energy_of_the_head_logits(train, test_rep):
    # α = 0 zeroes the virtual logit's weight: score = −log Σ_c exp z_c exactly.
    logits = test_rep.features.astype(np.float64) @ train.weight.T.astype(
        np.float64
    ) + train.bias.astype(np.float64)
    energy = create("energy").fit(Representation(logits=logits)).score(Representation(logits=logits))
    vim = create("vim", dim=3, alpha=0.0).fit(train)
    np.testing.assert_allclose(vim.score(test_rep), energy, rtol=1e-13, atol=1e-13)


def test_alpha_override_is_used_and_fitted_alpha_kept(train, test_rep):
    res, _ = reference_residuals(train, test_rep.features, 3)
    det = create("vim", dim=3, alpha=2.5).fit(train)
    expected = [
        2.5 * r + energy_of(train, row)
        for r, row in zip(res, test_rep.features.astype(np.float64), strict=True)
    ]
    np.testing.assert_allclose(det.score(test_rep), expected, rtol=1e-9, atol=1e-9)
    assert "alpha" in get("vim").score_params


@pytest.mark.parametrize("dim", [1, 4])
def test_residual_matches_reference(train, test_rep, dim):
    res, _ = reference_residuals(train, test_rep.features, dim)
    det = create("residual", dim=dim).fit(train)
    np.testing.assert_allclose(det.score(test_rep), res, rtol=1e-9, atol=1e-9)


def test_residual_ignores_moves_inside_the_principal_subspace(train, test_rep):
    det = create("residual", dim=3).fit(train)
    basis = det.residual_basis_
    # A direction orthogonal to the residual space lies in the principal subspace P.
    rng = np.random.default_rng(5)
    v = rng.normal(size=D)
    v -= basis @ (basis.T @ v)
    moved = Representation(features=(test_rep.features + 3.0 * v).astype(np.float64))
    np.testing.assert_allclose(
        det.score(moved), det.score(Representation(features=test_rep.features.astype(np.float64))),
        rtol=1e-9, atol=1e-9,
    )


def test_dim_changes_the_fit(train, test_rep):
    # OpenOOD's ViM search once returned the same scores for every dim; ours refits.
    a = create("vim", dim=2).fit(train).score(test_rep)
    b = create("vim", dim=4).fit(train).score(test_rep)
    assert not np.allclose(a, b)
    assert "dim" not in get("vim").score_params


def test_default_dim_rule_and_search_space():
    assert [default_dim(d) for d in (2048, 1500, 768, 512, 6)] == [1000, 1000, 512, 256, 3]
    def space(d):
        return get("vim").search_space(Representation(features=np.zeros((2, d), np.float32)))
    assert space(2048) == {"dim": [256, 1000]}
    assert space(512) == {"dim": [256]}
    assert space(256) == {"dim": [128]}
    assert get("residual").search_space(
        Representation(features=np.zeros((2, 6), np.float32))
    ) == {"dim": [3]}


def test_default_dim_is_the_paper_rule(train):
    assert create("vim").fit(train).residual_basis_.shape == (D, D - D // 2)


@pytest.mark.parametrize("name", ["vim", "residual"])
def test_chunked_equals_unchunked(train, test_rep, name):
    det = create(name, dim=3).fit(train)
    whole = det.score(test_rep)
    det.chunk_size = 2
    # BLAS may round a 1-row product differently from a 2-row one in the last bit.
    np.testing.assert_allclose(det.score(test_rep), whole, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["vim", "residual"])
def test_state_round_trip(train, test_rep, name):
    det = create(name, dim=3).fit(train)
    again = get(name).from_state(det.get_params(), det.fitted_state())
    np.testing.assert_array_equal(again.score(test_rep), det.score(test_rep))
    for value in det.fitted_state().values():
        assert isinstance(value, np.ndarray | float | int | bool)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("vim", {"dim": D}),
        ("vim", {"dim": 0}),
        ("residual", {"dim": 2.5}),
        ("residual", {"dim": 10}),
        ("vim", {"dim": 3, "alpha": -1.0}),
        ("vim", {"dim": 3, "alpha": float("nan")}),
    ],
)
def test_invalid_hyperparameters(train, name, params):
    with pytest.raises(ValueError, match=name):
        create(name, **params).fit(train)


def test_fit_needs_the_head(train):
    with pytest.raises(MissingInputError, match="classifier head"):
        create("vim").fit(Representation(features=train.features))
