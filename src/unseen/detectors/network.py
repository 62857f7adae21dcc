"""Detectors that run the network again ("network in the loop").

They read the model and its input data from ``rep.source`` (set by :func:`unseen.extract`, not
persisted), so a Representation loaded from disk or cut with ``subset()`` cannot be scored by
them. Whatever does not change is taken from the cache instead (ODIN with ε = 0 is computed from
the cached logits; Gram reads the predicted class from the cached logits).

The model runs in eval mode (its mode is restored afterwards); gradients are enabled only where
a method needs them. Rows are produced in the order of ``rep.source.batches()``, i.e. the
representation's rows, and every pass checks that it saw exactly ``len(rep)`` inputs. The network
is batched by ``rep.source.batch_size``; the base class's row chunks are switched off
(``chunk_size``) because ``Representation.subset`` does not carry the source.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unseen.detectors.base import Detector, Paper, logsumexp, rep_memo, softmax
from unseen.detectors.registry import register
from unseen.representation import Representation

if TYPE_CHECKING:
    from unseen.extraction import NetworkSource

#: hook(module, inputs, output) -> replacement output or None
Hook = Callable[[nn.Module, Any, Any], Any]


# -- running the network ---------------------------------------------------------------------
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _hooks(model: nn.Module, hooks: dict[str, Hook]) -> Iterator[None]:
    """Register forward hooks on the named modules for the duration of the block."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, hook in hooks.items():
            if name not in modules:
                options = ", ".join(n for n in modules if n)[:400]
                raise ValueError(f"the model has no module named {name!r}; it has: {options}")
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _inputs(rep: Representation, who: str) -> Iterator[torch.Tensor]:
    """The representation's inputs, batch by batch, checking that the row count still matches."""
    source = rep.source
    seen = 0
    for x, _ in source.batches():
        seen += len(x)
        yield x
    if seen != len(rep):
        raise ValueError(
            f"{who}: rep.source yielded {seen} inputs but the representation has {len(rep)} rows; "
            "the data changed since extraction: extract again"
        )


