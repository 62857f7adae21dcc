"""The house rule of docs/architecture.md: a module never imports a package on a higher floor.

Every ``import`` and ``from ... import`` in src/unseen (at the top of a module or inside a
function, ``TYPE_CHECKING`` blocks included) is parsed with ``ast``, and so is every
``unseen.<name>`` attribute reached through ``import unseen``; the lazy top-level package is the
only module exempt (it names everything, loading nothing up front).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unseen"

#: the floors of docs/architecture.md, by first name under ``unseen``
FLOORS = {
    "representation": 1, "_io": 1, "_lazy": 1, "metrics": 1,
    "extraction": 2, "cache": 2, "data": 2, "models": 2,
    "detectors": 3,
    "guard": 4,
    "benchmark": 5,
    "cli": 6, "__main__": 6,
}
#: names ``unseen/__init__`` exposes lazily, and the package each comes from
TOP_LEVEL = {"detectors": "detectors", "metrics": "metrics", "extract": "extraction",
             "Guard": "guard", "Representation": "representation"}

#: (importing module, imported module) pairs that still run upward, each with its reason.
#: A pair that no longer occurs fails the test too, so this list stays true.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 and parts[0] == "unseen" else None


def imported(tree: ast.AST) -> set[str]:
    """Every unseen module a parsed file imports or reaches as ``unseen.<name>``."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "unseen":
                out.update(f"unseen.{TOP_LEVEL.get(a.name, a.name)}" for a in node.names)
            else:
                out.add(node.module)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "unseen" and node.attr in TOP_LEVEL):
            out.add(f"unseen.{TOP_LEVEL[node.attr]}")
    return out


def upward_imports() -> dict[tuple[str, str], tuple[int, int]]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        me = module_name(path)
        mine = floor(me)
        if mine is None:  # unseen/__init__.py
            continue
        for other in imported(ast.parse(path.read_text(encoding="utf-8"))):
            theirs = floor(other)
            if theirs is not None and theirs > mine:
                found[me, other] = (mine, theirs)
    return found


def test_every_package_has_a_floor() -> None:
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"}
    assert tops == set(FLOORS), "give the new package a floor here and in docs/architecture.md"


def test_the_scanner_sees_upward_imports() -> None:
    # the parser itself, on a snippet with each kind of import
    tree = ast.parse(
        "import unseen\nfrom unseen import detectors\nfrom unseen.guard.core import Guard\n"
        "def f():\n    import unseen.benchmark\n    return unseen.extract\n"
    )
    assert imported(tree) == {"unseen", "unseen.detectors", "unseen.guard.core",
                              "unseen.benchmark", "unseen.extraction"}
    assert floor("unseen.guard.core") == 4 and floor("unseen") is None and floor("numpy") is None


def test_no_module_imports_a_higher_floor() -> None:
    found = upward_imports()
    unexpected = {pair: floors for pair, floors in found.items() if pair not in ALLOWED}
    assert not unexpected, (
        "lower floors must not import higher ones (docs/architecture.md): "
        + "; ".join(f"{a} (floor {fa}) imports {b} (floor {fb})"
                    for (a, b), (fa, fb) in sorted(unexpected.items()))
    )
    stale = sorted(set(ALLOWED) - set(found))
    if stale:
        pytest.fail(f"these allowed exceptions no longer occur; remove them from ALLOWED: {stale}")
