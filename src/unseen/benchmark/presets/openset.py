"""Open-set, one-class, remote-sensing and text presets on the data bundle (frozen features).

Image presets share one frozen ImageNet backbone, EfficientNet-Lite0 (:mod:`unseen.models.efficientnet`),
whose 1280-d pooled features are extracted once per dataset through the representation cache
(``$UNSEEN_CACHE_DIR``) and reused by every trial and preset. Preprocessing: RGB (grey images
copied to 3 channels), the *whole* image resized to :data:`RESOLUTION` px (bicubic, no crop:
the images are 28-64 px, a crop would lose object), ``(x - 127) / 128``. Resolution 128 was chosen
by measurement on this 2-core CPU (EfficientNet-Lite0, 200 train / 100 test CIFAR-10 images per
class, 10-way logistic regression): 96 px 186 img/s, accuracy 68.7 %; 128 px 101 img/s, 70.6 %;
160 px 66 img/s, 71.1 %; 224 px about 30 img/s: 160 px buys 0.5 points for 1.5x the time.

Splits (all seeded, fixed):

* CIFAR-10 (JPEG q75 copy): training set cut to :data:`CIFAR_TRAIN_PER_CLASS` images per class
  (seed :data:`SPLIT_SEED`) to keep extraction affordable on a CPU shared by eight jobs
  (measured: 250 → 1,000 training images per class moves max-logit AUROC 77.9 → 78.9 only);
  the whole 10,000-image test set.
* MNIST: only its 10,000-image test set exists here; split per class 60 / 40 % (seed 0) into
  train 6,000 / test 4,000 (the ``mnist`` preset's fit+val / test).
* EuroSAT RGB subset (1,500 per class, no official split): per class, a seeded permutation
  (seed :data:`SPLIT_SEED`) gives train = the first 1,000 (OOD preset: fit 900 + val 100) and
  test = the next 500. Open-set trials: :data:`EUROSAT_SPLITS`, five 6-of-10 known sets drawn by
  :func:`~unseen.benchmark.protocols.osr.seeded_splits` with seed :data:`EUROSAT_SPLIT_SEED`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from unseen.benchmark.presets.real import require_data_root, stratified_split
from unseen.benchmark.presets.registry import register_preset
from unseen.benchmark.protocols.oneclass import OneClassSpec
from unseen.benchmark.protocols.osr import (
    CIFAR10_SPLITS,
    MNIST_SPLITS,
    OpenSetSpec,
    seeded_splits,
)
from unseen.benchmark.protocols.probe import (
    FeatureTable,
    IndexedSubset,
    extract_features,
    per_class_rows,
)
from unseen.benchmark.protocols.probe_ood import ProbeOODSpec
from unseen.benchmark.spec import PreparedModel
from unseen.data.transforms import Compose, Normalize, ToRGB, ToTensor, Transform, _check_pil

BACKBONE = "efficientnet_lite0"
RESOLUTION = 128
SPLIT_SEED = 0
CIFAR_TRAIN_PER_CLASS = 1000
EUROSAT_TRAIN, EUROSAT_VAL, EUROSAT_TEST = 900, 100, 500
EUROSAT_SPLIT_SEED = 0
EUROSAT_SPLITS = seeded_splits(10, 6, 5, EUROSAT_SPLIT_SEED)
#: Tiny ImageNet images per class in the EuroSAT far-OOD set (2,000 of the 10,000)
TIN_PER_CLASS = 10
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
EUROSAT_DIR = "eurosat_rgb_subset1500/2750"
CIFAR_ANCHORS = (
    "Vaze et al. ICLR 2022, MLS (max-logit) baseline AUROC 93.6 on CIFAR-10 6/4 (a VGG32 "
    "trained on the known classes at 32 px, not a frozen ImageNet backbone)",
    "ARPL+CS (Chen et al. TPAMI 2021) AUROC 91.0 on CIFAR-10 6/4 (trained network)",
)
ONECLASS_ANCHORS = (
    "DN2 (Bergman, Cohen, Hoshen 2020), kNN k=2 on ImageNet ResNet features: CIFAR-10 mean "
    "AUROC ≈ 92.5 (a larger backbone at 224 px)",
    "PANDA (Reiss et al. CVPR 2021): 96.2 with fine-tuning",
)
#: DN2's k for one-class kNN
DN2_K = 2
#: open-set overrides of detector defaults (trials run at defaults, no search). NNGuide's
#: default bank is 1 % of the training set (the paper's: 1 % of ImageNet, 12,800 images) with
#: k = 100; 1 % of a trial's few thousand fit rows holds fewer than 100, so the bank is the
#: whole fit set (alpha = 1, a value of its grid) and k stays the paper's 100.
OSR_HPARAMS: dict[str, dict[str, Any]] = {"nnguide": {"alpha": 1.0}}


class ResizeWhole(Transform):
    """Resize the whole image to ``size`` x ``size`` (bicubic), no crop."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ResizeWhole: size must be a positive int, got {size!r}")
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "ResizeWhole")
        return img.resize((self.size, self.size), Image.Resampling.BICUBIC)

    def describe(self) -> str:
        return f"ResizeWhole(size={self.size}, interpolation=bicubic)"


