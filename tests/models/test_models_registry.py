"""The model registry: names, metadata, construction and pretrained presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import unseen.models as models

ALL = {
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "mnist_convnet", "resnet18_32x32", "resnet50", "digits_cnn",
    "wide_resnet50_2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
}


def test_names_and_one_line_descriptions() -> None:
    assert set(models.names()) == ALL
    assert models.names() == sorted(models.names())
    for name in models.names():
        description = models.info(name).description
        assert description and "\n" not in description and len(description) < 100
    assert list(models.describe()) == models.names()
    assert models.describe()["resnet56"] == models.info("resnet56").description
    assert "ResNet-56" in models.describe()["resnet56"]


def test_normalisation_the_weights_expect() -> None:
    # akamaster trains with ImageNet statistics (trainer.py); OpenOOD v1.5's preprocessor uses
    # the CIFAR-10 statistics below; the OE MNIST ConvNet sees raw [0, 1] pixels.
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for depth in (20, 32, 44, 56, 110):
        meta = models.info(f"resnet{depth}")
        assert (meta.mean, meta.std, meta.input_shape) == (*imagenet, (3, 32, 32))
    openood = models.info("resnet18_32x32")
    assert (openood.mean, openood.std) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    mnist = models.info("mnist_convnet")
    assert (mnist.mean, mnist.std, mnist.input_shape) == (None, None, (1, 28, 28))
    r50 = models.info("resnet50")
    assert (r50.mean, r50.std, r50.input_shape) == (*imagenet, (3, 224, 224))


@pytest.mark.parametrize(
    ("name", "head", "dim"),
    [("resnet56", "linear", 64), ("mnist_convnet", "fc2", 50), ("resnet18_32x32", "fc", 512)],
)
def test_create_with_num_classes_sets_the_head(name: str, head: str, dim: int) -> None:
    model = models.create(name, num_classes=7)
    layer = model.get_submodule(models.info(name).head)
    assert models.info(name).head == head
    assert (layer.in_features, layer.out_features) == (dim, 7)
    assert models.create(name).get_submodule(head).out_features == 10


def test_bad_names_and_class_counts() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'.*resnet18_32x32"):
        models.create("resnet18")
    with pytest.raises(ValueError, match="unknown pretrained preset"):
        models.pretrained("resnet32_cifar10", ".")
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            models.create("resnet20", num_classes=bad)  # type: ignore[arg-type]


def test_presets_point_into_the_data_bundle() -> None:
    assert models.presets() == [
        "mnist_convnet_baseline", "mnist_convnet_oe", "resnet20_cifar10", "resnet56_cifar10",
    ]
    assert models.preset("resnet56_cifar10").checkpoint == (
        "weights/akamaster_resnet_cifar10/resnet56-4bfd9763.th"
    )
    assert models.preset("mnist_convnet_oe").checkpoint == (
        "weights/oe_mnist_convnet/oe_tune_epoch_4.pt"
    )


def test_missing_weights_say_where_and_how_to_unpack(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        models.pretrained("resnet20_cifar10", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "weights/akamaster_resnet_cifar10/resnet20-12fca82f.th") in message
    assert f"../shared/data/unpack {tmp_path}" in message


def test_pretrained_loads_a_local_file_in_eval_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = models.create("mnist_convnet")
    target = tmp_path / "weights" / "oe_mnist_convnet"
    target.mkdir(parents=True)
    torch.save(source.state_dict(), target / "baseline_epoch_9.pt")
    model = models.pretrained("mnist_convnet_baseline", tmp_path)
    assert not model.training
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), source.eval()(x))
