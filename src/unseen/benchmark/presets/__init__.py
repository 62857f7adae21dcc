"""Named benchmarks: ``registry`` holds the names; each module below registers its presets.

``digits``: the embedded default. ``real``: cifar10 and mnist from the data bundle.
"""

from unseen.benchmark.presets import digits, openset, real  # noqa: F401  (registers the presets)
from unseen.benchmark.presets.registry import (
    UnknownPresetError,
    describe_preset,
    get_preset,
    preset_names,
    preset_options,
    register_preset,
)

__all__ = [
    "UnknownPresetError",
    "describe_preset",
    "get_preset",
    "preset_names",
    "preset_options",
    "register_preset",
]