def backbone_transform(size: int = RESOLUTION) -> Compose:
    from unseen.models.efficientnet import LITE_MEAN, LITE_STD

    return Compose([ToRGB(), ResizeWhole(size), ToTensor(), Normalize(LITE_MEAN, LITE_STD)])


def backbone() -> PreparedModel:
    """EfficientNet-Lite0 with its ImageNet weights; features = the 1280-d input of ``_fc``."""
    from unseen.models.efficientnet import lite_pretrained

    return PreparedModel(lite_pretrained(BACKBONE), head="_fc",
                         description=f"EfficientNet-Lite0 (ImageNet, frozen) at {RESOLUTION} px")


def _decode_workers() -> int:
    from unseen.benchmark.presets.real import DECODE_WORKERS

    return DECODE_WORKERS


def features_of(data: Dataset) -> Callable[[Path | None, str, bool], FeatureTable]:
    def load(cache_dir: Path | None, device: str, progress: bool) -> FeatureTable:
        return extract_features(backbone(), data, cache_dir, device=device,
                                num_workers=_decode_workers(), progress=progress)

    return load


# ----------------------------------------------------------------------------- datasets


def eurosat_images(root: Path) -> Any:
    from unseen.data import ImageFolder

    return ImageFolder(root / EUROSAT_DIR, backbone_transform())


def cifar10_train_subset(root: Path) -> IndexedSubset:
    from unseen.data import ImageFolder

    train = ImageFolder(root / "cifar10" / "train", backbone_transform())
    rows = per_class_rows(np.asarray(train.labels), [CIFAR_TRAIN_PER_CLASS], SPLIT_SEED)[0]
    return IndexedSubset(train, rows)


def cifar10_test(root: Path) -> Any:
    from unseen.data import ImageFolder

    return ImageFolder(root / "cifar10" / "test", backbone_transform())


def mnist_images(root: Path) -> Any:
    from unseen.data import IDXDataset

    return IDXDataset(root / "mnist/t10k-images-idx3-ubyte.gz",
                      root / "mnist/t10k-labels-idx1-ubyte.gz", backbone_transform())


def textures(root: Path) -> Any:
    from unseen.data import ImageFolder

    return ImageFolder(root / "texture", backbone_transform())


def tin_subset(root: Path) -> IndexedSubset:
    from unseen.data import TinyImageNetVal

    tin = TinyImageNetVal(root / "tin", backbone_transform())
    return IndexedSubset(tin, per_class_rows(np.asarray(tin.labels), [TIN_PER_CLASS], SPLIT_SEED)[0])


