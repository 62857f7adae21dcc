"""RankFeat: remove the rank-1 component of a block's feature map and score the energy."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from unseen.detectors.base import NotApplicableError, Paper, logsumexp
from unseen.detectors.network._common import NetworkDetector, inputs, source
from unseen.detectors.params import ModuleNames, Number
from unseen.detectors.registry import register
from unseen.representation import Representation


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
class RankFeat(NetworkDetector):
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
    constraints = {"layers": ModuleNames(none=True), "temperature": Number(0, low_open=True)}

    def __init__(self, layers: list[str] | None = None, temperature: float = 1.0) -> None:
        self.layers = layers
        self.temperature = temperature

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if self.layers is not None:
            self.layers_ = [str(n) for n in self.layers]
            return
        shapes = source(train).block_output_shapes()
        spatial = [n for n, shape in shapes.items() if len(shape) >= 3 and np.prod(shape[2:]) > 1]
        if not spatial:
            raise NotApplicableError(
                "rankfeat found no direct child of the model that outputs a spatial feature map; "
                "name the blocks with layers=[...]"
            )
        self.layers_ = spatial[-2:]

    def _score(self, rep: Representation) -> np.ndarray:
        src = source(rep)
        total: np.ndarray | None = None
        for layer in self.layers_:
            parts = []
            with src.running({layer: lambda _m, _i, o: remove_rank1(o)}), torch.no_grad():
                for x in inputs(rep, self.name):
                    parts.append(src.model(x).double().cpu().numpy())
            logits = np.concatenate(parts)
            total = logits if total is None else total + logits
        assert total is not None  # layers_ is never empty
        return -logsumexp(total / len(self.layers_), float(self.temperature))
