"""Text encoders: utterances to dense embeddings, for detectors that read features.

:class:`TfidfSvdEncoder` is the offline default: TF-IDF of word 1-2-grams and character 2-4-grams
(within word boundaries), concatenated, reduced by truncated SVD (latent semantic analysis,
Deerwester et al. 1990) and L2-normalised. A pretrained sentence encoder would give much better
features; none can be loaded offline here. Any callable ``texts -> (N, D) array`` works in its
place; if it has a ``fit(texts)`` method the benchmark calls it on the training texts first.

:func:`cached_embeddings` stores a dataset's embedded splits in the representation cache
(``<cache>/text/<key>.npz``, sealed with its SHA-256 like every cache entry), keyed by
:func:`encoder_identity` and the data file's digest, so a second run only trains heads.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unseen import cache
from unseen._io import atomic_path

#: bump when the stored embeddings change meaning, to orphan every old entry
TEXT_CACHE_VERSION = 1


class TfidfSvdEncoder:
    """Word + character TF-IDF (sublinear tf) → truncated SVD → L2 normalisation.

    Defaults: ``n_components`` 300, word 1-2-grams, ``char_wb`` 2-4-grams, ``min_df`` 1, SVD with
    scikit-learn's randomized solver (``random_state=seed``), so the embedding is deterministic.
    """

    def __init__(self, n_components: int = 300, seed: int = 0, min_df: int = 1) -> None:
        self.n_components = n_components
        self.seed = seed
        self.min_df = min_df

    def fit(self, texts: Sequence[str]) -> TfidfSvdEncoder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(texts) <= self.n_components:
            raise ValueError(f"TfidfSvdEncoder needs more than n_components={self.n_components} "
                             f"training texts, got {len(texts)}")
        self.word_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df)
        self.char_ = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                                     min_df=self.min_df)
        sparse = self._stack(texts, fit=True)
        self.svd_ = TruncatedSVD(self.n_components, random_state=self.seed).fit(sparse)
        return self

    def _stack(self, texts: Sequence[str], fit: bool = False) -> Any:
        from scipy.sparse import hstack

        if fit:
            return hstack([self.word_.fit_transform(texts), self.char_.fit_transform(texts)]).tocsr()
        return hstack([self.word_.transform(texts), self.char_.transform(texts)]).tocsr()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "svd_"):
            raise RuntimeError("TfidfSvdEncoder is not fitted: call fit(training texts) first")
        z = self.svd_.transform(self._stack(list(texts)))
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def identity(self) -> str:
        """Everything that determines the embedding: class, every hyperparameter, scikit-learn."""
        import sklearn

        return json.dumps({"class": f"{type(self).__module__}.{type(self).__qualname__}",
                           "n_components": self.n_components, "seed": self.seed,
                           "min_df": self.min_df, "sklearn": sklearn.__version__}, sort_keys=True)

    def describe(self) -> str:
        return (f"TF-IDF (word 1-2 + char_wb 2-4 grams, sublinear) -> TruncatedSVD("
                f"{self.n_components}, seed {self.seed}) -> L2")


def encoder_identity(encoder: Any, name: str | None = None) -> str | None:
    """A stable cache identity of ``encoder``: ``name`` if given (the user vouches that the name
    changes whenever the embedding does), else the encoder's own ``identity()``; None when it has
    neither (a bare callable: its code and state cannot be fingerprinted, so it is not cached)."""
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"encoder_name must be a non-empty string, got {name!r}")
        return f"user:{name}"
    own = getattr(encoder, "identity", None)
    return str(own()) if callable(own) else None


def embeddings_key(identity: str, data_digest: str, layout: Mapping[str, Any]) -> str:
    """SHA-256 of the encoder's identity, the data file's digest and how splits map to tables."""
    blob = json.dumps({"version": TEXT_CACHE_VERSION, "encoder": identity, "data": data_digest,
                       "layout": layout}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: np.array(npz[k]) for k in npz.files}


def cached_embeddings(
    cache_dir: Path | None,
    key: str | None,
    compute: Callable[[], dict[str, np.ndarray]],
    what: str = "text embeddings",
) -> tuple[dict[str, np.ndarray], str]:
    """``compute()``'s arrays, read from ``<cache_dir>/text/<key>.npz`` when an intact entry
    exists, else computed and stored there. Returns the arrays and ``"hit"``, ``"miss"`` or
    ``"off"`` (no cache directory; or ``key`` None, an encoder without a stable identity, which a
    warning says)."""
    if cache_dir is None:
        return compute(), "off"
    if key is None:
        warnings.warn(f"{what}: the encoder has no stable identity (no identity() method and no "
                      "encoder_name), so its embeddings are not cached; pass encoder_name=... to "
                      "cache them", stacklevel=2)
        return compute(), "off"
    path = Path(cache_dir) / "text" / f"{key}.npz"
    stored = cache.read_entry(Path(cache_dir), path, _read_npz)
    if stored is not None:
        return stored, "hit"
    arrays = compute()

    def write(target: Path) -> None:
        with atomic_path(target) as tmp, tmp.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    cache.write_entry(Path(cache_dir), path, write)
    return arrays, "miss"