#: every image set the presets extract, by name (for warming the cache)
IMAGE_SETS: dict[str, Callable[[Path], Dataset]] = {
    "eurosat": eurosat_images, "texture": textures, "cifar10_test": cifar10_test,
    "cifar10_train": cifar10_train_subset, "tin": tin_subset, "mnist": mnist_images,
}


def eurosat_rows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, val, test) row indices of the EuroSAT split; train = fit ∪ val."""
    fit, val, test = per_class_rows(labels, [EUROSAT_TRAIN, EUROSAT_VAL, EUROSAT_TEST],
                                    EUROSAT_SPLIT_SEED)
    return fit, val, test


def _root(data_root: str | Path | None, preset: str, needed: Sequence[str]) -> Path:
    return require_data_root(data_root, preset, needed)


Tables = tuple[FeatureTable, FeatureTable]


def _cifar_loader(root: Path) -> Callable[[Path | None, str, bool], Tables]:
    def load(cache_dir: Path | None, device: str, progress: bool) -> Tables:
        train = features_of(cifar10_train_subset(root))(cache_dir, device, progress)
        return train, features_of(cifar10_test(root))(cache_dir, device, progress)

    return load


def _eurosat_loader(root: Path) -> Callable[[Path | None, str, bool], Tables]:
    def load(cache_dir: Path | None, device: str, progress: bool) -> Tables:
        table = features_of(eurosat_images(root))(cache_dir, device, progress)
        fit, val, test = eurosat_rows(table.labels)
        return table.take(np.sort(np.concatenate([fit, val]))), table.take(test)

    return load


def _mnist_loader(root: Path) -> Callable[[Path | None, str, bool], Tables]:
    def load(cache_dir: Path | None, device: str, progress: bool) -> Tables:
        table = features_of(mnist_images(root))(cache_dir, device, progress)
        train, test = stratified_split(table.labels, (0.6,), SPLIT_SEED)
        return table.take(train), table.take(test)

    return load


_META = {"backbone": f"{BACKBONE} (ImageNet, frozen)", "resolution": RESOLUTION,
         "head": "multinomial logistic regression (scikit-learn lbfgs) on standardised features, "
                 "C by known-class validation accuracy, folded into weight/bias"}


# ----------------------------------------------------------------------------- open set


@register_preset("osr_cifar10")
def osr_cifar10(data_root: str | Path | None = None, seed: int = 0) -> OpenSetSpec:
    """Open-set CIFAR-10 6/4, the 5 published splits (Neal et al.); frozen Lite0 features + linear head."""
    root = _root(data_root, "osr_cifar10", ["cifar10/train", "cifar10/test"])
    return OpenSetSpec(
        name="osr_cifar10", load=_cifar_loader(root), class_names=CIFAR10_CLASSES,
        splits=CIFAR10_SPLITS, anchors=CIFAR_ANCHORS, hparams=OSR_HPARAMS,
        meta={**_META, "dataset": "CIFAR-10 (JPEG q75)",
              "train": f"{CIFAR_TRAIN_PER_CLASS} per class (seed {SPLIT_SEED}) of the training set",
              "test": "the whole test set (10,000)",
              "splits": "Neal et al. ECCV 2018 via ARPL split.py / Vaze et al. osr_splits.py; "
                        "splits 0 and 1 are the same known set"},
    )


@register_preset("osr_mnist")
def osr_mnist(data_root: str | Path | None = None, seed: int = 0) -> OpenSetSpec:
    """Open-set MNIST 6/4, the 5 published splits; MNIST test split 60/40; frozen Lite0 + linear head."""
    root = _root(data_root, "osr_mnist", ["mnist/t10k-images-idx3-ubyte.gz"])
    return OpenSetSpec(
        name="osr_mnist", load=_mnist_loader(root), class_names=[str(d) for d in range(10)],
        splits=MNIST_SPLITS, hparams=OSR_HPARAMS,
        meta={**_META, "dataset": "MNIST test set (10,000), split per class 60/40 % (seed 0): "
              "train 6,000, test 4,000", "splits": "Neal et al. via ARPL / Vaze et al."},
    )


def _mnist_pixels_loader(root: Path) -> Callable[[Path | None, str, bool], Tables]:
    """Raw pixels in [0, 1] (N, 784) of the same 60/40 split as ``osr_mnist``: the CNN's input."""
    def load(_cache_dir: Path | None, _device: str, _progress: bool) -> Tables:
        from unseen.data import IDXDataset

        ds = IDXDataset(root / "mnist/t10k-images-idx3-ubyte.gz",
                        root / "mnist/t10k-labels-idx1-ubyte.gz")
        pixels = np.asarray(ds.images, dtype=np.float32).reshape(len(ds), -1) / 255.0
        table = FeatureTable(pixels, np.asarray(ds.targets, dtype=np.int64))
        train, test = stratified_split(table.labels, (0.6,), SPLIT_SEED)
        return table.take(train), table.take(test)

    return load


