"""Extraction: a model runs once over a dataset and what it produced becomes a cached Representation.

``core``: the pass, the head check and the cache key.
"""

from unseen.extraction.core import HeadMismatchError, NetworkSource, extract, find_head

__all__ = ["HeadMismatchError", "NetworkSource", "extract", "find_head"]