@contextmanager
def _autograd() -> Iterator[None]:
    """Gradients on, even when the caller runs under ``torch.inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _float_input(x: torch.Tensor, who: str) -> torch.Tensor:
    """A leaf copy of ``x`` that records gradients (call inside :func:`_autograd`)."""
    if not x.is_floating_point():
        raise TypeError(f"{who} differentiates through the inputs, so they must be floating point, "
                        f"got {x.dtype}")
    return x.detach().clone().requires_grad_(True)


def _capture_features(source: NetworkSource, store: dict[str, torch.Tensor]) -> Any:
    """Register a hook that keeps the penultimate feature (flattened) in ``store['features']``;
    returns its handle."""
    if source.feature_module is not None:
        module = dict(source.model.named_modules())[source.feature_module]
        return module.register_forward_hook(
            lambda _m, _i, out: store.__setitem__("features", out.flatten(1))
        )
    if source.head is None:
        raise ValueError(
            "the network source has neither a head nor a named feature layer: extract with "
            "penultimate='<module>' so the detector can find the features"
        )
    return source.head.register_forward_pre_hook(
        lambda _m, inp: store.__setitem__("features", inp[0].flatten(1))
    )


def _child_output_shapes(rep: Representation, exclude: nn.Module | None) -> dict[str, tuple[int, ...]]:
    """Output shape (on the first batch) of each direct child of the model except ``exclude``,
    in registration order; children that return no tensor are left out."""
    model = rep.source.model
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str) -> Hook:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape)
        return hook

    names = [n for n, m in model.named_children() if m is not exclude]
    x = next(iter(rep.source.batches()))[0]
    with _eval_mode(model), _hooks(model, {n: keep(n) for n in names}), torch.no_grad():
        model(x)
    return {n: shapes[n] for n in names if n in shapes}


# -- shared base -----------------------------------------------------------------------------
class _NetworkDetector(Detector):
    # Base-class row chunks go through Representation.subset, which drops rep.source.
    chunk_size: ClassVar[int] = sys.maxsize


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not (np.isfinite(value) and ok):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


# -- ODIN ------------------------------------------------------------------------------------
def _channel_std(std: tuple[float, ...] | None, x: torch.Tensor) -> torch.Tensor:
    if std is None:
        return torch.ones((), dtype=x.dtype, device=x.device)
    if x.ndim < 2 or x.shape[1] != len(std):
        raise ValueError(
            f"input_std has {len(std)} channels but the inputs have shape {tuple(x.shape)} "
            "(channels on axis 1); pass extract(..., input_std=...) matching the inputs"
        )
    shape = (1, len(std)) + (1,) * (x.ndim - 2)
    return torch.tensor(std, dtype=x.dtype, device=x.device).reshape(shape)


@register
class ODIN(_NetworkDetector):
    """ODIN: temperature scaling plus input pre-processing.

        x̃ = x − ε · sign(−∇ₓ log S_ŷ(x; T)) / σ,   score(x) = −max_c S_c(x̃; T),

    with S(x; T) = softmax(f(x) / T), ŷ the predicted class and σ the per-channel normalisation
    std of the preprocessing (``extract(..., input_std=...)``; 1 when not given), since the
    perturbation is meant in pixel space but applied to normalised inputs, as the official code
    and OpenOOD do. Liang, Li, Srikant, ICLR 2018. Defaults T = 1000, ε = 0.0014 (OpenOOD v1.5's
    ``odin.yml``); grid T ∈ {1, 10, 100, 1000} × ε ∈ {0.0014, 0.0028}. With ε = 0 no forward pass
    runs: the score is the temperature-scaled MSP of the cached logits (T = 1: exactly ``msp``).
    The official code and OpenOOD binarise the gradient with ``grad >= 0`` (a zero gradient
    counts as +1) and take the std from a table (the official code: CIFAR's, hard-coded); we use
    the paper's sign (0 for a zero gradient) and the std recorded at extraction.
    """

    name = "odin"
    paper = Paper(
        "Enhancing The Reliability of Out-of-distribution Image Detection in Neural Networks",
        "Liang, Li, Srikant",
        "ICLR",
        2018,
        "https://arxiv.org/abs/1706.02690",
    )
    requires = frozenset({"logits", "network"})
    grid: ClassVar[dict[str, list[Any]]] = {
        "temperature": [1, 10, 100, 1000],
        "epsilon": [0.0014, 0.0028],
    }
    score_params = frozenset({"temperature", "epsilon"})

    def __init__(self, temperature: float = 1000, epsilon: float = 0.0014) -> None:
        self.temperature = temperature
        self.epsilon = epsilon

    def _check(self) -> None:
        _check_positive("odin temperature", self.temperature)
        _check_positive("odin epsilon", self.epsilon, allow_zero=True)

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._check()

    def _score(self, rep: Representation) -> np.ndarray:
        self._check()
        t = float(self.temperature)
        if self.epsilon == 0:
            return -softmax(rep.logits, t).max(axis=1)
        model, std = rep.source.model, rep.source.input_std
        scores = []
        with _eval_mode(model):
            for x in _inputs(rep, self.name):
                with _autograd():
                    x = _float_input(x, self.name)
                    out = model(x)
                    # −log S_ŷ(x; T) is the cross-entropy of the scaled logits with ŷ.
                    loss = F.cross_entropy(out / t, out.detach().argmax(1), reduction="sum")
                    (grad,) = torch.autograd.grad(loss, x)
                x_tilde = x.detach() - self.epsilon * torch.sign(grad) / _channel_std(std, x)
                with torch.no_grad():
                    logits = model(x_tilde)
                scores.append(-softmax(logits.double().cpu().numpy(), t).max(axis=1))
        return np.concatenate(scores)


# -- RankFeat --------------------------------------------------------------------------------
def remove_rank1(feature_map: torch.Tensor) -> torch.Tensor:
    """Subtract each sample's rank-1 component s₁u₁v₁ᵀ from its (C, positions) matrix, computed by
    exact SVD in float64; returns the map in its own dtype and shape."""
    if feature_map.ndim < 3:
        raise ValueError(
            f"rankfeat needs a feature map (batch, channels, positions...), got shape "
            f"{tuple(feature_map.shape)}; choose a convolutional block with layers=[...]"
        )
    b, c = feature_map.shape[:2]
    x = feature_map.detach().reshape(b, c, -1).double().cpu().numpy()
    # NumPy's batched LAPACK SVD: torch's CPU batched SVD is ~100× slower on small matrices
    # when it runs multi-threaded.
    u, s, vh = np.linalg.svd(x, full_matrices=False)
    rank1 = s[:, :1, None] * u[:, :, :1] @ vh[:, :1, :]
    out = torch.from_numpy(x - rank1).to(feature_map.device, feature_map.dtype)
    return out.reshape(feature_map.shape)


@register
class RankFeat(_NetworkDetector):
    """RankFeat: remove the rank-1 component of a block's feature map, run the rest of the network,
    and score the energy:

        X' = X − s₁u₁v₁ᵀ (per sample, X the C × HW map),
        z̄ = mean over the chosen blocks of the logits with that block's map replaced by X',
        score(x) = −T · log Σ_c exp(z̄_c / T).

    Song, Sebe, Wang, NeurIPS 2022. ``layers``: the blocks (module names) whose outputs are
    edited, one forward pass each, logits averaged (the paper's best variant fuses Block 3 and
    Block 4 of a ResNet). Default: the last two direct children of the model whose output is a
    feature map with more than one spatial position (``layer3``, ``layer4`` on a ResNet); resolved
    on the training data in ``fit`` and kept in ``layers_``. Exact SVD (float64), as the paper;
    OpenOOD v1.5's ``rankfeat.yml`` (T = 1, exact SVD) does the same with ResNet-specific code.
    Default T = 1; grid T ∈ {1} (OpenOOD's). Works for any model by replacing the block's output
    with a forward hook.
    """

    name = "rankfeat"
    paper = Paper(
        "RankFeat: Rank-1 Feature Removal for Out-of-distribution Detection",
        "Song, Sebe, Wang",
        "NeurIPS",
        2022,
        "https://arxiv.org/abs/2209.08590",
    )
    requires = frozenset({"network"})
    grid: ClassVar[dict[str, list[Any]]] = {"temperature": [1.0]}
    score_params = frozenset({"temperature"})

    def __init__(self, layers: list[str] | None = None, temperature: float = 1.0) -> None:
        self.layers = layers
        self.temperature = temperature

    def _fit(self, train: Representation, val: Representation | None) -> None:
        _check_positive("rankfeat temperature", self.temperature)
        if self.layers is not None:
            if isinstance(self.layers, str) or not self.layers:
                raise TypeError("rankfeat layers must be a non-empty list of module names")
            self.layers_ = [str(n) for n in self.layers]
            return
        shapes = _child_output_shapes(train, train.source.head)
        spatial = [n for n, shape in shapes.items() if len(shape) >= 3 and np.prod(shape[2:]) > 1]
        if not spatial:
            raise ValueError(
                "rankfeat found no direct child of the model that outputs a spatial feature map; "
                "name the blocks with layers=[...]"
            )
        self.layers_ = spatial[-2:]

    def _score(self, rep: Representation) -> np.ndarray:
        _check_positive("rankfeat temperature", self.temperature)
        model = rep.source.model
        total: np.ndarray | None = None
        for layer in self.layers_:
            parts = []
            with _eval_mode(model), _hooks(model, {layer: lambda _m, _i, o: remove_rank1(o)}), \
                    torch.no_grad():
                for x in _inputs(rep, self.name):
                    parts.append(model(x).double().cpu().numpy())
            logits = np.concatenate(parts)
            total = logits if total is None else total + logits
        return -logsumexp(total / len(self.layers_), float(self.temperature))


# -- Gram ------------------------------------------------------------------------------------
def gram_features(activation: torch.Tensor, powers: int) -> torch.Tensor:
    """(B, P, C) Gram features of orders p = 1..P, in float64:

        feature_{p,i} = sign(r_i) |r_i|^{1/p},   r_i = Σ_j (A^p (A^p)ᵀ)_ij,

    A the (C, positions) activation of one sample (a 2-D activation is one position per unit)
    and A^p its element-wise power: the p-th root of the row sums of the p-th order Gram
    matrix."""
    a = activation.detach().double()
    a = a.reshape(a.shape[0], a.shape[1], -1)
    out = []
    for p in range(1, powers + 1):
        ap = a**p
        # Σ_j (A Aᵀ)_ij = Σ_s A_is Σ_j A_js: no C × C matrix needed.
        rows = (ap * ap.sum(dim=1, keepdim=True)).sum(dim=2)
        out.append(rows.sign() * rows.abs() ** (1.0 / p))
    return torch.stack(out, dim=1)


@register
class Gram(_NetworkDetector):
    """Gram-matrix deviations: how far a sample's higher-order Gram features leave the range seen
    on training samples predicted as the same class.

        δ(m, M, v) = max(m − v, 0) / (|m| + 10⁻⁶) + max(v − M, 0) / (|M| + 10⁻⁶),
        δ_l(x) = Σ_p Σ_i δ(Mins[ŷ][l][p][i], Maxs[ŷ][l][p][i], G_l^p(x)_i),
        score(x) = Σ_l δ_l(x) / (E_val[δ_l] + 10⁻⁷),

    ŷ the predicted class (from the cached logits), Mins/Maxs the per-class extremes of each Gram
    feature over the training samples predicted as that class, E_val the mean layer deviation of
    the ID validation samples. Sastry & Oore, ICML 2020. Default p = 1..10 (``powers=10``, the
    paper's); grid powers ∈ {10, 5, 1} (ours: OpenOOD v1.5 has no search for it).

    ``layers``: module names whose outputs are used. Default: every direct child of the model
    whose output is a feature map (≥ 3-D), e.g. ``conv1``, ``bn1``, ``layer1``..``layer4``,
    ``avgpool`` of a ResNet, resolved in ``fit`` (``layers_``); the authors record far more
    (every convolution and activation inside the blocks).

    Differences: G_l^p(x)_i is the p-th root of row i's sum of A^p (A^p)ᵀ (see
    :func:`gram_features`), as in the authors' code and OpenOOD; the paper describes the
    flattened matrix (A^p (A^p)ᵀ)^{1/p}, whose C(C+1)/2 values per layer and power are too many
    to keep for wide layers. The 10⁻⁶ and 10⁻⁷ guards are the authors' code's. The
    authors' code also divides each deviation by the sample's MSP, which the paper does not; we
    do not. OpenOOD v1.5's ``gram`` differs more: it takes Mins/Maxs by true label, collapses
    each Gram vector to its sum before comparing, updates Maxs with the batch minimum, and skips
    the validation normalisation.

    ``powers`` only changes scoring up to the order fitted: a detector fitted with ``powers=P``
    keeps the ranges and validation means of every order p ≤ P, so ``set_params(powers=q)`` with
    q ≤ P scores as a detector fitted with q (the grid lists the largest order first, so one fit
    and one pass of the network per split serve the whole grid). Per-order deviations are
    memoised per representation for the same reason.
    """

    name = "gram"
    paper = Paper(
        "Detecting Out-of-Distribution Examples with Gram Matrices",
        "Sastry, Oore",
        "ICML",
        2020,
        "https://proceedings.mlr.press/v119/sastry20a.html",
    )
    requires = frozenset({"logits", "network"})
    needs_val = True
    grid: ClassVar[dict[str, list[Any]]] = {"powers": [10, 5, 1]}
    score_params = frozenset({"powers"})

    def __init__(self, layers: list[str] | None = None, powers: int = 10) -> None:
        self.layers = layers
        self.powers = powers

    def _batches(self, rep: Representation, powers: int) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """Batch by batch: the rows covered and, per layer, their (B, P, C) Gram features (so
        nothing of size N × features is ever held)."""
        store: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Hook:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
                store[name] = gram_features(out, powers)
            return hook

        model, start = rep.source.model, 0
        with _eval_mode(model), _hooks(model, {n: keep(n) for n in self.layers_}), torch.no_grad():
            for x in _inputs(rep, self.name):
                store.clear()
                model(x)
                yield slice(start, start + len(x)), [store[n].cpu().numpy() for n in self.layers_]
                start += len(x)

    def _layer_deviations(self, rep: Representation) -> np.ndarray:
        """(N, L, P) deviation of each row at each layer and order from its predicted class's
        ranges, P the fitted order; memoised per representation (and its source)."""
        memo = rep_memo(self, "_deviations", self.mins_, self.maxs_)
        hit = memo.get(rep)
        if hit is not None and hit[0] is rep.source:
            return hit[1]
        pred = np.asarray(rep.logits).argmax(axis=1)
        out = []
        for rows, feats in self._batches(rep, self.powers_):
            devs = []
            for f, lo, hi in zip(feats, self.mins_, self.maxs_, strict=True):
                m, big = lo[pred[rows]], hi[pred[rows]]
                below = np.maximum(m - f, 0.0) / (np.abs(m) + 1e-6)
                above = np.maximum(f - big, 0.0) / (np.abs(big) + 1e-6)
                devs.append((below + above).sum(axis=2))  # (B, P): summed over the C features
            out.append(np.stack(devs, axis=1))
        memo[rep] = (rep.source, np.concatenate(out))
        return memo[rep][1]

    def _class_ranges(self, train: Representation) -> None:
        """Per layer, the (classes, P, C) minimum and maximum of each Gram feature over the
        training rows predicted as each class."""
        pred = np.asarray(train.logits).argmax(axis=1)
        n_classes = train.logits.shape[1]
        self.mins_, self.maxs_ = [], []
        for rows, feats in self._batches(train, self.powers_):
            if not self.mins_:
                self.mins_ = [np.full((n_classes, *f.shape[1:]), np.inf) for f in feats]
                self.maxs_ = [np.full((n_classes, *f.shape[1:]), -np.inf) for f in feats]
            p = pred[rows]
            for c in np.unique(p):
                for f, lo, hi in zip(feats, self.mins_, self.maxs_, strict=True):
                    np.minimum(lo[c], f[p == c].min(axis=0), out=lo[c])
                    np.maximum(hi[c], f[p == c].max(axis=0), out=hi[c])

    def _check_powers(self) -> None:
        if not (isinstance(self.powers, int | np.integer) and self.powers >= 1):
            raise ValueError(f"gram powers must be an integer >= 1, got {self.powers}")

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._check_powers()
        self.powers_ = int(self.powers)
        if self.layers is not None:
            if isinstance(self.layers, str) or not self.layers:
                raise TypeError("gram layers must be a non-empty list of module names")
            self.layers_ = [str(n) for n in self.layers]
        else:
            shapes = _child_output_shapes(train, train.source.head)
            self.layers_ = [n for n, shape in shapes.items() if len(shape) >= 3]
            if not self.layers_:
                raise ValueError(
                    "gram found no direct child of the model that outputs a feature map; name "
                    "the layers with layers=[...]"
                )
        pred = np.asarray(train.logits).argmax(axis=1)
        n_classes = train.logits.shape[1]
        missing = [c for c in range(n_classes) if not np.any(pred == c)]
        if missing:
            raise ValueError(
                f"gram needs at least one training sample predicted as each class; classes "
                f"{missing[:10]} have none"
            )
        self._class_ranges(train)
        self.val_mean_ = self._layer_deviations(val).mean(axis=0)  # (L, P)

    def _score(self, rep: Representation) -> np.ndarray:
        self._check_powers()
        if self.powers > self.powers_:
            raise ValueError(
                f"gram was fitted with powers={self.powers_} and cannot score powers={self.powers}; "
                "fit again with the larger order"
            )
        q = int(self.powers)
        devs = self._layer_deviations(rep)[:, :, :q].sum(axis=2)
        return (devs / (self.val_mean_[:, :q].sum(axis=1) + 1e-7)).sum(axis=1)


# -- AdaSCALE --------------------------------------------------------------------------------
def _adascale_perturb(x: torch.Tensor, grad: torch.Tensor, fraction: float,
                      magnitude: float) -> torch.Tensor:
    """x + magnitude · sign(grad) on the ⌊fraction · size⌋ input entries of each sample with the
    smallest |grad| (ties broken by position, lowest first), the rest unchanged."""
    b = x.shape[0]
    flat = grad.reshape(b, -1)
    n = int(flat.shape[1] * fraction)
    order = torch.argsort(flat.abs(), dim=1, stable=True)[:, :n]
    mask = torch.zeros_like(flat).scatter_(1, order, 1.0)
    return x + magnitude * (flat.sign() * mask).reshape(x.shape)


#: rep -> (source, o, z, z̃), see _AdaScale._shift
_SHIFTS: weakref.WeakKeyDictionary[Representation, tuple[Any, float, np.ndarray, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


class _AdaScale(_NetworkDetector):
    """Shared by AdaSCALE-A and AdaSCALE-L; see :class:`AdaScaleA`."""

    requires = frozenset({"network"})
    fit_requires = frozenset({"head"})
    needs_val = True
    grid: ClassVar[dict[str, list[Any]]] = {
        "percentile": [
            [lo, hi]
            for lo in (60, 65, 70, 75, 80, 85, 90, 95)
            for hi in (65, 70, 75, 80, 85, 90, 95, 99)
            if lo < hi
        ],
        "k1": [5],
        "k2": [1],
        "lmbda": [10],
        "o": [0.05],
    }
    score_params = frozenset({"percentile"})
    #: the input perturbation's size (in normalised input units), fixed in the authors' code
    magnitude: ClassVar[float] = 0.5

    def __init__(
        self,
        percentile: list[float] | tuple[float, float] = (75, 85),
        k1: float = 5,
        k2: float = 1,
        lmbda: float = 10,
        o: float = 0.05,
    ) -> None:
        self.percentile = percentile
        self.k1 = k1
        self.k2 = k2
        self.lmbda = lmbda
        self.o = o

    def _check(self) -> None:
        try:
            lo, hi = (float(v) for v in self.percentile)
        except (TypeError, ValueError):
            raise TypeError(
                f"{self.name} percentile must be a pair [p_min, p_max], got {self.percentile!r}"
            ) from None
        if not 0 < lo <= hi < 100:
            raise ValueError(f"{self.name} percentile needs 0 < p_min <= p_max < 100, got {lo, hi}")
        for hp in ("k1", "k2"):
            v = getattr(self, hp)
            _check_positive(f"{self.name} {hp}", v)
            if v > 100:
                raise ValueError(f"{self.name} {hp} is a percentage of units, <= 100; got {v}")
        _check_positive(f"{self.name} lmbda", self.lmbda, allow_zero=True)
        _check_positive(f"{self.name} o", self.o, allow_zero=True)
        if self.o > 1:
            raise ValueError(f"{self.name} o is a fraction of input entries, <= 1; got {self.o}")

    def _shift(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        """Features z and the features z̃ of the perturbed inputs, both (N, D) float64.

        Memoised per representation (and its source) and ``o``, shared by every AdaSCALE
        detector: neither the percentile (a score-only hyperparameter) nor the variant (A or L)
        changes them, so a benchmark runs the network once per split for both variants' grids.
        """
        hit = _SHIFTS.get(rep)
        if hit is not None and hit[0] is rep.source and hit[1] == self.o:
            return hit[2], hit[3]
        z, z_tilde = self._run_shift(rep)
        _SHIFTS[rep] = (rep.source, self.o, z, z_tilde)
        return z, z_tilde

    def _run_shift(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        source, model = rep.source, rep.source.model
        store: dict[str, torch.Tensor] = {}
        clean, perturbed = [], []
        handle = _capture_features(source, store)
        try:
            with _eval_mode(model):
                for x in _inputs(rep, self.name):
                    with _autograd():
                        x = _float_input(x, self.name)
                        out = model(x)
                        top = out.gather(1, out.detach().argmax(1, keepdim=True)).sum()
                        (grad,) = torch.autograd.grad(top, x)
                    clean.append(store["features"].detach().double().cpu().numpy())
                    with torch.no_grad():
                        model(_adascale_perturb(x.detach(), grad, float(self.o), self.magnitude))
                    perturbed.append(store["features"].double().cpu().numpy())
        finally:
            handle.remove()
        return np.concatenate(clean), np.concatenate(perturbed)

    def _ood_estimate(self, z: np.ndarray, z_tilde: np.ndarray) -> np.ndarray:
        """Q' = C_o + λ·Q: C_o the sum of relu(z̃) over the top-k1% units of z, Q the sum of
        |z − z̃| over its top-k2% units (at least one unit each)."""
        d = z.shape[1]
        order = np.argsort(-z, axis=1, kind="stable")
        k1 = max(1, int(d * self.k1 / 100))
        k2 = max(1, int(d * self.k2 / 100))
        c_o = np.take_along_axis(np.maximum(z_tilde, 0.0), order[:, :k1], axis=1).sum(axis=1)
        q = np.take_along_axis(np.abs(z - z_tilde), order[:, :k2], axis=1).sum(axis=1)
        return c_o + float(self.lmbda) * q

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._check()
        self.weight_ = np.asarray(train.weight, dtype=np.float64)
        self.bias_ = np.asarray(train.bias, dtype=np.float64)
        self.val_estimates_ = np.sort(self._ood_estimate(*self._shift(val)))

    def _scale(self, z: np.ndarray, z_tilde: np.ndarray) -> np.ndarray:
        """r = s1 / s2 per sample, s1 = Σ relu(z), s2 the sum of its k = D − round(D·p/100)
        largest entries, p = p_min + (1 − F(Q'))(p_max − p_min), F the validation ECDF."""
        lo, hi = (float(v) for v in self.percentile)
        ecdf = np.searchsorted(self.val_estimates_, self._ood_estimate(z, z_tilde), side="right")
        p = lo + (1.0 - ecdf / len(self.val_estimates_)) * (hi - lo)
        a = np.maximum(z, 0.0)
        d = a.shape[1]
        k = d - np.round(d * p / 100.0).astype(np.int64)
        if (k < 1).any():
            raise ValueError(
                f"{self.name}: a percentile of {p.max():.4g} keeps none of the {d} feature units; "
                "lower p_max"
            )
        top = -np.sort(-a, axis=1)
        s2 = np.where(np.arange(d)[None, :] < k[:, None], top, 0.0).sum(axis=1)
        s1 = a.sum(axis=1)
        # s2 = 0 only for an all-zero relu(z), whose s1 is 0 too: leave the sample unscaled.
        return np.divide(s1, s2, out=np.ones_like(s1), where=s2 > 0)

    def _score(self, rep: Representation) -> np.ndarray:
        self._check()
        z, z_tilde = self._shift(rep)
        if z.shape[1] != self.weight_.shape[1]:
            raise ValueError(
                f"{self.name} was fitted with a head for {self.weight_.shape[1]}-dimensional "
                f"features but the network produced {z.shape[1]}"
            )
        return self._shaped_energy(z, self._scale(z, z_tilde))

    def _shaped_energy(self, z: np.ndarray, r: np.ndarray) -> np.ndarray:
        raise NotImplementedError


_ADASCALE_PAPER = Paper(
    "AdaSCALE: Adaptive Scaling for OOD Detection",
    "Regmi",
    "arXiv",
    2025,
    "https://arxiv.org/abs/2503.08023",
)


@register
class AdaScaleA(_AdaScale):
    """AdaSCALE-A: SCALE with a per-sample percentile chosen from how much the sample's strongest
    activations move under a small input perturbation.

    1. Perturb: x̃ = x + 0.5 · sign(∇ₓ f_ŷ(x)) on the fraction ``o`` of input entries with the
       smallest |∇ₓ f_ŷ| (f_ŷ the maximum logit), in the model's (normalised) input space.
    2. OOD estimate: Q' = C_o + λ·Q, C_o = Σ relu(z̃) and Q = Σ |z − z̃| over the top-``k1``% and
       top-``k2``% units of the penultimate features z (z̃ those of x̃).
    3. Percentile: p = p_min + (1 − F(Q'))(p_max − p_min), F the empirical CDF of Q' on the ID
       validation data (fitted).
    4. Scale: r = s1/s2, s1 = Σ relu(z), s2 the sum of the k = D − round(D·p/100) largest entries
       of relu(z); score(x) = −log Σ_c exp(W (e^r · z) + b)_c.

    Regmi, 2025 (arXiv 2503.08023). Defaults and grid are OpenOOD v1.5's ``adascale_a.yml``
    (p ∈ [75, 85], k1 = 5, k2 = 1, λ = 10, o = 0.05; percentile pairs from {60, ..., 99}). The
    perturbation size 0.5 is fixed in the authors' code (``magnitude``). Differences from
    OpenOOD (written by the author): F uses all validation samples (OpenOOD: a random 5000);
    the top-k2/k1 units and the o smallest-gradient entries break ties by position (``topk``:
    arbitrarily); k1, k2 are at least one unit (OpenOOD: int(D·k/100), which can be 0); a
    percentile that keeps no unit (k < 1) is an error (OpenOOD: division by zero).
    """

    name = "adascale_a"
    paper = _ADASCALE_PAPER

    def _shaped_energy(self, z: np.ndarray, r: np.ndarray) -> np.ndarray:
        return -logsumexp((z * np.exp(r)[:, None]) @ self.weight_.T + self.bias_)


@register
class AdaScaleL(_AdaScale):
    """AdaSCALE-L: as ``adascale_a`` (steps 1-4), but the scale acts on the logits:
    score(x) = −log Σ_c exp(r² · (W z + b)_c).

    Regmi, 2025 (arXiv 2503.08023); defaults and grid from OpenOOD v1.5's ``adascale_l.yml``,
    same differences as ``adascale_a``.
    """

    name = "adascale_l"
    paper = _ADASCALE_PAPER

    def _shaped_energy(self, z: np.ndarray, r: np.ndarray) -> np.ndarray:
        return -logsumexp((z @ self.weight_.T + self.bias_) * (r**2)[:, None])


# -- NAC -------------------------------------------------------------------------------------
def nac_edges(m: int) -> np.ndarray:
    """The m bin edges of the authors' code for sigmoid states in [0, 1]: log-spaced, dense near 0
    and 1 (base 1000), the last interior edge nudged to 1.01, then 1.2; m − 1 bins."""
    half = m // 2
    left = np.log(np.linspace(1.0, np.sqrt(1e3), half)) / np.log(1e3)  # 0 .. 0.5
    edges = np.concatenate([left[:-1], (1.0 - left)[::-1]])
    edges[-1] += 1e-2
    return np.append(edges, 1.2)


def balanced_rows(classes: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` rows spread over the classes as evenly as they allow: each class's
    rows are shuffled (fixed ``seed``) and the classes take turns, in class order."""
    rng = np.random.default_rng(seed)
    turn = np.empty(len(classes), dtype=np.int64)
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        turn[rng.permutation(idx)] = np.arange(len(idx))
    return np.sort(np.lexsort((classes, turn))[:n])


@register
class NAC(_NetworkDetector):
    """Neuron activation coverage (NAC-UE): how well the training data cover each neuron's state.

        ẑ = sigmoid(β · z ⊙ ∂KL(u ‖ softmax(f(x))) / ∂z)   (per unit, u the uniform distribution),
        Φ_n(s) = min(count_n(bin(s)) / O, 1),
        score(x) = −(1/L) Σ_l (1/N_l) Σ_n Φ_n(ẑ_n(x)),

    count_n(b) the number of training states of unit n in bin b of M − 1 bins (the authors'
    log-spaced edges, :func:`nac_edges`), L the layers. Liu et al., ICLR 2024 (official code in
    the authors' OpenOOD fork, ``BierOne/ood_coverage``, which we follow). For feature maps, z and
    the gradient are summed over spatial positions first (the authors' ResNet pooling; channels on
    axis 1). The gradient is that of Σ_c −(1/C) log softmax_c, which equals KL(u ‖ p) up to a
    constant.

    ``layers``: module names; default None = the penultimate features (the head's input, or the
    extraction's feature module), the authors' ``avgpool`` configuration. Defaults M = 50, O = 50,
    β = 100 and grid O ∈ {10, 50} (the authors' CIFAR-10 ``avgpool`` settings and sweep). The
    coverage is built on a class-balanced subset of ``fit_size`` training rows (default 1000, as
    the authors; O counts states, so it is tuned for that size), drawn with a fixed seed by
    :func:`balanced_rows` (by label, or by predicted class without labels); ``fit_size=None``
    uses every row. Simplifications: one (M, O, β) shared by all layers (the authors tune them
    per layer). M must be even (the authors' edges assume it). The paper writes Φ with a density;
    the code, and we, use bin counts.
    """

    name = "nac"
    paper = Paper(
        "Neuron Activation Coverage: Rethinking Out-of-distribution Detection and Generalization",
        "Liu, Tian, Li, Ma, Wang",
        "ICLR",
        2024,
        "https://arxiv.org/abs/2306.02879",
    )
    requires = frozenset({"network"})
    grid: ClassVar[dict[str, list[Any]]] = {"M": [50], "O": [10, 50], "beta": [100]}
    score_params = frozenset({"O"})

    def __init__(
        self,
        layers: list[str] | None = None,
        M: int = 50,
        O: float = 50,
        beta: float = 100,
        fit_size: int | None = 1000,
    ) -> None:
        self.layers = layers
        self.M = M
        self.O = O
        self.beta = beta
        self.fit_size = fit_size

    def _check(self) -> None:
        if not (isinstance(self.M, int | np.integer) and self.M >= 4 and self.M % 2 == 0):
            raise ValueError(f"nac M (number of bin edges) must be an even integer >= 4, got {self.M}")
        _check_positive("nac O", self.O)
        _check_positive("nac beta", self.beta)
        if self.layers is not None and (isinstance(self.layers, str) or not self.layers):
            raise TypeError("nac layers must be a non-empty list of module names, or None")
        if self.fit_size is not None and not (
            isinstance(self.fit_size, int | np.integer) and self.fit_size >= 1
        ):
            raise ValueError(f"nac fit_size must be a positive integer or None, got {self.fit_size!r}")

    def _states(self, rep: Representation) -> list[np.ndarray]:
        """Per layer, the (N, units) sigmoid states of every row of ``rep``."""
        source, model = rep.source, rep.source.model
        store: dict[str, torch.Tensor] = {}
        if self.layers is None:
            names = ["features"]
            handles = [_capture_features(source, store)]
        else:
            names = list(self.layers)
            handles = []
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}

        def keep(name: str) -> Hook:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
                store[name] = out
            return hook

        def pooled(t: torch.Tensor) -> torch.Tensor:
            return t.sum(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t

        try:
            hooks = {} if self.layers is None else {n: keep(n) for n in names}
            with _eval_mode(model), _hooks(model, hooks):
                for x in _inputs(rep, self.name):
                    store.clear()
                    with _autograd():
                        out = model(_float_input(x, self.name))
                        loss = -(torch.log_softmax(out, dim=1)).mean(dim=1).sum()
                        grads = torch.autograd.grad(loss, [store[n] for n in names])
                    for n, g in zip(names, grads, strict=True):
                        z = pooled(store[n].detach()).double()
                        prod = z * pooled(g).double()
                        parts[n].append(torch.sigmoid(float(self.beta) * prod).cpu().numpy())
        finally:
            for h in handles:
                h.remove()
        return [np.concatenate(parts[n]) for n in names]

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._check()
        if self.fit_size is not None and len(train) > self.fit_size:
            classes = train.labels if train.labels is not None else train.logits.argmax(axis=1)
            rows = balanced_rows(np.asarray(classes), int(self.fit_size))
            part = train.subset(rows)
            part.source = train.source.subset(rows)
            train = part
        edges = nac_edges(int(self.M))
        self.counts_ = []
        for states in self._states(train):
            bins = np.searchsorted(edges, states, side="right") - 1  # (N, units)
            counts = np.zeros((len(edges) - 1, states.shape[1]))
            inside = (bins >= 0) & (bins < len(edges) - 1)
            unit = np.broadcast_to(np.arange(states.shape[1]), bins.shape)
            np.add.at(counts, (bins[inside], unit[inside]), 1.0)
            self.counts_.append(counts)

    def _score(self, rep: Representation) -> np.ndarray:
        self._check()
        edges = nac_edges(int(self.M))
        total = np.zeros(len(rep))
        for states, counts in zip(self._states(rep), self.counts_, strict=True):
            if states.shape[1] != counts.shape[1]:
                raise ValueError(
                    f"nac was fitted on a layer with {counts.shape[1]} units but got {states.shape[1]}"
                )
            coverage = np.minimum(counts / float(self.O), 1.0)
            bins = np.searchsorted(edges, states, side="right") - 1
            inside = (bins >= 0) & (bins < len(edges) - 1)
            unit = np.broadcast_to(np.arange(states.shape[1]), bins.shape)
            phi = np.where(inside, coverage[np.clip(bins, 0, len(edges) - 2), unit], 0.0)
            total += phi.mean(axis=1)
        return -total / len(self.counts_)