@register_preset("osr_mnist_cnn")
def osr_mnist_cnn(data_root: str | Path | None = None, seed: int = 0) -> OpenSetSpec:
    """Open-set MNIST 6/4, the 5 published splits; a small CNN trained per split on its known classes."""
    from unseen.benchmark.cnn_head import CNNHead

    root = _root(data_root, "osr_mnist_cnn", ["mnist/t10k-images-idx3-ubyte.gz"])
    cnn = CNNHead()
    return OpenSetSpec(
        name="osr_mnist_cnn", load=_mnist_pixels_loader(root), class_names=[str(d) for d in range(10)],
        splits=MNIST_SPLITS, hparams=OSR_HPARAMS,
        head=lambda run_seed: CNNHead(seed=run_seed),
        meta={"dataset": "MNIST test set (10,000), split per class 60/40 % (seed 0): train "
              "6,000, test 4,000 (as osr_mnist)", "splits": "Neal et al. via ARPL / Vaze et al.",
              "head": f"SmallCNN (2 conv 5x5 16/32 + ReLU + max-pool, FC {cnn.width} + ReLU, FC) "
                      f"trained per split on the known classes' fit rows: Adam lr {cnn.lr}, "
                      f"batch {cnn.batch_size}, {cnn.epochs} epochs, seed = run seed; features = "
                      f"its {cnn.width}-d penultimate layer, weight/bias = its last layer"},
    )


@register_preset("osr_eurosat")
def osr_eurosat(data_root: str | Path | None = None, seed: int = 0) -> OpenSetSpec:
    """Open-set EuroSAT RGB 6/4, five seeded splits; frozen EfficientNet-Lite0 + linear head."""
    root = _root(data_root, "osr_eurosat", [EUROSAT_DIR])
    names = sorted(p.name for p in (root / EUROSAT_DIR).iterdir() if p.is_dir())
    return OpenSetSpec(
        name="osr_eurosat", load=_eurosat_loader(root), class_names=names, splits=EUROSAT_SPLITS,
        hparams=OSR_HPARAMS,
        meta={**_META, "dataset": "EuroSAT RGB subset, 1,500 per class: train 1,000 / test 500 per "
              f"class (seed {EUROSAT_SPLIT_SEED})",
              "splits": f"seeded_splits(10, 6, 5, seed={EUROSAT_SPLIT_SEED}) = {EUROSAT_SPLITS}"},
    )


# ----------------------------------------------------------------------------- one class


