"""Lazy package attributes (PEP 562): a package names what it offers and from which module, and
a name's module is imported on first access, so importing the package itself stays cheap (no
torch for a features-only or tabular user)."""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> (module, attribute in it; None for the module itself)
Table = dict[str, tuple[str, str | None]]


def table(module: str, *names: str) -> Table:
    """``{name: (module, name)}`` for names defined in ``module``."""
    return {n: (module, n) for n in names}


def load(package: str, lazy: Table, name: str) -> Any:
    """The body of a package's ``__getattr__``: import ``name``'s module and return it."""
    if name not in lazy:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module_name, attribute = lazy[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
