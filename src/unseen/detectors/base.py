"""The detector API: what a detector consumes, how it is fitted and how it scores.

Every detector follows scikit-learn's estimator rules (hyperparameters only in ``__init__``,
``fit`` returns ``self``, fitted state in trailing-underscore attributes) and one sign
convention: **higher score = more OOD**.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from unseen.representation import Representation

#: What a detector may consume. ``head`` is the final linear layer (weight, bias); ``labels``
#: are needed only by ``fit``; ``network`` means the model must run again on the inputs.
INPUTS = frozenset({"logits", "features", "head", "labels", "network"})


@dataclass(frozen=True)
class Paper:
    """Where a method comes from."""

    title: str
    authors: str
    venue: str
    year: int
    url: str = ""

    def cite(self) -> str:
        return f"{self.authors}, {self.title!r}, {self.venue} {self.year}"


class NotFittedError(RuntimeError):
    """``score`` was called before ``fit``."""


class NotApplicableError(ValueError):
    """The detector does not apply to this model or data: a declared requirement is not met.

    Raised by a detector's own input checks (an array the Representation lacks, features that
    must be non-negative, a head with two classes or more, the network). It is not a failure of
    the method: the benchmark lists such a detector as not applicable, with this message as the
    reason, and goes on. A ValueError, so callers that catch bad input keep working.
    """


class MissingInputError(NotApplicableError):
    """A Representation lacks an array the detector needs."""


_DESCRIBE = {
    "logits": "logits",
    "features": "features",
    "head": "the classifier head (weight and bias)",
    "labels": "labels",
    "layers": "named intermediate layers",
}


class Detector:
    """Base class of all detectors.

    Subclasses set the class attributes below and implement :meth:`_fit` (optional) and
    :meth:`_score`. ``_score`` receives at most ``chunk_size`` rows at a time, so it may build
    (chunk × train) matrices without unbounded memory; detectors whose score of one sample
    depends on other test samples set ``row_wise = False``.
    """

    name: ClassVar[str]
    paper: ClassVar[Paper]
    #: inputs ``score`` needs
    requires: ClassVar[frozenset[str]] = frozenset()
    #: extra inputs ``fit`` needs (e.g. labels for class-conditional statistics)
    fit_requires: ClassVar[frozenset[str]] = frozenset()
    #: hyperparameter grid searched by the benchmark protocol
    grid: ClassVar[dict[str, list[Any]]] = {}
    #: ``fit`` needs in-distribution validation data (e.g. to fit a temperature)
    needs_val: ClassVar[bool] = False
    #: hyperparameters that only change ``score``: the protocol refits only when others change
    score_params: ClassVar[frozenset[str]] = frozenset()
    row_wise: ClassVar[bool] = True
    chunk_size: ClassVar[int] = 16384

    # -- hyperparameters ------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        if cls.__init__ is object.__init__:
            return []
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Detector:
        unknown = set(params) - set(self._param_names())
        if unknown:
            raise ValueError(
                f"{self.name} has no hyperparameter(s) {sorted(unknown)}; "
                f"it has {self._param_names()}"
            )
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def clone(self, **params: Any) -> Detector:
        """A new, unfitted detector with the same hyperparameters, updated by ``params``."""
        return type(self)(**{**self.get_params(), **params})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        """The grid to search for this training set (detectors drop values it cannot take)."""
        return dict(cls.grid)

    # -- fit / score ----------------------------------------------------------------------
    def fit(self, train: Representation, val: Representation | None = None) -> Detector:
        """Fit on in-distribution training data (and ID validation data if ``needs_val``)."""
        self._check_inputs(train, self.requires | self.fit_requires, "fit")
        if self.needs_val:
            if val is None:
                raise MissingInputError(
                    f"{self.name}.fit needs in-distribution validation data: call fit(train, val)"
                )
            self._check_inputs(val, self.requires | self.fit_requires, "fit (val)")
        if len(train) == 0:
            raise ValueError(f"{self.name}.fit got an empty training representation")
        self.n_features_in_ = None if train.features is None else train.features.shape[1]
        self.n_classes_in_ = train.num_classes
        self._fit(train, val)
        self.fitted_ = True
        return self

    def score(self, rep: Representation) -> np.ndarray:
        """OOD scores, shape (N,), float64; higher = more OOD."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) before score()")
        self._check_inputs(rep, self.requires, "score")
        n = len(rep)
        if n == 0:
            raise ValueError(f"{self.name}.score got an empty representation")
        if "features" in self.requires and rep.features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{self.name} was fitted on {self.n_features_in_}-dimensional features but got "
                f"{rep.features.shape[1]}"
            )
        if "logits" in self.requires and rep.logits.shape[1] != self.n_classes_in_:
            raise ValueError(
                f"{self.name} was fitted on {self.n_classes_in_} classes but got logits with "
                f"{rep.logits.shape[1]}"
            )
        if self.row_wise and n > self.chunk_size:
            parts = [
                self._score(rep.subset(slice(i, i + self.chunk_size)))
                for i in range(0, n, self.chunk_size)
            ]
            scores = np.concatenate(parts)
        else:
            scores = self._score(rep)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (n,):
            raise RuntimeError(f"{self.name} returned scores of shape {scores.shape}, not ({n},)")
        if not np.isfinite(scores).all():
            raise FloatingPointError(
                f"{self.name} produced non-finite scores; check the inputs' scale "
                f"(hyperparameters {self.get_params()})"
            )
        return scores

    # -- persistence -----------------------------------------------------------------------
    def fitted_state(self) -> dict[str, Any]:
        """The fitted state: every public trailing-underscore attribute.

        By convention these hold only NumPy arrays, numbers, strings, booleans, None or lists of
        those, so a guard can persist them without pickle. Derived helpers (a faiss index, say)
        are rebuilt from that state and kept in leading-underscore attributes.
        """
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{self.name} is not fitted: nothing to save")
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    @classmethod
    def from_state(cls, params: dict[str, Any], state: dict[str, Any]) -> Detector:
        """Rebuild a fitted detector from :meth:`get_params` and :meth:`fitted_state`."""
        det = cls(**params)
        for k, v in state.items():
            if not k.endswith("_") or k.startswith("_"):
                raise ValueError(f"{cls.name}: {k!r} is not a fitted-state attribute")
            setattr(det, k, v)
        return det

    def _fit(self, train: Representation, val: Representation | None) -> None:
        """Default: nothing to fit (e.g. MSP)."""

    def _score(self, rep: Representation) -> np.ndarray:
        raise NotImplementedError

    def _check_inputs(self, rep: Representation, needs: frozenset[str], where: str) -> None:
        if not isinstance(rep, Representation):
            raise TypeError(f"{self.name}.{where} expects a Representation, got {type(rep).__name__}")
        missing = []
        for need in sorted(needs):
            if need == "head":
                present = rep.weight is not None
            elif need == "network":
                present = rep.source is not None
            else:
                present = getattr(rep, need) is not None
            if not present:
                missing.append(need)
        if missing:
            what = ", ".join(
                _DESCRIBE.get(m, "the model and its input data (rep.source, set by unseen.extract())")
                for m in missing
            )
            raise MissingInputError(
                f"{self.name}.{where} needs {what}, which this Representation lacks"
            )


def rep_memo(owner: Detector, attr: str, *state: Any) -> weakref.WeakKeyDictionary:
    """A memo of per-representation results, kept on ``owner`` under ``attr``.

    It starts empty again whenever any of ``state`` (fitted arrays, a hyperparameter) is not the
    very object it was made for, so a refit never reads results of the old fit. Entries go with
    their representation; they assume its arrays are not changed in place.
    """
    held = owner.__dict__.get(attr)
    if held is None or len(held[0]) != len(state) or any(
        a is not b for a, b in zip(held[0], state, strict=False)
    ):
        held = (state, weakref.WeakKeyDictionary())
        owner.__dict__[attr] = held
    return held[1]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """T · log Σ exp(z / T) over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=-1, keepdims=True)
    return temperature * (m[..., 0] + np.log(np.exp(z - m).sum(axis=-1)))