@register_preset("oneclass_cifar10")
def oneclass_cifar10(data_root: str | Path | None = None, seed: int = 0) -> OneClassSpec:
    """One-class CIFAR-10 one-vs-rest (10 tasks); frozen EfficientNet-Lite0 features, kNN (DN2) etc."""
    root = _root(data_root, "oneclass_cifar10", ["cifar10/train", "cifar10/test"])
    return OneClassSpec(
        name="oneclass_cifar10", load=_cifar_loader(root), class_names=CIFAR10_CLASSES,
        hparams={"knn": {"k": DN2_K}}, anchors=ONECLASS_ANCHORS,
        meta={**_META, "dataset": "CIFAR-10 (JPEG q75)", "head": "none (features only)",
              "train": f"{CIFAR_TRAIN_PER_CLASS} training images of the normal class",
              "knn": f"k = {DN2_K} on L2-normalised features (DN2)"},
    )


@register_preset("oneclass_eurosat")
def oneclass_eurosat(data_root: str | Path | None = None, seed: int = 0) -> OneClassSpec:
    """One-class EuroSAT one-vs-rest (10 tasks); frozen EfficientNet-Lite0 features, kNN (DN2) etc."""
    root = _root(data_root, "oneclass_eurosat", [EUROSAT_DIR])
    names = sorted(p.name for p in (root / EUROSAT_DIR).iterdir() if p.is_dir())
    return OneClassSpec(
        name="oneclass_eurosat", load=_eurosat_loader(root), class_names=names,
        hparams={"knn": {"k": DN2_K}}, anchors=ONECLASS_ANCHORS[:1],
        meta={**_META, "head": "none (features only)", "dataset": "EuroSAT RGB subset: 1,000 "
              "train / 500 test per class", "knn": f"k = {DN2_K} on L2-normalised features (DN2)"},
    )


# ----------------------------------------------------------------------------- OOD


def _eurosat_ood_loader(root: Path) -> Callable[[Path | None, str, bool], dict[str, FeatureTable]]:
    def load(cache_dir: Path | None, device: str, progress: bool) -> dict[str, FeatureTable]:
        table = features_of(eurosat_images(root))(cache_dir, device, progress)
        fit, val, test = eurosat_rows(table.labels)
        tex = features_of(textures(root))(cache_dir, device, progress)
        # OOD validation: a seeded fifth of the textures per class, held out of the test set
        tex_val, tex_test = per_class_rows(tex.labels, [24, 96], SPLIT_SEED)
        return {
            "id/fit": table.take(fit), "id/val": table.take(val), "id/test": table.take(test),
            "ood_val": tex.take(tex_val), "far/texture": tex.take(tex_test),
            "far/cifar10": features_of(cifar10_test(root))(cache_dir, device, progress),
            "far/tin": features_of(tin_subset(root))(cache_dir, device, progress),
        }

    return load


@register_preset("eurosat")
def eurosat(data_root: str | Path | None = None, seed: int = 0) -> ProbeOODSpec:
    """OOD, EuroSAT RGB as ID (linear probe on frozen Lite0 features); far: textures, CIFAR-10, TIN."""
    root = _root(data_root, "eurosat", [EUROSAT_DIR, "texture", "cifar10/test", "tin/wnids.txt"])
    return ProbeOODSpec(
        name="eurosat", load=_eurosat_ood_loader(root),
        description=f"EfficientNet-Lite0 (ImageNet, frozen) at {RESOLUTION} px + linear head "
                    "trained on EuroSAT fit",
        meta={**_META, "id_dataset": f"EuroSAT RGB subset: per class fit {EUROSAT_TRAIN} / val "
              f"{EUROSAT_VAL} / test {EUROSAT_TEST} (seed {EUROSAT_SPLIT_SEED})",
              "ood_val": "textures, 24 per class (240), held out of the far texture set",
              "far": "textures 960, CIFAR-10 test 10,000 (JPEG q75), Tiny ImageNet val "
                     f"{TIN_PER_CLASS} per class (2,000)"},
    )


# ----------------------------------------------------------------------------- text


#: CLINC150 split → protocol split
CLINC_ROLES = {"train": "id/fit", "val": "id/val", "test": "id/test", "oos_val": "ood_val",
               "oos_test": "near/oos_test"}


