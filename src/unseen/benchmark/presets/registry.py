"""Named benchmarks. ``register_preset(name)(factory)`` adds one; ``get_preset(name)`` builds it.

:data:`MODULES` names the module of every built-in preset, so listing presets imports nothing
and building one imports only its module (the tabular presets never load torch). A test checks
the table against what the modules register.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, Union

if TYPE_CHECKING:
    from unseen.benchmark.protocols import TaskSpec
    from unseen.benchmark.spec import BenchmarkSpec

#: what a preset builds: an OOD-detection BenchmarkSpec or another sub-task's TaskSpec
Spec = Union["BenchmarkSpec", "TaskSpec"]
F = TypeVar("F", bound=Callable[..., Spec])
_PRESETS: dict[str, Callable[..., Spec]] = {}

#: preset name -> module (under unseen.benchmark.presets) that registers it
MODULES: dict[str, str] = {
    "digits": "digits",
    **dict.fromkeys(("cifar10", "mnist"), "real"),
    **dict.fromkeys(("adbench", "tabular"), "tabular"),
    **dict.fromkeys(("mtd", "mvtec"), "industrial"),
    **dict.fromkeys(("osr_cifar10", "osr_mnist", "osr_mnist_cnn", "osr_eurosat", "oneclass_cifar10",
                     "oneclass_eurosat", "eurosat", "clinc150"), "openset"),
}


class UnknownPresetError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register_preset(name: str) -> Callable[[F], F]:
    """Decorator: make ``factory(**options) -> BenchmarkSpec | TaskSpec`` preset ``name``.

    The factory's docstring's first line is the description ``unseen list presets`` shows; its
    keyword arguments are the options (``seed``, ``data_root``, ``model``, ...).
    """

    def add(factory: F) -> F:
        if name in _PRESETS and _PRESETS[name] is not factory:
            raise ValueError(f"two presets are registered as {name!r}")
        _PRESETS[name] = factory
        return factory

    return add


def preset_names() -> list[str]:
    """Names of the built-in and registered presets, sorted; imports nothing."""
    return sorted(set(MODULES) | set(_PRESETS))


def _factory(name: str) -> Callable[..., Spec]:
    if name not in _PRESETS and name in MODULES:
        importlib.import_module(f"unseen.benchmark.presets.{MODULES[name]}")
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, preset_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownPresetError(
            f"unknown preset {name!r}{hint} (registered: {', '.join(preset_names())})"
        )
    return _PRESETS[name]


def describe_preset(name: str) -> str:
    """First line of the preset factory's docstring."""
    doc = inspect.getdoc(_factory(name)) or ""
    return doc.splitlines()[0] if doc else ""


def preset_options(name: str) -> list[str]:
    """The keyword options preset ``name`` accepts."""
    return list(inspect.signature(_factory(name)).parameters)


def get_preset(name: str, **options: Any) -> Spec:
    """Build preset ``name``. Options it does not take raise ``TypeError`` naming them."""
    factory = _factory(name)
    unknown = sorted(set(options) - set(preset_options(name)))
    if unknown:
        raise TypeError(
            f"preset {name!r} takes no option(s) {unknown}; it takes {preset_options(name)}"
        )
    return factory(**options)
