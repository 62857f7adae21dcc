"""Loading checkpoints saved in foreign layouts, and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import unseen.models as models
from unseen.models import CheckpointError, CheckpointMismatchError, load_checkpoint


def _trained_like(name: str, seed: int) -> torch.nn.Module:
    """A model whose BatchNorm statistics differ from the defaults, so they matter."""
    torch.manual_seed(seed)
    model = models.create(name)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def _no_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_akamaster_layout_loads(name: str, tmp_path: Path) -> None:
    source = _trained_like(name, seed=0)
    state = {f"module.{k}": v for k, v in _no_counters(source.state_dict()).items()}
    path = tmp_path / f"{name}.th"
    torch.save({"state_dict": state, "best_prec1": 91.0}, path)
    target = _trained_like(name, seed=1)
    report = load_checkpoint(target, path)
    assert report.missing == report.unexpected == ()
    _assert_same_outputs(source, target, (2, 3, 32, 32))


def test_oe_mnist_layout_loads(tmp_path: Path) -> None:
    source = _trained_like("mnist_convnet", seed=0)
    torch.save(source.state_dict(), tmp_path / "baseline_epoch_9.pt")
    target = _trained_like("mnist_convnet", seed=1)
    load_checkpoint(target, tmp_path / "baseline_epoch_9.pt")
    _assert_same_outputs(source, target, (3, 1, 28, 28))


@pytest.mark.parametrize("wrapper", ["net", "model", None])
def test_openood_resnet18_layout_loads(wrapper: str | None, tmp_path: Path) -> None:
    source = _trained_like("resnet18_32x32", seed=0)
    state = source.state_dict()  # OpenOOD saves net.state_dict(), counters included
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 99}, tmp_path / "best.ckpt")
    target = _trained_like("resnet18_32x32", seed=1)
    load_checkpoint(target, tmp_path / "best.ckpt")
    _assert_same_outputs(source, target, (2, 3, 32, 32))


def test_torchvision_resnet50_layout_loads_from_memory() -> None:
    source = _trained_like("resnet50", seed=0)
    target = _trained_like("resnet50", seed=1)
    load_checkpoint(target, dict(source.state_dict()))
    _assert_same_outputs(source, target, (1, 3, 64, 64))


def test_counter_only_difference_is_ignored_but_reported_with_others() -> None:
    model = models.create("mnist_convnet")
    source = _trained_like("resnet20", seed=0)
    target = _trained_like("resnet20", seed=1)
    # only num_batches_tracked missing: fine (akamaster's files have none)
    load_checkpoint(target, _no_counters(source.state_dict()))
    # extra counters alone are ignored too
    extra = dict(model.state_dict()) | {"bn9.num_batches_tracked": torch.tensor(3)}
    load_checkpoint(model, extra)
    # together with a real mismatch they are listed as well
    state = _no_counters(source.state_dict())
    del state["linear.bias"]
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, state)
    assert "linear.bias" in info.value.missing
    assert len(info.value.missing) == 1 + 19  # ResNet-20 has 19 BatchNorm layers


def test_mismatch_lists_missing_unexpected_and_shapes() -> None:
    model = models.create("mnist_convnet")
    state = dict(model.state_dict())
    state["fc3.weight"] = state.pop("fc2.weight")
    state["conv1.bias"] = torch.zeros(11)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, state)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.missing == ["fc2.weight"]
    assert err.unexpected == ["fc3.weight"]
    assert err.shape_mismatches == [("conv1.bias", (11,), (10,))]
    message = str(err)
    assert "1 missing key(s): fc2.weight" in message
    assert "1 unexpected key(s): fc3.weight" in message
    assert "conv1.bias (checkpoint (11,), model (10,))" in message


def test_long_key_lists_are_truncated_with_counts() -> None:
    model = models.create("resnet20")
    state = {f"other.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, state)
    message = str(info.value)
    assert "116 missing key(s): conv1.weight, bn1.weight," in message
    assert "... and 106 more" in message
    assert len(info.value.unexpected) == 116


def test_non_strict_loads_the_overlap_and_reports_the_rest() -> None:
    source = _trained_like("mnist_convnet", seed=0)
    target = _trained_like("mnist_convnet", seed=1)
    state = dict(source.state_dict())
    state.pop("fc2.bias")
    state["extra.weight"] = torch.ones(2)
    report = load_checkpoint(target, state, strict=False)
    assert report.missing == ("fc2.bias",)
    assert report.unexpected == ("extra.weight",)
    assert torch.equal(target.fc1.weight, source.fc1.weight)
    assert not torch.equal(target.fc2.bias, source.fc2.bias)


def test_partial_module_prefix_is_not_stripped() -> None:
    model = models.create("mnist_convnet")
    state = dict(model.state_dict())
    state["module.fc2.bias"] = state.pop("fc2.bias")
    with pytest.raises(CheckpointMismatchError, match=r"module\.fc2\.bias"):
        load_checkpoint(model, state)


def test_corrupt_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        load_checkpoint(models.create("mnist_convnet"), path)


def test_truncated_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save(models.create("mnist_convnet").state_dict(), path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_checkpoint(models.create("mnist_convnet"), path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(models.create("mnist_convnet"), path)  # a whole module: needs unsafe unpickling
    with pytest.raises(CheckpointError, match=r"pickled\.pt"):
        load_checkpoint(models.create("mnist_convnet"), path)


def test_missing_file_and_non_state_dict(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        load_checkpoint(models.create("mnist_convnet"), tmp_path / "nothing.pt")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not tensors: epoch, weights"):
        load_checkpoint(models.create("mnist_convnet"), tmp_path / "odd.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_checkpoint(models.create("mnist_convnet"), tmp_path / "list.pt")
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="found an empty mapping"):
        load_checkpoint(models.create("mnist_convnet"), tmp_path / "empty.pt")
