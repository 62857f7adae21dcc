"""``extract(..., channels_last=True)``: same numbers as the default pass, its own cache entry,
the same behaviour on the local and the Ray runner."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from unseen import cache as cache_mod
from unseen import extract
from unseen.extraction import ray as ray_mod


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.pool(self.block(self.conv(x))).flatten(1))


def images(n: int = 40) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 4)


def _gap(t: torch.Tensor) -> torch.Tensor:
    return t.mean((2, 3))


LAYERS = {"conv": None, "block.0": _gap}


def test_channels_last_matches_the_default_pass_and_converts_the_model() -> None:
    ds = images()
    plain_model, cl_model = ConvNet(), ConvNet()
    plain = extract(plain_model, ds, layers=LAYERS, batch_size=16, progress=False)
    cl = extract(cl_model, ds, layers=LAYERS, batch_size=16, progress=False, channels_last=True)
    for got, want in ((cl.features, plain.features), (cl.logits, plain.logits),
                      (cl.layers["conv"], plain.layers["conv"]),
                      (cl.layers["block.0"], plain.layers["block.0"])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the raw conv output is stored in NCHW order whatever the memory format was
    with torch.no_grad():
        expected_conv = plain_model.conv(ds.tensors[0]).numpy()
    np.testing.assert_allclose(cl.layers["conv"], expected_conv, rtol=0, atol=1e-5)
    assert cl.meta["channels_last"] is True and plain.meta["channels_last"] is False
    # converted in place, as documented; the default leaves the weights contiguous
    assert cl_model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not cl_model.conv.weight.is_contiguous()
    assert plain_model.conv.weight.is_contiguous()
    # network detectors rerun the model on ordinary NCHW batches: still the same logits
    x = ds.tensors[0][:10].contiguous()
    with torch.no_grad():
        np.testing.assert_allclose(cl_model.eval()(x).numpy(), plain.logits[:10], rtol=0,
                                   atol=1e-5)
    batch, _ = next(iter(cl.source.batches()))
    with torch.no_grad():
        np.testing.assert_allclose(cl_model(batch).numpy(), plain.logits[: len(batch)], rtol=0,
                                   atol=1e-5)


def test_channels_last_has_its_own_cache_entry_and_the_default_key_is_unchanged(tmp_path) -> None:
    ds, model = images(), ConvNet()
    plain = extract(model, ds, layers=LAYERS, cache=tmp_path, dataset_id="toy", progress=False)
    # The key as extract computed it before the flag existed: old entries stay valid.
    old_settings = {"penultimate": None, "head": "fc",
                    "layers": {"conv": "None", "block.0": _gap.__qualname__}}
    assert plain.meta["cache_key"] == cache_mod.key(model, "toy", old_settings)
    cl = extract(model, ds, layers=LAYERS, cache=tmp_path, dataset_id="toy", progress=False,
                 channels_last=True)
    assert cl.meta["cache_key"] == cache_mod.key(model, "toy",
                                                 {**old_settings, "channels_last": True})
    assert cl.meta["cache_key"] != plain.meta["cache_key"]
    calls = model.calls
    hit = extract(model, ds, layers=LAYERS, cache=tmp_path, dataset_id="toy", progress=False,
                  channels_last=True)
    assert model.calls == calls  # served from its own entry
    assert hit.meta["cache_key"] == cl.meta["cache_key"] and hit.meta["channels_last"] is True
    np.testing.assert_array_equal(hit.logits, cl.logits)
    again = extract(model, ds, layers=LAYERS, cache=tmp_path, dataset_id="toy", progress=False)
    assert model.calls == calls and again.meta["channels_last"] is False
    np.testing.assert_array_equal(again.logits, plain.logits)
    assert len(list((tmp_path / "representations").iterdir())) == 2


@pytest.mark.parametrize("bad", [1, "yes", None, np.bool_(True)])
def test_a_non_bool_channels_last_is_refused(bad) -> None:
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        extract(ConvNet(), images(8), progress=False, channels_last=bad)


def test_channels_last_on_non_image_inputs_leaves_them_alone() -> None:
    # 2-D batches have no channels-last layout: the flag converts only 4-D inputs.
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))
    plain = extract(model, x, progress=False)
    cl = extract(model, x, progress=False, channels_last=True)
    np.testing.assert_array_equal(cl.logits, plain.logits)


class _Stop(Exception):
    pass


def test_the_ray_runner_hands_the_flag_to_its_actors(monkeypatch) -> None:
    # Without starting Ray: RayRunner.extract stops where it builds the actors' settings.
    built: list[ray_mod._ActorSettings] = []
    settings_cls = ray_mod._ActorSettings

    def record(*args: object) -> None:
        built.append(settings_cls(*args))  # type: ignore[arg-type]
        raise _Stop

    fake = SimpleNamespace(
        data=SimpleNamespace(DataContext=SimpleNamespace(get_current=SimpleNamespace)),
        put=lambda obj: obj,
    )
    monkeypatch.setattr(ray_mod.RayRunner, "connect", lambda self: fake)
    monkeypatch.setattr(ray_mod, "_ActorSettings", record)
    for flag in (True, False):
        with pytest.raises(_Stop):
            extract(ConvNet(), images(8), progress=False, channels_last=flag,
                    runner=ray_mod.RayRunner(num_actors=1))
    assert [s.channels_last for s in built] == [True, False]


def test_the_ray_actor_honours_the_flag_like_the_local_runner(monkeypatch) -> None:
    # The actor's own loop, without starting Ray: ``get`` hands the payload back as put.
    ds = images(24)
    local = extract(ConvNet(), ds, layers=LAYERS, progress=False, channels_last=True)
    monkeypatch.setattr(ray_mod, "_ray", lambda: SimpleNamespace(get=lambda payload: payload))
    model = ConvNet().eval()
    settings = ray_mod._ActorSettings(None, LAYERS, "cpu", 1, True)
    actor = ray_mod._Extractor((model, model.fc, ds), settings)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    out = actor({"data": np.arange(24)})
    np.testing.assert_allclose(out["logits"], local.logits, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["layer:conv"], local.layers["conv"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["features"], local.features, rtol=0, atol=1e-6)
