"""Extraction: a model runs once over a dataset and what it produced becomes a cached Representation.

``core``: the pass, the head check, the cache key and :class:`NetworkSource` (what detectors
that run the network again reach the model through). ``hooks``: the hook plumbing both share
(eval mode, forward hooks on named modules, penultimate-feature capture, block output shapes).
"""

from unseen.extraction.core import HeadMismatchError, NetworkSource, extract, find_head

__all__ = ["HeadMismatchError", "NetworkSource", "extract", "find_head"]
