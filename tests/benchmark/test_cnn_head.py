"""The per-split CNN head of ``osr_mnist_cnn``: determinism, its logits, no unknown class in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unseen.benchmark.cnn_head import CNNHead
from unseen.benchmark.protocols import osr
from unseen.benchmark.protocols.probe import FeatureTable


def _squares(n_per_class: int, seed: int, classes: int = 10) -> FeatureTable:
    """28x28 images: a bright 6x6 square at a class-specific place plus noise; pixel 0 holds
    class / 10 exactly (a tracer of the true class for leak checks)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    img = rng.uniform(0, 0.2, size=(labels.size, 28, 28)).astype(np.float32)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 4)
        img[i, 2 + 8 * r: 8 + 8 * r, 2 + 6 * q: 8 + 6 * q] = 1.0
    flat = img.reshape(labels.size, -1)
    flat[:, 0] = labels / 10
    return FeatureTable(flat, labels)


def test_cnn_head_learns_reproduces_its_logits_and_is_deterministic() -> None:
    train, test = _squares(20, 0, classes=6), _squares(10, 1, classes=6)
    a = CNNHead(epochs=3, seed=0).fit(train, test)
    b = CNNHead(epochs=3, seed=0).fit(train, test)
    np.testing.assert_array_equal(a.weight_, b.weight_)
    rep = a.representation(test, test.labels)
    np.testing.assert_array_equal(rep.features, b.representation(test, test.labels).features)
    # the logits are the network's own output, and features @ W.T + b
    with torch.no_grad():
        x = (torch.from_numpy(test.features).view(-1, 1, 28, 28) - 0.1307) / 0.3081
        out = a.model_(x).numpy()
    np.testing.assert_allclose(rep.logits, out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rep.logits, rep.features @ rep.weight.T + rep.bias, rtol=1e-5,
                               atol=1e-5)
    assert (rep.features >= 0).all()  # post-ReLU penultimate layer
    assert a.val_accuracy_ == pytest.approx(np.mean(rep.logits.argmax(1) == test.labels))
    assert a.val_accuracy_ > 0.9  # six well-separated patterns
    c = CNNHead(epochs=3, seed=1).fit(train)
    assert not np.array_equal(a.weight_, c.weight_)


def test_cnn_head_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="784"):
        CNNHead(epochs=1).fit(FeatureTable(np.zeros((4, 10), np.float32), np.array([0, 1, 0, 1])))
    with pytest.raises(ValueError, match="0..C-1"):
        CNNHead(epochs=1).fit(_squares(2, 0, classes=1))


def test_no_unknown_class_reaches_the_cnn(monkeypatch, tmp_path) -> None:
    """Spy on every CNN fit of a full open-set run: pixel 0 carries each row's true class."""
    seen: list[tuple[set[int], set[int]]] = []
    real_fit = CNNHead.fit

    def spy(self, train, val=None):
        seen.append((set(np.rint(train.features[:, 0] * 10).astype(int).tolist()),
                     set(np.rint(val.features[:, 0] * 10).astype(int).tolist())))
        return real_fit(self, train, val)

    monkeypatch.setattr(CNNHead, "fit", spy)
    train, test = _squares(12, 0), _squares(4, 1)
    spec = osr.OpenSetSpec("toy", lambda *_: (train, test), [str(i) for i in range(10)],
                           osr.MNIST_SPLITS, hparams={"knn": {"k": 5}},
                           head=lambda s: CNNHead(epochs=1, seed=s))
    res = spec.run(["msp", "knn"], cache=False)
    assert len(seen) == 5
    for (fit_cls, val_cls), known in zip(seen, osr.MNIST_SPLITS, strict=True):
        assert fit_cls == set(known) and val_cls <= set(known)
    assert all(t["head"]["model"] == "SmallCNN(width=128)" for t in res.trials)
    assert len(res.records) == 10 and not res.failures
    html = res.write_outputs(tmp_path)["report.html"].read_text()
    assert html.count("SmallCNN(width=128), trained") == 5  # one trial row per split


@pytest.mark.slow
def test_real_osr_mnist_cnn_first_split(data_root) -> None:
    from unseen.benchmark.presets.openset import osr_mnist_cnn

    spec = osr_mnist_cnn(data_root)
    spec.splits = spec.splits[:1]
    train, test = spec.load(None, "cpu", False)
    assert len(train) + len(test) == 10_000 and train.features.shape[1] == 784
    assert 0 <= train.features.min() and train.features.max() == 1.0
    res = spec.run(["mls"], cache=False)
    known = np.isin(test.labels, spec.splits[0])
    assert res.trials[0]["sizes"] == {"fit": res.trials[0]["sizes"]["fit"], "val": res.trials[0][
        "sizes"]["val"], "known": int(known.sum()), "unknown": int((~known).sum())}
    assert res.trials[0]["accuracy"] > 0.95  # a CNN on six MNIST digits
