"""Named benchmarks: ``registry`` holds the names; each module below registers its presets and
loads when one of them is asked for.

``digits``: the embedded default. ``real``: cifar10 and mnist from the data bundle.
``tabular``: adbench (the bundle's 19 ADBench sets) and tabular (embedded, scikit-learn data).
``industrial``: mtd (Magnetic Tile Defects) and mvtec (the MVTec AD layout).
``openset``: osr_* (open-set), oneclass_* (novelty), eurosat (remote sensing), clinc150 (text).
"""

from unseen.benchmark.presets.registry import (
    MODULES,
    UnknownPresetError,
    describe_preset,
    get_preset,
    preset_names,
    preset_options,
    register_preset,
)

__all__ = [
    "MODULES",
    "UnknownPresetError",
    "describe_preset",
    "get_preset",
    "preset_names",
    "preset_options",
    "register_preset",
]
