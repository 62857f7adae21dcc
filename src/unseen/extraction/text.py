"""Text encoders: utterances to dense embeddings, for detectors that read features.

:class:`TfidfSvdEncoder` is the offline default: TF-IDF of word 1-2-grams and character 2-4-grams
(within word boundaries), concatenated, reduced by truncated SVD (latent semantic analysis,
Deerwester et al. 1990) and L2-normalised. A pretrained sentence encoder would give much better
features; none can be loaded offline here. Any callable ``texts -> (N, D) array`` works in its
place; if it has a ``fit(texts)`` method the benchmark calls it on the training texts first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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

    def describe(self) -> str:
        return (f"TF-IDF (word 1-2 + char_wb 2-4 grams, sublinear) -> TruncatedSVD("
                f"{self.n_components}, seed {self.seed}) -> L2")
