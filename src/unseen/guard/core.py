"""The Guard: a fitted detector plus a conformal calibration, ready for production inputs.

This module holds calibration and prediction only: what inputs a guard accepts lives in
:mod:`unseen.guard.inputs`, its directory format in :mod:`unseen.guard.persist`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unseen.detectors.base import Detector, NotFittedError, softmax
from unseen.guard import conformal, persist
from unseen.guard.inputs import GuardInputError, InputAdapter, check_head
from unseen.guard.monitor import Monitor, check_settings
from unseen.representation import Representation

__all__ = ["Guard", "GuardInputError", "Predictions"]


class _InputAttr:
    """An attribute of the guard's :class:`InputAdapter`, read and set through the guard."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.inputs, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.inputs, self.name, value)


@dataclass(frozen=True)
class Predictions:
    """Per-input results of :meth:`Guard.predict` (arrays of length N).

    ``label``/``probability`` are the classifier's argmax class and its softmax probability;
    they are None when neither logits nor a classifier head are available.
    """

    score: np.ndarray
    p_value: np.ndarray
    is_ood: np.ndarray
    label: np.ndarray | None = None
    probability: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per input."""
        out = []
        for i in range(len(self)):
            out.append(
                {
                    "label": None if self.label is None else int(self.label[i]),
                    "probability": None if self.probability is None else float(self.probability[i]),
                    "score": float(self.score[i]),
                    "p_value": float(self.p_value[i]),
                    "is_ood": bool(self.is_ood[i]),
                }
            )
        return out


class Guard:
    """A fitted OOD detector with a conformal threshold, optionally with the model in front.

    Args:
        detector: a :class:`~unseen.detectors.Detector` (fitted, or fit it with :meth:`fit`).
        model: optional classifier (``torch.nn.Module``) turning raw inputs into a
            Representation; without it the guard scores Representations or feature arrays.
        model_name: the model's name in ``unseen.models`` (needed to save the model).
        transform: preprocessing from ``unseen.data.transforms`` applied to PIL images or uint8
            arrays before the model (needed to accept images).
        head: optional classifier head ``(weight, bias)`` to complete feature-only inputs with
            logits (taken from the training Representation by :meth:`fit` when it has one).
        device: where the model runs.

    Calibrate with :meth:`calibrate` on held-out in-distribution data; then :meth:`predict`
    gives per-input p-values and flags with P(ID input flagged) ≤ alpha, and :meth:`select`
    flags a batch with false discovery rate control.
    """

    model = _InputAttr()
    model_name = _InputAttr()
    transform = _InputAttr()
    head = _InputAttr()
    device = _InputAttr()

    def __init__(
        self,
        detector: Detector,
        model: Any = None,
        *,
        model_name: str | None = None,
        transform: Any = None,
        head: tuple[np.ndarray, np.ndarray] | None = None,
        device: str = "cpu",
    ) -> None:
        if not isinstance(detector, Detector):
            raise TypeError(f"detector must be an unseen Detector, got {type(detector).__name__}")
        self.detector = detector
        self.inputs = InputAdapter(
            model, model_name=model_name, transform=transform, head=head, device=device
        )
        self.alpha: float | None = None
        self.calibration_scores: np.ndarray | None = None
        self.threshold: float | None = None
        self.tpr: float | None = None
        self.monitor: Monitor | None = None
        self.monitor_settings: dict[str, Any] = {}

    # -- fitting and calibration -------------------------------------------------------------
    def fit(self, train: Any, val: Any = None) -> Guard:
        """Fit the detector on in-distribution training data (inputs or Representations)."""
        train_rep = self.represent(train)
        if train_rep.weight is not None and self.head is None:
            self.head = check_head(train_rep.weight, train_rep.bias)
        val_rep = None if val is None else self.represent(val)
        self.detector.fit(train_rep, val_rep)
        return self

    def calibrate(self, id_calibration_data: Any, alpha: float = 0.05) -> Guard:
        """Set the threshold at the ⌈(n + 1)(1 − α)⌉-th smallest calibration score.

        ``id_calibration_data`` must be in-distribution and unused for fitting: then, for test
        inputs exchangeable with it, P(ID input flagged) ≤ α in finite samples (Bates et al.
        2023). Raises :class:`~unseen.guard.conformal.CalibrationError` when n < 1/α − 1.
        """
        rep = self.represent(id_calibration_data)
        if rep.labels is not None and rep.labels.size and rep.labels.min() < 0:
            raise GuardInputError(
                "calibration data contains OOD labels (-1); calibrate on in-distribution data only"
            )
        scores = np.sort(self._score(rep))
        k = conformal.threshold_rank(scores.shape[0], alpha)
        self.alpha = float(alpha)
        self.calibration_scores = scores
        self.threshold = float(scores[k - 1])
        self.tpr = None  # a TPR belongs to a threshold: estimate it again after calibrating
        self.monitor = self._new_monitor()
        return self

    def set_monitor(
        self, *, window: int = 1000, level: float = 0.01, confidence: float = 0.95
    ) -> Monitor | None:
        """Replace :attr:`monitor` with one of these settings (kept across calibrations).

        The settings are checked first: when they are refused, the guard keeps its old ones.
        Returns the new monitor (None while the guard is not calibrated).
        """
        settings = {"window": window, "level": level, "confidence": confidence}
        check_settings(**settings)
        self.monitor_settings = settings
        self.monitor = self._new_monitor() if self.threshold is not None else None
        return self.monitor

    def estimate_tpr(self, ood_data: Any) -> float:
        """Flag rate on known OOD data; stored as ``tpr`` for the monitor's OOD-fraction estimate."""
        flags = self.predict(ood_data, record=False).is_ood
        self.tpr = float(flags.mean())
        if self.tpr <= self.alpha_hat:
            warnings.warn(
                f"the guard flags only {self.tpr:.3f} of the OOD data, no more than its false-alarm "
                f"rate {self.alpha_hat:.3f}: the monitor cannot estimate the OOD fraction and "
                "reports the flag rate only",
                UserWarning,
                stacklevel=2,
            )
        self.monitor = self._new_monitor()
        return self.tpr

    @property
    def alpha_hat(self) -> float:
        """Expected false-alarm rate of this threshold for continuous scores: (n − k + 1)/(n + 1)."""
        alpha, scores, _ = self._calibration()
        n = scores.shape[0]
        k = conformal.threshold_rank(n, alpha)
        return (n - k + 1) / (n + 1)

    def _new_monitor(self) -> Monitor:
        alpha, _, _ = self._calibration()
        tpr = self.tpr if self.tpr is not None and self.tpr > self.alpha_hat else None
        return Monitor(alpha, alpha_hat=self.alpha_hat, tpr=tpr, **self.monitor_settings)

    # -- prediction ---------------------------------------------------------------------------
    def scores(self, inputs: Any) -> np.ndarray:
        """Raw detector scores (higher = more OOD)."""
        return self._score(self.represent(inputs))

    def p_values(self, inputs: Any) -> np.ndarray:
        """Marginal conformal p-values (1 + #{i : s_i ≥ s(x)}) / (n + 1)."""
        _, calibration, _ = self._calibration()
        return conformal.p_values(calibration, self.scores(inputs))

    def predict(self, inputs: Any, *, record: bool = True) -> Predictions:
        """Class, probability, OOD score, conformal p-value and ``is_ood`` for each input.

        ``is_ood`` ⇔ score > threshold ⇔ p_value ≤ alpha (exactly, ties included). With
        ``record`` the flags feed :attr:`monitor`.
        """
        _, calibration, threshold = self._calibration()
        rep = self.represent(inputs)
        score = self._score(rep)
        p = conformal.p_values(calibration, score)
        is_ood = score > threshold
        label = prob = None
        if rep.logits is not None:
            probs = softmax(rep.logits)
            label = probs.argmax(axis=1)
            prob = probs[np.arange(probs.shape[0]), label]
        if record and self.monitor is not None:
            self.monitor.update(is_ood)
        return Predictions(score=score, p_value=p, is_ood=is_ood, label=label, probability=prob)

    def select(self, inputs: Any, fdr: float = 0.1, *, record: bool = True) -> np.ndarray:
        """Flag a batch with Benjamini–Hochberg on the conformal p-values (FDR ≤ ``fdr``)."""
        self._check_calibrated()
        return conformal.benjamini_hochberg(self.predict(inputs, record=record).p_value, fdr)

    # -- inputs (see unseen.guard.inputs) ------------------------------------------------------
    def represent(self, inputs: Any) -> Representation:
        """Turn inputs into a Representation the detector can score.

        Accepts a Representation; a preprocessed batch (torch tensor or float array) when a
        model is attached; a PIL image, a uint8 array (one (H, W[, C]) image or an (N, H, W, C)
        batch) or a list of those when a model and a transform are attached.
        """
        return self.inputs.represent(inputs)

    def from_arrays(
        self, features: np.ndarray | None = None, logits: np.ndarray | None = None
    ) -> Representation:
        """A Representation from raw feature vectors or logits, checked against the detector."""
        return self.inputs.from_arrays(self.detector, features, logits)

    def input_dim(self, kind: str) -> int:
        """Columns expected for ``kind`` ("features" or "logits") raw inputs; error if unusable."""
        return self.inputs.input_dim(self.detector, kind)

    def _score(self, rep: Representation) -> np.ndarray:
        if not getattr(self.detector, "fitted_", False):
            raise NotFittedError(
                f"the guard's detector ({self.detector.name}) is not fitted: call guard.fit(train) "
                "or pass a fitted detector"
            )
        return self.detector.score(rep)

    def _calibration(self) -> tuple[float, np.ndarray, float]:
        """(alpha, sorted calibration scores, threshold); NotFittedError before calibrating."""
        if self.threshold is None or self.alpha is None or self.calibration_scores is None:
            raise NotFittedError("the guard is not calibrated: call guard.calibrate(id_data, alpha)")
        return self.alpha, self.calibration_scores, self.threshold

    def _check_calibrated(self) -> None:
        self._calibration()

    # -- persistence (see unseen.guard.persist) ------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the guard to directory ``path`` (see :mod:`unseen.guard.persist`). No pickle.

        ``overwrite`` replaces only a directory that holds a guard; what is written is loaded
        back before it takes the place of ``path``, so a saved guard always loads.
        """
        self._check_calibrated()
        return persist.save_guard(self, Path(path), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Guard:
        """Read a directory written by :meth:`save`, verifying every file's sha256 first."""
        return persist.load_guard(Path(path), device=device, guard_class=cls)

    def restore_calibration(
        self, *, alpha: Any, calibration_scores: np.ndarray, threshold: Any, tpr: Any,
        monitor: dict[str, Any],
    ) -> Guard:
        """Set a saved calibration, with the checks :meth:`calibrate` makes (for loading)."""
        scores = np.asarray(calibration_scores)
        if scores.ndim != 1 or scores.dtype.kind != "f" or not np.isfinite(scores).all():
            raise ValueError("calibration scores must be a finite 1-D float array")
        if (np.diff(scores) < 0).any():
            raise ValueError("calibration scores must be sorted ascending")
        k = conformal.threshold_rank(scores.shape[0], alpha)  # checks alpha's type and range
        if isinstance(threshold, bool) or not isinstance(threshold, float) or (
            threshold != scores[k - 1]
        ):
            raise ValueError(f"the threshold disagrees with the calibration (got {threshold!r})")
        if tpr is not None and (
            isinstance(tpr, bool) or not isinstance(tpr, int | float) or not 0.0 <= tpr <= 1.0
        ):
            raise ValueError(f"tpr must be None or a number in [0, 1], got {tpr!r}")
        if not isinstance(monitor, dict) or set(monitor) - {"window", "level", "confidence"}:
            raise ValueError(f"monitor settings must be window, level, confidence; got {monitor!r}")
        check_settings(**monitor)
        self.alpha = float(alpha)
        self.calibration_scores = scores.astype(np.float64)
        self.threshold = float(threshold)
        self.tpr = None if tpr is None else float(tpr)
        self.monitor_settings = dict(monitor)
        self.monitor = self._new_monitor()
        return self

    def __repr__(self) -> str:
        model = "" if self.model is None else f", model={self.model_name or type(self.model).__name__}"
        cal = (
            "uncalibrated"
            if self.calibration_scores is None
            else f"alpha={self.alpha}, n_cal={self.calibration_scores.shape[0]}"
        )
        return f"Guard({self.detector!r}{model}, {cal})"

