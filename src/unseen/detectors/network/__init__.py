"""Detectors that run the network again ("network in the loop"), one module per method.

They read the model and its input data from ``rep.source`` (a
:class:`unseen.representation.NetworkSource`, set by :func:`unseen.extract`, not persisted), so
a Representation loaded from disk cannot be scored by them; ``subset()`` keeps the source.
Whatever does not change is taken from the cache instead (ODIN with ε = 0 is computed from the
cached logits; Gram reads the predicted class from the cached logits).

The model runs in eval mode (its mode is restored afterwards); gradients are enabled only where
a method needs them. Rows are produced in the order of ``rep.source.batches()``, i.e. the
representation's rows, and every pass checks that it saw exactly ``len(rep)`` inputs. Shared
helpers: :mod:`._common`; the hook plumbing is the source's (:mod:`unseen.extraction.hooks`).
"""

from unseen.detectors.network.adascale import AdaScaleA, AdaScaleL
from unseen.detectors.network.gram import Gram, gram_features
from unseen.detectors.network.nac import NAC, balanced_rows, nac_edges
from unseen.detectors.network.odin import ODIN
from unseen.detectors.network.rankfeat import RankFeat, remove_rank1

__all__ = [
    "NAC",
    "ODIN",
    "AdaScaleA",
    "AdaScaleL",
    "Gram",
    "RankFeat",
    "balanced_rows",
    "gram_features",
    "nac_edges",
    "remove_rank1",
]
