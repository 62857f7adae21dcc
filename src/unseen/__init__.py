"""unseen: generalized out-of-distribution detection — extract once, score many.

``Representation`` holds what a model produced for a dataset; ``extract`` makes one;
``detectors`` score them (higher = more OOD); ``metrics`` evaluates the scores.
"""

from __future__ import annotations

from typing import Any

from unseen import detectors
from unseen.representation import Representation

__version__ = "0.1.0"
__all__ = ["Guard", "Representation", "__version__", "detectors", "extract", "metrics"]


def __getattr__(name: str) -> Any:
    # torch-dependent and optional parts load on first use, so `import unseen` stays light.
    if name == "extract":
        from unseen.extraction import extract

        return extract
    if name == "metrics":
        import unseen.metrics as metrics

        return metrics
    if name == "Guard":
        from unseen.guard import Guard

        return Guard
    raise AttributeError(f"module 'unseen' has no attribute {name!r}")
