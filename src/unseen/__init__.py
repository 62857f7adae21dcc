"""unseen: generalized out-of-distribution detection — extract once, score many.

``Representation`` holds what a model produced for a dataset; ``extract`` makes one;
``detectors`` score them (higher = more OOD); ``metrics`` evaluates the scores.

Importing unseen loads numpy and safetensors only: ``Representation`` and ``metrics`` need no
torch. Every other public name (``detectors``, ``extract``, ``Guard``) loads on first use, so a
features-only or tabular user never pays for torch or faiss (tests/test_imports.py checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unseen import _lazy
from unseen.representation import Representation

if TYPE_CHECKING:
    from unseen import detectors, metrics
    from unseen.extraction import extract
    from unseen.guard import Guard

__version__ = "0.1.0"
__all__ = ["Guard", "Representation", "__version__", "detectors", "extract", "metrics"]

#: public name -> (module, attribute in it; None for the module itself)
_LAZY: _lazy.Table = {
    "detectors": ("unseen.detectors", None),
    "metrics": ("unseen.metrics", None),
    "extract": ("unseen.extraction", "extract"),
    "Guard": ("unseen.guard", "Guard"),
}


def __getattr__(name: str) -> Any:
    return _lazy.load("unseen", _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
