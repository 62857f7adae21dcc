"""Guard behaviour on Representations and raw inputs: classes, probabilities, errors, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from guard_data import make_rep, random_digits
from scipy import special

import unseen
from unseen import Representation, detectors, models
from unseen.data import transforms as T
from unseen.detectors import NotFittedError
from unseen.guard import Guard, GuardInputError


def test_unseen_guard_resolves_to_the_class() -> None:
    assert unseen.Guard is Guard


def test_class_and_probability_are_the_softmax_argmax() -> None:
    guard = Guard(detectors.create("mahalanobis")).fit(make_rep(300, 0))
    guard.calibrate(make_rep(100, 1), alpha=0.1)
    test = make_rep(20, 2)
    pred = guard.predict(test)
    probs = special.softmax(test.logits.astype(np.float64), axis=1)
    np.testing.assert_array_equal(pred.label, probs.argmax(axis=1))
    np.testing.assert_allclose(pred.probability, probs.max(axis=1), rtol=1e-12)
    # feature-only inputs get their logits from the head stored by fit(): same answers
    only = guard.predict(Representation(features=test.features))
    np.testing.assert_array_equal(only.label, pred.label)
    np.testing.assert_allclose(only.probability, pred.probability, rtol=1e-5)
    np.testing.assert_array_equal(only.score, pred.score)
    records = pred.records()
    assert records[0] == {
        "label": int(pred.label[0]), "probability": float(pred.probability[0]),
        "score": float(pred.score[0]), "p_value": float(pred.p_value[0]),
        "is_ood": bool(pred.is_ood[0]),
    }


def test_no_logits_and_no_head_means_no_class() -> None:
    rep = make_rep(300, 0)
    train = Representation(features=rep.features)
    guard = Guard(detectors.create("knn", k=5)).fit(train)
    guard.calibrate(Representation(features=make_rep(50, 1).features), 0.1)
    pred = guard.predict(Representation(features=make_rep(4, 2).features))
    assert pred.label is None and pred.probability is None
    assert pred.records()[0]["label"] is None


def test_unfitted_and_uncalibrated_guards_say_what_to_do() -> None:
    guard = Guard(detectors.create("knn", k=5))
    with pytest.raises(NotFittedError, match=r"guard\.fit"):
        guard.calibrate(make_rep(50, 1))
    guard.fit(make_rep(300, 0))
    with pytest.raises(NotFittedError, match=r"guard\.calibrate"):
        guard.predict(make_rep(5, 2))
    with pytest.raises(TypeError, match="Detector"):
        Guard("knn")


def test_calibration_data_must_be_in_distribution() -> None:
    guard = Guard(detectors.create("msp")).fit(make_rep(30, 0))
    rep = make_rep(50, 1)
    bad = Representation(logits=rep.logits, labels=np.where(np.arange(50) < 3, -1, rep.labels))
    with pytest.raises(GuardInputError, match="OOD labels"):
        guard.calibrate(bad)


def test_from_arrays_validates_shape_and_values() -> None:
    guard = Guard(detectors.create("knn", k=5)).fit(make_rep(300, 0)).calibrate(make_rep(50, 1), 0.1)
    with pytest.raises(GuardInputError, match="6 columns"):
        guard.from_arrays(features=np.ones((2, 5)))
    with pytest.raises(GuardInputError, match="NaN"):
        guard.from_arrays(features=np.full((2, 6), np.nan))
    with pytest.raises(GuardInputError, match="exactly one"):
        guard.from_arrays()
    with pytest.raises(GuardInputError, match="needs features"):
        guard.from_arrays(logits=np.ones((2, 3)))
    with pytest.raises(GuardInputError, match="no model"):
        guard.predict(np.ones((2, 6), np.float32))
    msp = Guard(detectors.create("msp")).fit(Representation(logits=make_rep(30, 0).logits))
    assert msp.input_dim("logits") == 3
    with pytest.raises(GuardInputError, match="send logits"):
        msp.input_dim("features")


@pytest.fixture(scope="module")
def model_guard() -> Guard:
    torch.manual_seed(0)
    model = models.create("mnist_convnet", num_classes=10)
    guard = Guard(detectors.create("energy"), model, model_name="mnist_convnet",
                  transform=T.mnist_transform())
    return guard.fit(random_digits(20, 0)).calibrate(random_digits(39, 1), alpha=0.05)


def test_raw_images_tensors_and_representations_agree(model_guard: Guard) -> None:
    images = random_digits(6, 2)
    tensor = torch.stack([T.mnist_transform()(T.Image.fromarray(a)) for a in images])
    from_images = model_guard.predict(images, record=False)
    from_tensor = model_guard.predict(tensor, record=False)
    with torch.inference_mode():
        logits = model_guard.model(tensor).double().numpy()
    independent = -special.logsumexp(logits, axis=1)  # energy at T = 1
    np.testing.assert_allclose(from_images.score, independent, rtol=1e-5)
    np.testing.assert_array_equal(from_images.score, from_tensor.score)
    np.testing.assert_array_equal(from_images.label, logits.argmax(axis=1))
    rep = unseen.extract(model_guard.model, tensor, progress=False)
    np.testing.assert_array_equal(model_guard.predict(rep, record=False).score, from_tensor.score)
    one = model_guard.predict(images[0], record=False)  # a single uint8 image
    assert len(one) == 1  # torch kernels differ by batch size in the last bits:
    np.testing.assert_allclose(one.score[0], from_images.score[0], rtol=1e-6)


def test_bad_raw_inputs_are_refused(model_guard: Guard) -> None:
    with pytest.raises(GuardInputError, match="uint8"):
        model_guard.predict([np.zeros((28, 28), np.int32)])
    with pytest.raises(GuardInputError, match="NaN"):
        model_guard.predict(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(GuardInputError, match="non-empty"):
        model_guard.predict([])
    with pytest.raises(GuardInputError, match="rejected"):
        model_guard.predict(torch.zeros(2, 3, 5, 5))


def test_concurrent_predictions_equal_sequential_ones(model_guard: Guard) -> None:
    batches = [random_digits(int(n), 10 + i) for i, n in enumerate([1, 7, 3, 12, 5, 2, 9, 4])]
    sequential = [model_guard.predict(b, record=False).score for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda b: model_guard.predict(b, record=False).score, batches))
    for a, b in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_head_carried_by_the_input_gives_classes_without_a_stored_head() -> None:
    rep = make_rep(300, 0)
    guard = Guard(detectors.create("knn", k=5)).fit(Representation(features=rep.features))
    guard.calibrate(Representation(features=make_rep(50, 1).features), 0.1)
    assert guard.head is None
    test = make_rep(8, 2)
    pred = guard.predict(Representation(features=test.features, weight=test.weight, bias=test.bias))
    np.testing.assert_array_equal(pred.label, test.logits.argmax(axis=1))
