"""Patch features: 3x3 local averaging, alignment on the finest grid, early stop, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from unseen.extraction.patches import aggregate, extract_patches


def test_aggregate_by_hand() -> None:
    fine = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    coarse = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    out = aggregate([fine, coarse])
    assert out.shape == (1, 2, 4, 4)
    # Corner (0, 0): mean of 0, 1, 4, 5 (the padding is not counted) = 2.5; centre (1, 1): mean
    # of the 3x3 block 0..10 around 5 = 5.
    assert out[0, 0, 0, 0] == 2.5 and out[0, 0, 1, 1] == 5.0
    # The 2x2 coarse map is constant after 3x3 averaging with count_include_pad=False (each cell
    # averages all four) = 6, so its upsampling is 6 everywhere.
    assert torch.allclose(out[0, 1], torch.full((4, 4), 6.0))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.c = nn.Conv2d(3, 3, 1)
        self.calls_c = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        self.calls_c += 1  # counts only passes that get past b
        return self.c(y)


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], 0

    def identity(self) -> str:
        return "toy-images"


def test_extract_patches_values_early_stop_and_cache(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(5, 1, 8, 8)
    rep = extract_patches(net, _Images(x), ["a", "b"], batch_size=2, cache=tmp_path, progress=False)
    assert net.calls_c == 0  # stopped once both hooks fired
    with torch.no_grad():
        want = aggregate([net.a(x), net.b(net.a(x))]).permute(0, 2, 3, 1).numpy()
    assert rep.layers["patches"].shape == (5, 8, 8, 5)
    assert np.allclose(rep.layers["patches"], want, atol=1e-6)
    assert np.allclose(rep.features, want.mean(axis=(1, 2)), atol=1e-6)
    assert rep.meta["dims"] == [2, 3] and rep.meta["grid"] == [8, 8]
    runs: list[int] = []
    net.a.register_forward_pre_hook(lambda *_: runs.append(1))
    again = extract_patches(net, _Images(x), ["a", "b"], cache=tmp_path, progress=False)
    assert runs == []  # served from the cache
    assert np.array_equal(np.asarray(again.layers["patches"]), rep.layers["patches"])
    half = extract_patches(net, _Images(x), ["a", "b"], storage="float16", cache=tmp_path, progress=False)
    assert half.layers["patches"].dtype == np.float16
    assert np.allclose(half.layers["patches"], want, atol=2e-3)
    assert runs and len(list((tmp_path / "representations").glob("*.safetensors"))) == 2
