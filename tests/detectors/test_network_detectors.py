"""ODIN, RankFeat, Gram, AdaSCALE-A/L, NAC: plain per-sample references on a tiny CNN, identities with
the cached-logit detectors, batch-size invariance, and the missing-source error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from unseen import extract
from unseen.detectors import MissingInputError, create, get
from unseen.detectors.network import balanced_rows, gram_features, nac_edges
from unseen.representation import Representation

STD = (0.5, 0.25, 2.0)
NAMES = ["odin", "rankfeat", "gram", "adascale_a", "adascale_l", "nac"]
# Tiny model: AdaSCALE's default k1 = 5 %, k2 = 1 % of 5 units would be under one unit.
PARAMS = {
    "odin": {"temperature": 10, "epsilon": 0.05},
    "rankfeat": {},
    "gram": {"powers": 3},
    "adascale_a": {"k1": 40, "k2": 20, "percentile": [20, 80]},
    "adascale_l": {"k1": 40, "k2": 20, "percentile": [20, 80]},
    "nac": {"O": 3, "beta": 20},
}


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(5, 3)
        with torch.no_grad():  # a head that predicts every class on the data below
            self.fc.weight.copy_(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 4)
            self.fc.bias.zero_()
        self.calls = 0

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu1(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.flat(self.pool(self.relu2(self.conv2(self.trunk(x))))))


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g) + 2.0 * torch.randn(n, 3, 1, 1, generator=g)
    return TensorDataset(x, torch.arange(n) % 3)


def rep_of(model: TinyCNN, n: int, seed: int, batch_size: int = 16) -> Representation:
    return extract(model, dataset(n, seed), batch_size=batch_size, progress=False, input_std=STD)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors: thread start-up dominates, and the CI machine's cores are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> TinyCNN:
    return TinyCNN()


@pytest.fixture(scope="module")
def reps(model) -> dict[str, Representation]:
    return {"train": rep_of(model, 40, 0), "val": rep_of(model, 20, 1), "test": rep_of(model, 9, 2)}


@pytest.fixture(scope="module")
def fitted(reps):
    return {n: create(n, **PARAMS[n]).fit(reps["train"], reps["val"]) for n in NAMES}


def energy(logits: np.ndarray, t: float = 1.0) -> float:
    return -t * math.log(sum(math.exp(float(v) / t) for v in logits))


# -- ODIN ----------------------------------------------------------------------------------
def test_odin_matches_a_hand_perturbation(model, reps, fitted):
    t, eps = 10.0, 0.05
    x_all = dataset(9, 2).tensors[0]
    scores = fitted["odin"].score(reps["test"])
    for i in range(9):
        x = x_all[i : i + 1].clone().requires_grad_(True)
        out = model(x)[0]
        log_s = torch.log_softmax(out / t, dim=0)[int(out.argmax())]
        (grad,) = torch.autograd.grad(log_s, x)
        step = torch.sign(-grad) / torch.tensor(STD).reshape(1, 3, 1, 1)
        with torch.no_grad():
            p = torch.softmax(model(x.detach() - eps * step)[0].double() / t, dim=0)
        assert scores[i] == pytest.approx(-float(p.max()), rel=1e-6)
    # The perturbation matters: the plain temperature-scaled MSP differs.
    plain = create("odin", temperature=t, epsilon=0.0).fit(reps["train"]).score(reps["test"])
    assert np.abs(plain - scores).max() > 1e-6


def test_odin_without_perturbation_is_msp_from_the_cache(model, reps):
    calls = model.calls
    odin = create("odin", temperature=1, epsilon=0.0).fit(reps["train"]).score(reps["test"])
    msp = create("msp").fit(reps["train"]).score(reps["test"])
    np.testing.assert_array_equal(odin, msp)
    assert model.calls == calls  # no forward pass


def test_odin_rejects_a_std_that_does_not_match_the_channels(model):
    rep = extract(model, dataset(4, 3), progress=False, input_std=(0.5, 0.5))
    with pytest.raises(ValueError, match="input_std has 2 channels"):
        create("odin").fit(rep).score(rep)


# -- RankFeat --------------------------------------------------------------------------------
def without_rank1(fmap: torch.Tensor) -> torch.Tensor:
    """Per sample, numpy SVD of the (C, HW) matrix minus its leading term."""
    out = []
    for m in fmap.double().numpy():
        mat = m.reshape(m.shape[0], -1)
        u, s, vt = np.linalg.svd(mat, full_matrices=False)
        out.append((mat - s[0] * np.outer(u[:, 0], vt[0])).reshape(m.shape))
    return torch.from_numpy(np.stack(out)).float()


def test_rankfeat_matches_manual_removal_and_the_rest_of_the_network(model, reps, fitted):
    det = fitted["rankfeat"]
    assert det.layers_ == ["conv2", "relu2"]  # the last two spatial children
    x = dataset(9, 2).tensors[0]
    with torch.no_grad():
        c2 = model.conv2(model.trunk(x))
        head = lambda f: model.fc(model.flat(model.pool(f)))  # noqa: E731
        z_conv2 = head(model.relu2(without_rank1(c2))).double().numpy()
        z_relu2 = head(without_rank1(model.relu2(c2))).double().numpy()
    expected = [energy((a + b) / 2) for a, b in zip(z_conv2, z_relu2, strict=True)]
    np.testing.assert_allclose(det.score(reps["test"]), expected, rtol=1e-5)


def test_rankfeat_one_named_block_with_temperature(model, reps):
    det = create("rankfeat", layers=["relu1"], temperature=2.0).fit(reps["train"])
    x = dataset(9, 2).tensors[0]
    with torch.no_grad():
        h = without_rank1(model.trunk(x))
        z = model.fc(model.flat(model.pool(model.relu2(model.conv2(h))))).double().numpy()
    np.testing.assert_allclose(det.score(reps["test"]), [energy(r, 2.0) for r in z], rtol=1e-5)


def test_rankfeat_needs_a_feature_map(reps):
    with pytest.raises(ValueError, match="feature map"):
        create("rankfeat", layers=["flat"]).fit(reps["train"]).score(reps["test"])


# -- Gram ------------------------------------------------------------------------------------
def gram_by_loops(act: np.ndarray, powers: int) -> np.ndarray:
    """(N, P, C): for each p, row sums of the full Gram matrix of act^p, then sign·|·|^(1/p)."""
    n, c = act.shape[:2]
    a = act.reshape(n, c, -1).astype(np.float64)
    out = np.zeros((n, powers, c))
    for s in range(n):
        for p in range(1, powers + 1):
            ap = a[s] ** p
            for i in range(c):
                row = sum(float(ap[i] @ ap[j]) for j in range(c))
                out[s, p - 1, i] = math.copysign(abs(row) ** (1.0 / p), row)
    return out


def test_gram_features_match_loops_including_negative_activations():
    act = torch.randn(3, 4, 2, 3, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(gram_features(act, 4).numpy(), gram_by_loops(act.numpy(), 4),
                               rtol=1e-10)


def activations(model: TinyCNN, x: torch.Tensor) -> list[np.ndarray]:
    """conv1, relu1, conv2, relu2, pool outputs, computed module by module."""
    with torch.no_grad():
        c1 = model.conv1(x)
        r1 = model.relu1(c1)
        c2 = model.conv2(r1)
        r2 = model.relu2(c2)
        return [t.numpy() for t in (c1, r1, c2, r2, model.pool(r2))]


def test_gram_matches_a_loop_reference(model, reps, fitted):
    det, powers = fitted["gram"], 3
    assert det.layers_ == ["conv1", "relu1", "conv2", "relu2", "pool"]
    feats = {k: [gram_by_loops(a, powers) for a in activations(model, dataset(n, seed).tensors[0])]
             for k, n, seed in (("train", 40, 0), ("val", 20, 1), ("test", 9, 2))}
    pred = {k: reps[k].logits.argmax(axis=1) for k in reps}
    n_layers = len(feats["train"])
    lo = [[feats["train"][l][pred["train"] == c].min(axis=0) for c in range(3)]
          for l in range(n_layers)]
    hi = [[feats["train"][l][pred["train"] == c].max(axis=0) for c in range(3)]
          for l in range(n_layers)]

    def layer_devs(k: str) -> np.ndarray:
        out = np.zeros((len(pred[k]), n_layers))
        for s, c in enumerate(pred[k]):
            for l in range(n_layers):
                for m, big, v in zip(lo[l][c].ravel(), hi[l][c].ravel(), feats[k][l][s].ravel(),
                                     strict=True):
                    out[s, l] += max(m - v, 0) / (abs(m) + 1e-6) + max(v - big, 0) / (abs(big) + 1e-6)
        return out

    norm = layer_devs("val").mean(axis=0) + 1e-7
    expected = (layer_devs("test") / norm).sum(axis=1)
    np.testing.assert_allclose(det.score(reps["test"]), expected, rtol=1e-6)


def test_gram_training_samples_deviate_by_nothing(reps, fitted):
    # Every training sample lies inside its own predicted class's ranges.
    np.testing.assert_array_equal(fitted["gram"].score(reps["train"]), 0.0)


def test_gram_scores_lower_orders_from_one_fit_and_one_pass_per_split(model, reps):
    high = create("gram", powers=3).fit(reps["train"], reps["val"])
    first = high.score(reps["test"])
    for q in (2, 1):
        fresh = create("gram", powers=q).fit(reps["train"], reps["val"])
        calls = model.calls
        np.testing.assert_allclose(high.set_params(powers=q).score(reps["test"]),
                                   fresh.score(reps["test"]), rtol=1e-12)
        assert model.calls == calls + 1  # only `fresh` ran the network; `high` reused its pass
    np.testing.assert_array_equal(high.set_params(powers=3).score(reps["test"]), first)
    with pytest.raises(ValueError, match="fitted with powers=3 and cannot score powers=4"):
        high.set_params(powers=4).score(reps["test"])


def test_gram_refit_forgets_the_deviations_of_the_old_fit(model, reps):
    det = create("gram", powers=2).fit(reps["val"], reps["val"])
    det.score(reps["test"])
    det.fit(reps["train"], reps["val"])
    fresh = create("gram", powers=2).fit(reps["train"], reps["val"])
    np.testing.assert_array_equal(det.score(reps["test"]), fresh.score(reps["test"]))


def test_gram_needs_every_class_predicted(model):
    rep = rep_of(model, 3, 0)
    with pytest.raises(ValueError, match="predicted as each class"):
        create("gram").fit(rep, rep)


# -- AdaSCALE ------------------------------------------------------------------------------
def adascale_parts(model: TinyCNN, x_all: torch.Tensor, o: float):
    """Per sample: features z and z̃ of the hand-perturbed input."""
    zs, zts = [], []
    for i in range(len(x_all)):
        x = x_all[i : i + 1].clone().requires_grad_(True)
        out = model(x)[0]
        (grad,) = torch.autograd.grad(out[int(out.argmax())], x)
        g = grad.flatten().tolist()
        n_pix = int(len(g) * o)
        chosen = sorted(range(len(g)), key=lambda j: (abs(g[j]), j))[:n_pix]
        delta = [0.0] * len(g)
        for j in chosen:
            delta[j] = 0.5 * float(np.sign(g[j]))
        x_tilde = x.detach() + torch.tensor(delta).reshape(x.shape)
        with torch.no_grad():
            feat = lambda v: model.flat(model.pool(model.relu2(model.conv2(model.trunk(v)))))  # noqa: E731
            zs.append(feat(x.detach())[0].double().numpy())
            zts.append(feat(x_tilde)[0].double().numpy())
    return zs, zts


@pytest.fixture(scope="module")
def ada_parts(model):
    return {k: adascale_parts(model, dataset(n, seed).tensors[0], 0.05)
            for k, n, seed in (("val", 20, 1), ("test", 9, 2))}


def estimate(z: np.ndarray, zt: np.ndarray, k1: int, k2: int, lmbda: float) -> float:
    order = sorted(range(len(z)), key=lambda j: -z[j])
    c_o = sum(max(zt[j], 0.0) for j in order[:k1])
    return c_o + lmbda * sum(abs(z[j] - zt[j]) for j in order[:k2])


@pytest.mark.parametrize("name", ["adascale_a", "adascale_l"])
def test_adascale_matches_a_per_sample_reference(reps, fitted, ada_parts, name):
    det = fitted[name]
    d, lo, hi, lmbda = 5, 20.0, 80.0, 10.0
    k1, k2 = int(d * 40 / 100), int(d * 20 / 100)  # 2 and 1 units
    val = [estimate(z, zt, k1, k2, lmbda) for z, zt in zip(*ada_parts["val"], strict=True)]
    w = reps["train"].weight.astype(np.float64)
    b = reps["train"].bias.astype(np.float64)
    expected = []
    for z, zt in zip(*ada_parts["test"], strict=True):
        q = estimate(z, zt, k1, k2, lmbda)
        p = lo + (1 - sum(v <= q for v in val) / len(val)) * (hi - lo)
        a = sorted((max(v, 0.0) for v in z), reverse=True)
        k = d - int(np.round(d * p / 100))
        r = sum(a) / sum(a[:k])
        if name == "adascale_a":
            expected.append(energy(w @ (z * math.exp(r)) + b))
        else:
            expected.append(energy((w @ z + b) * r**2))
    # float32 network arithmetic, batched vs one sample at a time
    np.testing.assert_allclose(det.score(reps["test"]), expected, rtol=1e-5, atol=1e-7)


def test_adascale_runs_the_network_once_per_representation_for_its_whole_grid(model):
    # Two forward passes per batch (clean and perturbed); the memo is the detector's own, so
    # a second detector (of either variant) computes afresh.
    train, val, test = rep_of(model, 40, 0), rep_of(model, 20, 1), rep_of(model, 9, 2)
    a = create("adascale_a", **PARAMS["adascale_a"])
    calls = model.calls
    a.fit(train, val)
    assert model.calls == calls + 2 * 2  # val: 20 rows in batches of 16
    pairs = [{"percentile": p} for p in ([20, 80], [30, 60], [10, 90])]
    calls = model.calls
    grid = a.score_grid(val, pairs)  # as a grid search does after fit: no pass at all
    assert model.calls == calls
    got = a.score_grid(test, pairs)
    assert model.calls == calls + 2
    for pair, on_val, on_test in zip(pairs, grid, got, strict=True):
        fresh = create("adascale_a", **{**PARAMS["adascale_a"], **pair}).fit(train, val)
        np.testing.assert_array_equal(on_val, fresh.score(val))
        np.testing.assert_array_equal(on_test, fresh.score(test))
    calls = model.calls
    other = create("adascale_l", **PARAMS["adascale_l"]).fit(train, val)
    other.score(test)
    assert model.calls == calls + 2 * 2 + 2
    other_rep = rep_of(model, 9, 2)  # same data, a new representation: computed afresh
    calls = model.calls
    np.testing.assert_allclose(other.score(other_rep), other.score(test), rtol=1e-6)
    assert model.calls == calls + 2


def test_adascale_a_with_a_fixed_percentile_is_scale(reps):
    # p_min = p_max makes the percentile constant: SCALE's factor on the cached features.
    ada = create("adascale_a", percentile=[60, 60], k1=40, k2=20).fit(reps["train"], reps["val"])
    scale = create("scale", percentile=60).fit(reps["train"])
    np.testing.assert_allclose(ada.score(reps["test"]), scale.score(reps["test"]), rtol=1e-6)


def test_adascale_rejects_a_bad_percentile_pair(reps):
    with pytest.raises(ValueError, match="p_min <= p_max"):
        create("adascale_l", percentile=[90, 80]).fit(reps["train"], reps["val"])
    # 5 units: a 95th percentile would keep 5 − round(4.75) = 0 of them.
    det = create("adascale_a", percentile=[95, 95], k1=40, k2=20).fit(reps["train"], reps["val"])
    with pytest.raises(ValueError, match="keeps none of the 5 feature units"):
        det.score(reps["test"])


# -- NAC -------------------------------------------------------------------------------------
def test_nac_edges_by_hand():
    np.testing.assert_allclose(nac_edges(4), [0.0, 0.5, 1.01, 1.2])
    third = math.log(math.sqrt(1e3) / 2 + 0.5) / math.log(1e3)  # linspace(1, √1000, 3)[1]
    np.testing.assert_allclose(nac_edges(6), [0.0, third, 0.5, 1 - third, 1.01, 1.2])


def nac_states(model: TinyCNN, x_all: torch.Tensor, beta: float, layer: str | None) -> np.ndarray:
    """One sample at a time: sigmoid(β · z · ∂(−mean_c log p_c)/∂z), spatial sums for maps."""
    rows = []
    for i in range(len(x_all)):
        x = x_all[i : i + 1]
        h = model.relu2(model.conv2(model.trunk(x)))
        if layer is None:  # the head's input, with the analytic gradient Wᵀ(p − 1/C)
            with torch.no_grad():
                z = model.flat(model.pool(h))[0].double()
                p = torch.softmax(model.fc(z.float()[None])[0].double(), dim=0)
                g = model.fc.weight.double().T @ (p - 1.0 / 3)
        else:
            h = h.detach().requires_grad_(True)
            out = model.fc(model.flat(model.pool(h)))[0]
            (grad,) = torch.autograd.grad(-torch.log_softmax(out, dim=0).mean(), h)
            z, g = h.detach()[0].double().sum((1, 2)), grad[0].double().sum((1, 2))
        rows.append([1.0 / (1.0 + math.exp(-beta * float(a * b))) for a, b in zip(z, g, strict=True)])
    return np.array(rows)


@pytest.mark.parametrize("layer", [None, "relu2"])
def test_nac_matches_a_loop_reference(model, reps, layer):
    m, o, beta = 50, 3.0, 20.0
    det = create("nac", layers=None if layer is None else [layer], M=m, O=o, beta=beta)
    det.fit(reps["train"])
    edges = nac_edges(m).tolist()
    train = nac_states(model, dataset(40, 0).tensors[0], beta, layer)
    test = nac_states(model, dataset(9, 2).tensors[0], beta, layer)

    def bin_of(v: float) -> int:
        return next((k for k in range(m - 1) if edges[k] <= v < edges[k + 1]), -1)

    expected = []
    for row in test:
        phi = []
        for n, v in enumerate(row):
            b = bin_of(v)
            count = sum(1 for t in train[:, n] if bin_of(t) == b) if b >= 0 else 0
            phi.append(min(count / o, 1.0))
        expected.append(-sum(phi) / len(phi))
    np.testing.assert_allclose(det.score(reps["test"]), expected, rtol=1e-12)
    assert len(set(np.round(expected, 9))) > 1  # the scores are not all equal


def test_balanced_rows_by_hand():
    classes = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    rows = balanced_rows(classes, 7)
    np.testing.assert_array_equal(np.bincount(classes[rows], minlength=3), [3, 2, 2])
    assert list(rows) == sorted(set(rows.tolist()))
    np.testing.assert_array_equal(balanced_rows(classes, 7), rows)  # fixed seed
    np.testing.assert_array_equal(balanced_rows(classes, 99), np.arange(10))
    np.testing.assert_array_equal(np.bincount(classes[balanced_rows(classes, 3)]), [1, 1, 1])


def test_nac_fit_size_fits_on_a_class_balanced_subset(model, reps):
    det = create("nac", O=2, beta=20, fit_size=12).fit(reps["train"])
    rows = balanced_rows(reps["train"].labels, 12)
    np.testing.assert_array_equal(np.bincount(reps["train"].labels[rows]), [4, 4, 4])
    subset = extract(model, TensorDataset(*dataset(40, 0)[rows]), progress=False, input_std=STD)
    reference = create("nac", O=2, beta=20, fit_size=None).fit(subset)
    np.testing.assert_array_equal(det.score(reps["test"]), reference.score(reps["test"]))
    everything = create("nac", O=2, beta=20, fit_size=None).fit(reps["train"])
    assert np.abs(everything.score(reps["test"]) - det.score(reps["test"])).max() > 0


def test_nac_rejects_a_bad_fit_size(reps):
    with pytest.raises(ValueError, match="fit_size must be a positive integer"):
        create("nac", fit_size=0).fit(reps["train"])


def test_nac_training_samples_are_covered_by_at_least_their_own_state(reps):
    det = create("nac", O=1).fit(reps["train"])
    np.testing.assert_array_equal(det.score(reps["train"]), -1.0)


def test_nac_needs_an_even_number_of_edges(reps):
    with pytest.raises(ValueError, match="even integer"):
        create("nac", M=5).fit(reps["train"])


# -- common ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_scores_do_not_depend_on_the_extraction_batch_size(model, reps, fitted, name):
    other = rep_of(model, 9, 2, batch_size=2)
    np.testing.assert_allclose(fitted[name].score(other), fitted[name].score(reps["test"]),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_state_round_trip(reps, fitted, name):
    det = fitted[name]
    first = det.score(reps["test"])
    np.testing.assert_array_equal(det.score(reps["test"]), first)
    clone = get(name).from_state(det.get_params(), det.fitted_state())
    np.testing.assert_array_equal(clone.score(reps["test"]), first)
    for value in det.fitted_state().values():  # plain data only (no torch objects)
        items = value if isinstance(value, list) else [value]
        assert all(isinstance(v, np.ndarray | int | float | str | bool | None) for v in items)


@pytest.mark.parametrize("name", NAMES)
def test_a_representation_loaded_from_disk_has_no_network(tmp_path, reps, fitted, name):
    loaded = Representation.load(reps["test"].save(tmp_path / "test.safetensors"))
    with pytest.raises(MissingInputError, match=r"rep\.source"):
        fitted[name].score(loaded)


def test_a_source_whose_data_changed_is_refused(model, reps, fitted):
    rep = rep_of(model, 9, 2)
    rep.source.data = dataset(8, 2)
    with pytest.raises(ValueError, match="yielded 8 inputs but the representation has 9"):
        fitted["rankfeat"].score(rep)


@pytest.mark.parametrize("name", ["odin", "adascale_a", "nac"])
def test_gradients_work_under_inference_mode(reps, fitted, name):
    expected = fitted[name].score(reps["test"])
    with torch.inference_mode():
        np.testing.assert_array_equal(fitted[name].score(reps["test"]), expected)


def test_the_model_mode_is_restored(model, reps, fitted):
    model.train()
    try:
        fitted["odin"].score(reps["test"])
        assert model.training
    finally:
        model.eval()
