"""Architecture checks against hand-computed values and published layouts/parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import unseen.models as models
from unseen.models.cifar_resnet import BasicBlock, CifarResNet, option_a_shortcut

BN = ("weight", "bias", "running_mean", "running_var")


def _weights(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_option_a_pads_zero_channels_before_and_after() -> None:
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    out = option_a_shortcut(x, out_channels=4)
    zeros = [[0.0, 0.0], [0.0, 0.0]]
    expected = torch.tensor([[zeros, [[0, 2], [8, 10]], [[16, 18], [24, 26]], zeros]])
    assert torch.equal(out, expected)


def test_downsampling_block_adds_option_a_shortcut() -> None:
    torch.manual_seed(0)
    block = BasicBlock(16, 32, stride=2).eval()
    torch.nn.init.zeros_(block.conv2.weight)  # residual branch becomes exactly zero
    x = torch.randn(2, 16, 8, 8)
    sub = x[:, :, ::2, ::2]
    zeros = torch.zeros(2, 8, 4, 4)
    expected = torch.cat([zeros, sub, zeros], dim=1).relu()
    assert torch.equal(block(x), expected)


@pytest.mark.parametrize(("depth", "n_params"), [(20, 269_722), (56, 853_018)])
def test_cifar_resnet_parameter_counts_match_akamaster(depth: int, n_params: int) -> None:
    # Counts of the released checkpoints, documented in the shared data README.
    assert _n_params(models.create(f"resnet{depth}")) == n_params


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_keys_follow_akamaster_table(depth: int) -> None:
    n = (depth - 2) // 6
    expected = {"conv1.weight": (16, 3, 3, 3), "linear.weight": (10, 64), "linear.bias": (10,)}
    expected |= {f"bn1.{s}": (16,) for s in BN}
    for stage, (cin, c) in enumerate([(16, 16), (16, 32), (32, 64)], start=1):
        for b in range(n):
            first_in = cin if b == 0 else c
            expected[f"layer{stage}.{b}.conv1.weight"] = (c, first_in, 3, 3)
            expected[f"layer{stage}.{b}.conv2.weight"] = (c, c, 3, 3)
            expected |= {f"layer{stage}.{b}.bn{i}.{s}": (c,) for i in (1, 2) for s in BN}
    weights = _weights(models.create(f"resnet{depth}"))
    assert weights == expected
    assert len(weights) == 7 + 30 * n


def test_cifar_resnet_rejects_unknown_depth() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        CifarResNet(depth=18)


def test_openood_resnet18_keys_match_openood_module() -> None:
    # From openood/networks/resnet18_32x32.py (OpenOOD v1.5): BasicBlock conv1/bn1/conv2/bn2 and
    # a conv-BN ``shortcut`` Sequential only in layer2.0, layer3.0, layer4.0; avgpool has no state.
    state = models.create("resnet18_32x32").state_dict()
    assert len(state) == 122  # 102 weights/buffers + 20 num_batches_tracked
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.running_var": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.1.bn2.bias": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer2.0.shortcut.1.running_mean": (128,),
        "layer3.0.shortcut.1.num_batches_tracked": (),
        "layer4.0.shortcut.0.weight": (512, 256, 1, 1),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (10, 512),
        "fc.bias": (10,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(k.startswith(("layer1.0.shortcut", "layer2.1.shortcut")) for k in state)
    shortcuts = sorted({k.rsplit(".", 2)[0] for k in state if ".shortcut." in k})
    assert shortcuts == ["layer2.0.shortcut", "layer3.0.shortcut", "layer4.0.shortcut"]


def test_openood_resnet18_parameter_count_and_stem() -> None:
    model = models.create("resnet18_32x32")
    assert _n_params(model) == 11_173_962  # the usual CIFAR ResNet-18 count
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_resnet50_matches_torchvision_layout() -> None:
    model = models.create("resnet50")
    state = model.state_dict()
    assert len(state) == 320  # torchvision resnet50().state_dict(), incl. 53 num_batches_tracked
    assert sum(k.endswith("num_batches_tracked") for k in state) == 53
    assert _n_params(model) == 25_557_032  # torchvision's documented resnet50 size
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.running_var": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.0.downsample.1.bias": (2048,),
        "fc.weight": (1000, 2048),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert model.layer2[0].conv2.stride == (2, 2)  # torchvision puts the stride in the 3x3
    assert model.layer2[0].conv1.stride == (1, 1)
    assert "layer1.1.downsample.0.weight" not in state


def _mnist_reference(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    def act(t: torch.Tensor) -> torch.Tensor:
        return t * torch.sigmoid(1.702 * t)

    h = act(F.max_pool2d(F.conv2d(x, state["conv1.weight"], state["conv1.bias"]), 2))
    h = act(F.max_pool2d(F.conv2d(h, state["conv2.weight"], state["conv2.bias"]), 2))
    h = act(h.reshape(len(x), 320) @ state["fc1.weight"].T + state["fc1.bias"])
    return h @ state["fc2.weight"].T + state["fc2.bias"]


def test_mnist_convnet_matches_functional_reference() -> None:
    torch.manual_seed(1)
    model = models.create("mnist_convnet").eval()
    assert _weights(model) == {
        "conv1.weight": (10, 1, 5, 5),
        "conv1.bias": (10,),
        "conv2.weight": (20, 10, 5, 5),
        "conv2.bias": (20,),
        "fc1.weight": (50, 320),
        "fc1.bias": (50,),
        "fc2.weight": (10, 50),
        "fc2.bias": (10,),
    }
    assert _n_params(model) == 21_840
    x = 4 * torch.randn(4, 1, 28, 28)  # wide range: the activation is not monotone below -0.75
    with torch.no_grad():
        torch.testing.assert_close(model(x), _mnist_reference(model.state_dict(), x))


@pytest.mark.parametrize(
    ("name", "size"),
    [("resnet20", 32), ("mnist_convnet", 28), ("resnet18_32x32", 32), ("resnet50", 64)],
)
def test_forward_features_is_the_head_input(name: str, size: int) -> None:
    torch.manual_seed(2)
    model = models.create(name).eval()
    meta = models.info(name)
    captured: list[torch.Tensor] = []
    head = model.get_submodule(meta.head)
    head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    x = torch.rand(2, meta.input_shape[0], size, size)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
    assert features.shape == (2, meta.feature_dim)
    assert torch.equal(captured[0], features)
    assert torch.equal(logits, head(features))


def test_resnet18_features_are_mean_of_layer4() -> None:
    torch.manual_seed(3)
    model = models.create("resnet18_32x32").eval()
    maps: list[torch.Tensor] = []
    model.layer4.register_forward_hook(lambda _m, _a, out: maps.append(out))
    with torch.no_grad():
        features = model.forward_features(torch.rand(2, 3, 32, 32))
    assert maps[0].shape[-2:] == (4, 4)  # stride-1 stem, no max-pool: 32 -> 32/16/8/4
    torch.testing.assert_close(features, maps[0].mean(dim=(2, 3)))
