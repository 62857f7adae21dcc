"""Declared hyperparameter constraints, after scikit-learn's ``_parameter_constraints``.

A detector class maps each hyperparameter to a constraint (``constraints = {"k": Number(low=1,
integer=True)}``) and the base class checks them once, at ``fit`` and ``set_params``; the message
names the detector and the hyperparameter and says what is allowed. A wrong type (a string
where a number belongs) is a TypeError, a value out of range a ValueError. Constraints that
depend on the data (k at most the training size) stay with the detector's fit and score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Protocol


class Constraint(Protocol):
    def check(self, who: str, value: Any) -> None:
        """Raise TypeError or ValueError, naming ``who`` ("knn k"), unless ``value`` is allowed."""
        ...


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Number:
    """A finite real number (never a bool) in [low, high], either end open on request;
    ``integer`` asks for an integral type, ``none`` also allows None. ``text`` replaces the
    generated description of what is allowed."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    none: bool = False
    text: str = ""

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.integer:
            what = f"an integer >= {_fmt(self.low)}" if math.isinf(self.high) else (
                f"an integer in [{_fmt(self.low)}, {_fmt(self.high)}]"
            )
        elif math.isinf(self.high):
            what = f"a finite number {'>' if self.low_open else '>='} {_fmt(self.low)}"
        else:
            what = (f"in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}"
                    f"{')' if self.high_open else ']'}")
        return what + (" or None" if self.none else "")

    def check(self, who: str, value: Any) -> None:
        if value is None and self.none:
            return
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{who} must be {self.describe()}, got {value!r} "
                            f"({type(value).__name__})")
        if self.integer and not isinstance(value, Integral):
            raise ValueError(f"{who} must be {self.describe()}, got {value!r}")
        v = float(value)
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        if not (math.isfinite(v) and above and below):
            raise ValueError(f"{who} must be {self.describe()}, got {value!r}")


@dataclass(frozen=True)
class Even:
    """An even integer >= ``low``."""

    low: int

    def check(self, who: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < self.low or (
            value % 2
        ):
            raise ValueError(f"{who} must be an even integer >= {self.low}, got {value!r}")


@dataclass(frozen=True)
class OneOf:
    """One of ``options``; ``text`` replaces the generated list in the message."""

    options: tuple[Any, ...]
    text: str = ""

    def check(self, who: str, value: Any) -> None:
        # `type(value) is bool` keeps True from passing as 1 (and 1 as True).
        if not any(value == o and type(value) is type(o) for o in self.options):
            raise ValueError(f"{who} must be {self.text or f'one of {self.options}'}, got {value!r}")


@dataclass(frozen=True)
class Boolean:
    """True or False (NumPy booleans included)."""

    def check(self, who: str, value: Any) -> None:
        if not isinstance(value, bool) and type(value).__name__ != "bool_":
            raise ValueError(f"{who} must be True or False, got {value!r}")


@dataclass(frozen=True)
class ModuleNames:
    """A non-empty list (or tuple) of module names, or None when ``none``."""

    none: bool = True

    def check(self, who: str, value: Any) -> None:
        if value is None and self.none:
            return
        if isinstance(value, str) or not isinstance(value, Sequence) or not value or not all(
            isinstance(v, str) for v in value
        ):
            raise TypeError(f"{who} must be a non-empty list of module names"
                            f"{', or None' if self.none else ''}, got {value!r}")


@dataclass(frozen=True)
class PercentilePair:
    """A pair [p_min, p_max] with 0 < p_min <= p_max < 100."""

    def check(self, who: str, value: Any) -> None:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"{who} must be a pair [p_min, p_max], got {value!r}") from None
        if not 0 < lo <= hi < 100:
            raise ValueError(f"{who} needs 0 < p_min <= p_max < 100, got {lo, hi}")


def validate(name: str, constraints: Mapping[str, Constraint], params: Mapping[str, Any]) -> None:
    """Check every constrained hyperparameter present in ``params`` (``name``: the detector)."""
    for param, constraint in constraints.items():
        if param in params:
            constraint.check(f"{name} {param}", params[param])
