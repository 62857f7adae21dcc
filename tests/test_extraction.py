from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from unseen import extract
from unseen.extraction import HeadMismatchError, NetworkSource


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.extra = nn.Tanh()
        self.fc = nn.Linear(5, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.body(x))


def data(n: int = 50) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 6, generator=g), torch.arange(n) % 3)


def test_extract_finds_the_head_and_its_input() -> None:
    model, ds = Net(), data()
    rep = extract(model, ds, batch_size=16, progress=False)
    x = ds.tensors[0]
    with torch.no_grad():
        expected_feats = model.body(x).numpy()
        expected_logits = model.fc(model.body(x)).numpy()
    np.testing.assert_allclose(rep.features, expected_feats, rtol=1e-6)
    np.testing.assert_allclose(rep.logits, expected_logits, rtol=1e-6)
    np.testing.assert_array_equal(rep.labels, np.arange(50) % 3)
    np.testing.assert_array_equal(rep.weight, model.fc.weight.detach().numpy())
    np.testing.assert_array_equal(rep.bias, model.fc.bias.detach().numpy())
    assert rep.meta["head"] == "fc"
    assert isinstance(rep.source, NetworkSource) and rep.source.head is model.fc
    assert model.training  # the mode is restored


def test_named_penultimate_layer_and_reduced_intermediate_layers() -> None:
    model, ds = Net(), data(20)
    rep = extract(
        model, ds, penultimate="body", layers={"body.0": lambda t: t.sum(1, keepdim=True)},
        progress=False,
    )
    with torch.no_grad():
        pre = model.body[0](ds.tensors[0])
    np.testing.assert_allclose(rep.layers["body.0"][:, 0], pre.sum(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(rep.features, torch.relu(pre).numpy(), rtol=1e-6)


def test_a_hook_on_the_wrong_layer_is_caught() -> None:
    with pytest.raises(HeadMismatchError, match="wrong layer|not on the head's input"):
        extract(Net(), data(), penultimate="body.0", progress=False)


def test_unknown_module_names_are_listed() -> None:
    with pytest.raises(ValueError, match="no module named 'nope'.*body"):
        extract(Net(), data(), penultimate="nope", progress=False)


def test_cache_hits_skip_the_model_and_misses_follow_the_weights(tmp_path) -> None:
    model, ds = Net(), data()
    first = extract(model, ds, cache=tmp_path, dataset_id="toy-v1", progress=False)
    calls = model.calls
    second = extract(model, ds, cache=tmp_path, dataset_id="toy-v1", progress=False)
    assert model.calls == calls  # served from disk
    np.testing.assert_array_equal(first.features, second.features)
    assert second.source is not None
    with torch.no_grad():
        model.fc.bias += 1.0
    third = extract(model, ds, cache=tmp_path, dataset_id="toy-v1", progress=False)
    assert model.calls > calls
    np.testing.assert_allclose(third.logits, first.logits + 1.0, rtol=1e-5, atol=1e-6)
    extract(model, ds, cache=tmp_path, dataset_id="toy-v2", progress=False)
    assert len(list((tmp_path / "representations").iterdir())) == 3
    # The key travels in meta, from a miss and from a hit alike (network outcomes are keyed by it).
    assert first.meta["cache_key"] == second.meta["cache_key"] != third.meta["cache_key"]
    assert (tmp_path / "representations" / f"{first.meta['cache_key']}.safetensors").is_file()


def test_cache_needs_a_dataset_identity(tmp_path) -> None:
    with pytest.raises(ValueError, match="dataset_id"):
        extract(Net(), data(), cache=tmp_path, progress=False)


def test_tensor_input_is_its_own_identity(tmp_path) -> None:
    model = Net()
    x = data().tensors[0]
    extract(model, x, cache=tmp_path, progress=False)
    calls = model.calls
    rep = extract(model, x.clone(), cache=tmp_path, progress=False)
    assert model.calls == calls and rep.labels is None
    extract(model, x + 1, cache=tmp_path, progress=False)
    assert model.calls > calls


def test_a_source_subset_runs_the_model_on_those_rows_only() -> None:
    model, ds = Net(), data(10)
    rows = np.array([7, 2, 5])
    for source in (extract(model, ds, progress=False).source,
                   extract(model, ds.tensors[0], progress=False).source):
        (x, _), = list(source.subset(rows).batches())
        torch.testing.assert_close(x, ds.tensors[0][rows])
    # A DataLoader has no rows to index (this used to be a TypeError): they are picked from its
    # batches, in the order asked for, so Representation.subset can keep any source.
    loader_source = extract(model, DataLoader(ds, batch_size=4), progress=False).source
    x = torch.cat([b[0] for b in loader_source.subset(rows).batches()])
    torch.testing.assert_close(x, ds.tensors[0][rows])


def test_empty_data_is_an_error() -> None:
    empty = TensorDataset(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        extract(Net(), empty, progress=False)


def test_a_model_without_linear_layer_needs_a_named_feature_layer() -> None:
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear"):
        extract(conv, torch.zeros(4, 1, 5), progress=False)
    rep = extract(conv, torch.zeros(4, 1, 5), penultimate="0", progress=False)
    assert rep.features.shape == (4, 6) and rep.weight is None
