"""The detector API: what a detector consumes, how it is fitted and how it scores.

Every detector follows scikit-learn's estimator rules (hyperparameters only in ``__init__``,
``fit`` returns ``self``, fitted state in trailing-underscore attributes) and one sign
convention: **higher score = more OOD**. Hyperparameters are validated against the class's
declared ``constraints`` (:mod:`unseen.detectors.params`) once, at ``fit`` and ``set_params``.

One rule for labels, for every detector: training and validation data are in-distribution, so
a fit refuses data labelled OOD (−1) and labels beyond the classifier head's classes, whether
or not the detector reads the labels.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from unseen.detectors.params import Constraint, validate
from unseen.representation import Representation

#: What a detector may consume. ``head`` is the final linear layer (weight, bias); ``labels``
#: are needed only by ``fit``; ``network`` means the model must run again on the inputs.
INPUTS = frozenset({"logits", "features", "head", "labels", "network"})

#: The arrays of a Representation that :meth:`Detector._array` hands out.
ArrayName = Literal["features", "logits", "labels", "weight", "bias"]


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
    depends on other test samples set ``row_wise = False``. Detectors whose grid points share
    work override :meth:`_score_grid`; ``_score`` itself never reads the grid.
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
    #: hyperparameter -> constraint, checked at ``fit`` and ``set_params``
    constraints: ClassVar[Mapping[str, Constraint]] = {}
    #: the fewest training samples ``fit`` accepts
    min_train_size: ClassVar[int] = 1
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
        """Set hyperparameters; invalid values are refused and leave every value as it was."""
        unknown = set(params) - set(self._param_names())
        if unknown:
            raise ValueError(
                f"{self.name} has no hyperparameter(s) {sorted(unknown)}; "
                f"it has {self._param_names()}"
            )
        self._validate_params({**self.get_params(), **params})
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _validate_params(self, params: Mapping[str, Any]) -> None:
        """Check ``params`` against :attr:`constraints`, then :meth:`_check_joint`."""
        validate(self.name, self.constraints, params)
        self._check_joint(params)

    def _check_joint(self, params: Mapping[str, Any]) -> None:
        """Constraints between hyperparameters (e.g. low <= high); the default has none."""

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

    @classmethod
    def shared_fit(cls, points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Of grid points that differ only in ``score_params``, the one to fit with so that the
        fit serves them all; the default is the first (a fit that score-only hyperparameters do
        not touch serves any of them)."""
        return dict(points[0])

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
        if len(train) < self.min_train_size:
            raise ValueError(
                f"{self.name}.fit needs at least {self.min_train_size} training samples, got "
                f"{len(train)}"
            )
        self._validate_params(self.get_params())
        self._check_labels(train, "training")
        if val is not None and self.needs_val:
            self._check_labels(val, "validation")
        self.n_features_in_ = None if train.features is None else train.features.shape[1]
        self.n_classes_in_ = train.num_classes
        self._fit(train, val)
        self.fitted_ = True
        return self

    def _check_labels(self, rep: Representation, what: str) -> None:
        """The one label rule: fit data are in-distribution class indices of the head."""
        labels = rep.labels
        if labels is None or labels.size == 0:
            return
        ood = int((labels < 0).sum())
        if ood:
            raise ValueError(
                f"{self.name}: the {what} data contains {ood} OOD labels (-1); fit on "
                "in-distribution data only (e.g. rep.subset(rep.labels >= 0))"
            )
        n_classes = rep.num_classes
        if n_classes is not None and labels.max() >= n_classes:
            raise ValueError(
                f"{self.name}: the {what} labels reach {labels.max()} but the classifier has "
                f"only {n_classes} classes; labels must be class indices 0..{n_classes - 1}"
            )

    def _keep_head(self, train: Representation) -> None:
        """Store the training representation's head as ``weight_`` (C, D) and ``bias_`` (C,),
        float64, so that scoring needs only features."""
        self.weight_ = np.asarray(train.weight, dtype=np.float64)
        self.bias_ = np.asarray(train.bias, dtype=np.float64)

    def _check_scorable(self, rep: Representation) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) before score()")
        self._check_inputs(rep, self.requires, "score")
        n = len(rep)
        if n == 0:
            raise ValueError(f"{self.name}.score got an empty representation")
        if "features" in self.requires:
            d = self._array(rep, "features").shape[1]
            if d != self.n_features_in_:
                raise ValueError(
                    f"{self.name} was fitted on {self.n_features_in_}-dimensional features but "
                    f"got {d}"
                )
        if "logits" in self.requires:
            c = self._array(rep, "logits").shape[1]
            if c != self.n_classes_in_:
                raise ValueError(
                    f"{self.name} was fitted on {self.n_classes_in_} classes but got logits "
                    f"with {c}"
                )

    def _chunks(self, rep: Representation) -> list[Representation]:
        """``rep`` itself, or row chunks of at most ``chunk_size`` rows for a row-wise detector."""
        n, step = len(rep), self.chunk_size
        if not self.row_wise or n <= step:
            return [rep]
        return [rep.subset(slice(i, i + step)) for i in range(0, n, step)]

    def score(self, rep: Representation) -> np.ndarray:
        """OOD scores, shape (N,), float64; higher = more OOD."""
        self._check_scorable(rep)
        chunks = self._chunks(rep)
        if len(chunks) == 1:
            return self._checked_scores(self._score(rep), len(rep))
        return self._checked_scores(np.concatenate([self._score(c) for c in chunks]), len(rep))

    def score_grid(
        self, rep: Representation, points: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray | ValueError]:
        """The scores of ``rep`` at each point, a mapping of score-only hyperparameters: entry i
        equals ``set_params(**points[i]).score(rep)``, or the ValueError that refuses that point
        (an invalid value, or one this fitted detector cannot score). The detector's own
        hyperparameters are unchanged afterwards. A grid search calls this once per split, so
        that detectors whose grid points share work (one neighbour search for every k, say) do
        it once.
        """
        self._check_scorable(rep)
        refusals = [self._refusal(p) for p in points]
        valid = [i for i, refused in enumerate(refusals) if refused is None]
        held = self.get_params()
        # every point spelled out in full, so no point inherits another's values
        full = [{**{k: held[k] for k in self.score_params}, **points[i]} for i in valid]
        chunks = []
        try:
            for chunk in self._chunks(rep):
                chunks.append(self._score_grid(chunk, full))
                vars(self).update(held)
        finally:
            vars(self).update(held)
        scored: dict[int, np.ndarray | ValueError] = {}
        for j, i in enumerate(valid):
            parts = [chunk[j] for chunk in chunks]
            errors = [p for p in parts if isinstance(p, ValueError)]
            scores = [p for p in parts if not isinstance(p, ValueError)]
            scored[i] = errors[0] if errors else self._checked_scores(
                np.concatenate(scores), len(rep), points[i]
            )
        return [scored[i] if refused is None else refused for i, refused in enumerate(refusals)]

    def _refusal(self, point: Mapping[str, Any]) -> ValueError | None:
        """Why the grid point ``point`` is refused (its constraint error), or None."""
        not_score = set(point) - self.score_params
        if not_score:
            raise ValueError(f"{self.name}.score_grid: {sorted(not_score)} are not score-only "
                             f"hyperparameters (those are {sorted(self.score_params)})")
        try:
            self._validate_params({**self.get_params(), **point})
        except ValueError as exc:
            return exc
        return None

    def _score_grid(
        self, rep: Representation, points: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray | ValueError]:
        """One chunk's scores at each point (validated, every score-only hyperparameter given);
        the default scores point by point. An override may change the score-only
        hyperparameters: :meth:`score_grid` restores them."""
        out: list[np.ndarray | ValueError] = []
        for point in points:
            vars(self).update(point)
            try:
                out.append(np.asarray(self._score(rep), dtype=np.float64))
            except ValueError as exc:
                out.append(exc)
        return out

    def _checked_scores(
        self, scores: np.ndarray, n: int, point: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (n,):
            raise RuntimeError(f"{self.name} returned scores of shape {scores.shape}, not ({n},)")
        if not np.isfinite(scores).all():
            params = {**self.get_params(), **(point or {})}
            raise FloatingPointError(
                f"{self.name} produced non-finite scores; check the inputs' scale "
                f"(hyperparameters {params})"
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
        det._validate_params(det.get_params())
        for k, v in state.items():
            if not k.endswith("_") or k.startswith("_"):
                raise ValueError(f"{cls.name}: {k!r} is not a fitted-state attribute")
            setattr(det, k, v)
        return det

    def _fit(self, train: Representation, val: Representation | None) -> None:
        """Default: nothing to fit (e.g. MSP)."""

    def _score(self, rep: Representation) -> np.ndarray:
        raise NotImplementedError

    def _array(self, rep: Representation | None, name: ArrayName) -> np.ndarray:
        """``rep``'s array ``name``, which must be present.

        ``fit`` and ``score`` check the inputs a detector declares (``requires``,
        ``fit_requires``, ``needs_val``) before ``_fit`` and ``_score`` run, so for those this
        only returns the array, typed as present; for an undeclared one that is absent (or no
        ``rep`` at all) it raises the MissingInputError those checks would have raised.
        """
        if rep is None:
            raise MissingInputError(
                f"{self.name}.fit needs in-distribution validation data: call fit(train, val)"
            )
        arr: np.ndarray | None = getattr(rep, name)
        if arr is None:
            raise MissingInputError(
                f"{self.name} needs {_DESCRIBE.get(name, name)}, which this Representation lacks"
            )
        return arr

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