def text_tables(encoder: Any, splits: dict[str, Any]) -> dict[str, FeatureTable]:
    """Embed each CLINC150 split with ``encoder`` (fitted on the training texts first if it has
    ``fit``); ``oos_train`` is not used (no detector here trains on outliers)."""
    if hasattr(encoder, "fit"):
        encoder.fit(splits["train"].texts)
    out = {}
    for split, role in CLINC_ROLES.items():
        emb = np.asarray(encoder(splits[split].texts), dtype=np.float32)
        if emb.shape[0] != len(splits[split].texts) or emb.ndim != 2:
            raise ValueError(f"the encoder must return one row per text, got shape {emb.shape} "
                             f"for {len(splits[split].texts)} texts of split {split!r}")
        out[role] = FeatureTable(emb, splits[split].labels)
    return out


def text_arrays(encoder: Any, splits: dict[str, Any]) -> dict[str, np.ndarray]:
    """:func:`text_tables` as flat arrays ``<role>/features`` and ``<role>/labels`` (what the
    embeddings cache stores)."""
    out = {}
    for role, table in text_tables(encoder, splits).items():
        out[f"{role}/features"], out[f"{role}/labels"] = table.features, table.labels
    return out


def _clinc_loader(path: Path, enc: Any, encoder_name: str | None,
                  state: dict[str, str]) -> Callable[[Path | None, str, bool], dict[str, FeatureTable]]:
    """Embedded CLINC150 splits, from the cache when the encoder's identity and the file's
    digest match a stored entry (``state["features_cache"]`` says hit, miss or off)."""
    from unseen.cache import file_digest
    from unseen.data.clinc import load_clinc150
    from unseen.extraction.text import cached_embeddings, embeddings_key, encoder_identity

    identity = encoder_identity(enc, encoder_name)

    def load(cache_dir: Path | None, _device: str, _progress: bool) -> dict[str, FeatureTable]:
        key = None if identity is None else embeddings_key(
            identity, file_digest(path), {"fit": "train", "roles": CLINC_ROLES})
        arrays, state["features_cache"] = cached_embeddings(
            cache_dir, key, lambda: text_arrays(enc, load_clinc150(path)[0]), "clinc150")
        return {role: FeatureTable(arrays[f"{role}/features"], arrays[f"{role}/labels"])
                for role in CLINC_ROLES.values()}

    return load


@register_preset("clinc150")
def clinc150(data_root: str | Path | None = None, seed: int = 0, encoder: Any = None,
             encoder_name: str | None = None) -> ProbeOODSpec:
    """Text OOD: CLINC150 150 intents vs out-of-scope; TF-IDF + SVD features, logistic-regression head.

    The embedded splits are cached (``$UNSEEN_CACHE_DIR/text``) under the encoder's identity
    (:func:`~unseen.extraction.text.encoder_identity`: ``encoder_name`` if given, else the
    encoder's ``identity()``) and the data file's SHA-256; an encoder with neither is not cached.
    """
    from unseen.data.clinc import CLINC_FILE
    from unseen.extraction.text import TfidfSvdEncoder

    root = _root(data_root, "clinc150", [CLINC_FILE])
    enc = TfidfSvdEncoder(seed=seed) if encoder is None else encoder
    state: dict[str, str] = {}
    name = getattr(enc, "describe", lambda: type(enc).__name__)()
    return ProbeOODSpec(
        name="clinc150", load=_clinc_loader(root / CLINC_FILE, enc, encoder_name, state),
        description=f"{name} + logistic-regression head over 150 intents",
        meta={"id_dataset": "CLINC150 full: fit = train (15,000), val = val (3,000), test = test "
              "(4,500)", "ood_val": "oos_val (100)", "near": "oos_test (1,000)",
              "encoder": name, "text_cache": state,
              "note": "a pretrained sentence encoder would do better; none can be "
              "loaded offline here. Pass encoder=<callable texts -> (N, D) array> in Python "
              "(and encoder_name=... to cache its embeddings)."},
    )
