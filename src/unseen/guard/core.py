"""The Guard: a fitted detector plus a conformal calibration, ready for production inputs."""

from __future__ import annotations

import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import unseen
from unseen import detectors
from unseen.detectors.base import Detector, NotFittedError, softmax
from unseen.guard import conformal, persist
from unseen.guard.monitor import Monitor
from unseen.representation import Representation


class GuardInputError(ValueError):
    """An input the guard cannot score (wrong type, shape, dimension, non-finite values)."""


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
        self.model = model
        self.model_name = model_name
        self.transform = transform
        self.device = device
        self.head = None if head is None else _check_head(*head)
        self.alpha: float | None = None
        self.calibration_scores: np.ndarray | None = None
        self.threshold: float | None = None
        self.tpr: float | None = None
        self.monitor: Monitor | None = None
        self.monitor_settings: dict[str, Any] = {}
        self._model_lock = threading.Lock()
        if model is not None:
            model.eval()

    # -- fitting and calibration -------------------------------------------------------------
    def fit(self, train: Any, val: Any = None) -> Guard:
        """Fit the detector on in-distribution training data (inputs or Representations)."""
        train_rep = self.represent(train)
        if train_rep.weight is not None and self.head is None:
            self.head = _check_head(train_rep.weight, train_rep.bias)
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
    ) -> Monitor:
        """Replace :attr:`monitor` with one of these settings (kept across calibrations)."""
        self.monitor_settings = {"window": window, "level": level, "confidence": confidence}
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
        self._check_calibrated()
        n = self.calibration_scores.shape[0]
        k = conformal.threshold_rank(n, self.alpha)
        return (n - k + 1) / (n + 1)

    def _new_monitor(self) -> Monitor:
        tpr = self.tpr if self.tpr is not None and self.tpr > self.alpha_hat else None
        return Monitor(self.alpha, alpha_hat=self.alpha_hat, tpr=tpr, **self.monitor_settings)

    # -- prediction ---------------------------------------------------------------------------
    def scores(self, inputs: Any) -> np.ndarray:
        """Raw detector scores (higher = more OOD)."""
        return self._score(self.represent(inputs))

    def p_values(self, inputs: Any) -> np.ndarray:
        """Marginal conformal p-values (1 + #{i : s_i ≥ s(x)}) / (n + 1)."""
        self._check_calibrated()
        return conformal.p_values(self.calibration_scores, self.scores(inputs))

    def predict(self, inputs: Any, *, record: bool = True) -> Predictions:
        """Class, probability, OOD score, conformal p-value and ``is_ood`` for each input.

        ``is_ood`` ⇔ score > threshold ⇔ p_value ≤ alpha (exactly, ties included). With
        ``record`` the flags feed :attr:`monitor`.
        """
        self._check_calibrated()
        rep = self.represent(inputs)
        score = self._score(rep)
        p = conformal.p_values(self.calibration_scores, score)
        is_ood = score > self.threshold
        label = prob = None
        if rep.logits is not None:
            probs = softmax(rep.logits)
            label = probs.argmax(axis=1)
            prob = probs[np.arange(probs.shape[0]), label]
        if record:
            self.monitor.update(is_ood)
        return Predictions(score=score, p_value=p, is_ood=is_ood, label=label, probability=prob)

    def select(self, inputs: Any, fdr: float = 0.1, *, record: bool = True) -> np.ndarray:
        """Flag a batch with Benjamini–Hochberg on the conformal p-values (FDR ≤ ``fdr``)."""
        self._check_calibrated()
        return conformal.benjamini_hochberg(self.predict(inputs, record=record).p_value, fdr)

    # -- inputs -> Representation ---------------------------------------------------------------
    def represent(self, inputs: Any) -> Representation:
        """Turn inputs into a Representation the detector can score.

        Accepts a Representation; a preprocessed batch (torch tensor or float array) when a
        model is attached; a PIL image, a uint8 array (one (H, W[, C]) image or an (N, H, W, C)
        batch) or a list of those when a model and a transform are attached.
        """
        if isinstance(inputs, Representation):
            return self._complete(inputs)
        if self.model is None:
            raise GuardInputError(
                f"this guard has no model, so it scores Representations only (got "
                f"{type(inputs).__name__}); build one with unseen.extract, or use from_arrays()"
            )
        return self._complete(self._run_model(self._to_batch(inputs)))

    def from_arrays(
        self, features: np.ndarray | None = None, logits: np.ndarray | None = None
    ) -> Representation:
        """A Representation from raw feature vectors or logits, checked against the detector."""
        if (features is None) == (logits is None):
            raise GuardInputError("give exactly one of features or logits")
        name, arr = ("features", features) if features is not None else ("logits", logits)
        arr = np.asarray(arr)
        if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[0] == 0:
            raise GuardInputError(
                f"{name} must be a non-empty 2-D numeric array (one row per input), got shape "
                f"{arr.shape} dtype {arr.dtype}"
            )
        if not np.isfinite(arr).all():
            raise GuardInputError(f"{name} contain NaN or infinite values")
        expected = self.input_dim(name)
        if arr.shape[1] != expected:
            raise GuardInputError(f"{name} must have {expected} columns, got {arr.shape[1]}")
        return self._complete(Representation(**{name: arr.astype(np.float32)}))

    def input_dim(self, kind: str) -> int:
        """Columns expected for ``kind`` ("features" or "logits") raw inputs; error if unusable."""
        det = self.detector
        if kind == "features":
            needs_only_logits = "features" not in det.requires and self.head is None
            if det.n_features_in_ is None or needs_only_logits:
                raise GuardInputError(
                    f"detector {det.name} consumes logits and this guard has no classifier head; "
                    "send logits instead of features"
                )
            return int(det.n_features_in_)
        if kind == "logits":
            if "features" in det.requires or det.n_classes_in_ is None:
                raise GuardInputError(f"detector {det.name} needs features; send features")
            return int(det.n_classes_in_)
        raise GuardInputError(f"unknown input kind {kind!r}")

    def _complete(self, rep: Representation) -> Representation:
        # Feature-only inputs get logits from the stored head, for logit detectors and labels.
        head = self.head if self.head is not None or rep.weight is None else (rep.weight, rep.bias)
        if rep.logits is not None or rep.features is None or head is None:
            return rep
        weight, bias = head
        if rep.features.shape[1] != weight.shape[1]:
            raise GuardInputError(
                f"features have {rep.features.shape[1]} columns but the classifier head expects "
                f"{weight.shape[1]}"
            )
        logits = (np.asarray(rep.features, np.float64) @ weight.T.astype(np.float64) + bias)
        return Representation(
            features=rep.features,
            logits=logits.astype(np.float32),
            labels=rep.labels,
            weight=rep.weight,
            bias=rep.bias,
            layers=rep.layers,
            meta=rep.meta,
        )

    def _to_batch(self, inputs: Any) -> Any:
        import torch
        from PIL import Image

        if isinstance(inputs, torch.Tensor):
            batch = inputs
        elif isinstance(inputs, np.ndarray) and inputs.dtype.kind == "f":
            batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        else:
            if isinstance(inputs, Image.Image) or (
                isinstance(inputs, np.ndarray) and inputs.ndim in (2, 3)
            ):
                inputs = [inputs]
            if not isinstance(inputs, list | tuple | np.ndarray) or len(inputs) == 0:
                raise GuardInputError(
                    "inputs must be a preprocessed tensor, a PIL image, a uint8 array or a "
                    f"non-empty list of images, got {type(inputs).__name__}"
                )
            tensors = [self._preprocess(img, i) for i, img in enumerate(inputs)]
            if len({tuple(t.shape) for t in tensors}) > 1:
                raise GuardInputError(
                    "the preprocessed images differ in shape; the transform must fix the size"
                )
            batch = torch.stack(tensors)
        if batch.ndim < 2 or batch.shape[0] == 0 or not batch.is_floating_point():
            raise GuardInputError(
                f"a preprocessed batch must be a non-empty float tensor (N, ...), got shape "
                f"{tuple(batch.shape)} dtype {batch.dtype}"
            )
        if not torch.isfinite(batch).all():
            raise GuardInputError("the input batch contains NaN or infinite values")
        return batch

    def _preprocess(self, img: Any, i: int) -> Any:
        from PIL import Image

        if self.transform is None:
            raise GuardInputError(
                "this guard has no preprocessing transform, so it takes preprocessed tensors only"
            )
        if isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or img.ndim not in (2, 3):
                raise GuardInputError(
                    f"image {i}: arrays must be uint8 (H, W) or (H, W, C), got shape {img.shape} "
                    f"dtype {img.dtype}"
                )
            img = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img)
        if not isinstance(img, Image.Image):
            raise GuardInputError(f"image {i}: expected a PIL image or uint8 array, got "
                                  f"{type(img).__name__}")
        try:
            return self.transform(img)
        except (ValueError, TypeError, OSError) as exc:
            raise GuardInputError(f"image {i}: preprocessing failed: {exc}") from None

    def _run_model(self, batch: Any) -> Representation:
        head = None
        if self.model_name is not None:
            from unseen.models import info

            head = info(self.model_name).head
        # Extraction hooks capture whatever passes the head, so concurrent forwards would mix.
        with self._model_lock:
            try:
                return unseen.extract(
                    self.model, batch, head=head, batch_size=max(1, len(batch)),
                    device=self.device, progress=False, check_head=False,
                )
            except RuntimeError as exc:
                raise GuardInputError(f"the model rejected the input batch: {exc}") from None

    def _score(self, rep: Representation) -> np.ndarray:
        if not getattr(self.detector, "fitted_", False):
            raise NotFittedError(
                f"the guard's detector ({self.detector.name}) is not fitted: call guard.fit(train) "
                "or pass a fitted detector"
            )
        return self.detector.score(rep)

    def _check_calibrated(self) -> None:
        if self.threshold is None:
            raise NotFittedError("the guard is not calibrated: call guard.calibrate(id_data, alpha)")

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the guard to directory ``path`` (see :mod:`unseen.guard.persist`). No pickle."""
        self._check_calibrated()
        state, arrays = persist.encode_state(self.detector.fitted_state(), "detector.")
        arrays["calibration.scores"] = np.ascontiguousarray(self.calibration_scores)
        if self.head is not None:
            arrays["head.weight"], arrays["head.bias"] = self.head
        write_model = None
        model_cfg = None
        if self.model is not None:
            model_cfg = self._model_config()
            write_model = self._write_model
        config = {
            "format": persist.FORMAT,
            "detector": {
                "name": self.detector.name,
                "params": self.detector.get_params(),
                "state": state,
            },
            "alpha": self.alpha,
            "threshold": self.threshold,
            "n_calibration": int(self.calibration_scores.shape[0]),
            "tpr": self.tpr,
            "monitor": self.monitor_settings,
            "model": model_cfg,
            "preprocessing": persist.transform_spec(self.transform),
            "versions": _versions(),
        }
        return persist.write_dir(Path(path), config, arrays, write_model, overwrite)

    def _model_config(self) -> dict[str, Any]:
        from unseen import models

        name = self.model_name
        if name is None or name not in models.names():
            raise ValueError(
                f"cannot save the model: it is not a registered unseen.models architecture "
                f"(model_name={name!r}; registered: {', '.join(models.names())}). Pass "
                "model_name=<registry name>, or save a guard without the model and extract "
                "representations outside it"
            )
        head = dict(self.model.named_modules()).get(models.info(name).head)
        num_classes = getattr(head, "out_features", None)
        reference = None if num_classes is None else models.create(name, num_classes=num_classes)
        ours = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        if reference is None or type(reference) is not type(self.model) or ours != {
            k: tuple(v.shape) for k, v in reference.state_dict().items()
        }:
            raise ValueError(
                f"cannot save the model: it does not match the registered architecture {name!r} "
                "(different class, head or state-dict layout)"
            )
        return {"name": name, "num_classes": int(num_classes)}

    def _write_model(self, path: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        save_file(state, str(path), metadata={"format": persist.FORMAT})

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Guard:
        """Read a directory written by :meth:`save`, verifying every file's sha256 first."""
        config, arrays, model_file = persist.read_dir(Path(path))
        try:
            guard = cls._from_config(config, arrays, model_file, device)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, persist.GuardFileError):
                raise
            raise persist.GuardFileError(f"{path}: invalid guard configuration: {exc}") from None
        k = conformal.threshold_rank(guard.calibration_scores.shape[0], guard.alpha)
        if guard.threshold != guard.calibration_scores[k - 1]:
            raise persist.GuardFileError(f"{path}: the threshold disagrees with the calibration")
        return guard

    @classmethod
    def _from_config(
        cls, config: dict[str, Any], arrays: dict[str, np.ndarray], model_file: Path | None,
        device: str,
    ) -> Guard:
        det_cfg = config["detector"]
        state = persist.decode_state(det_cfg["state"], arrays)
        detector = detectors.get(det_cfg["name"]).from_state(det_cfg["params"], state)
        head = (arrays["head.weight"], arrays["head.bias"]) if "head.weight" in arrays else None
        model = model_name = None
        if model_file is not None:
            from safetensors.torch import load_file

            from unseen import models

            model_name = config["model"]["name"]
            model = models.create(model_name, num_classes=int(config["model"]["num_classes"]))
            model.load_state_dict(load_file(str(model_file)), strict=True)
            model.to(device)
        guard = cls(
            detector,
            model,
            model_name=model_name,
            transform=persist.build_transform(config.get("preprocessing")),
            head=head,
            device=device,
        )
        guard.alpha = float(config["alpha"])
        guard.calibration_scores = np.asarray(arrays["calibration.scores"], dtype=np.float64)
        guard.threshold = float(config["threshold"])
        guard.tpr = config.get("tpr")
        guard.monitor_settings = dict(config.get("monitor") or {})
        guard.monitor = guard._new_monitor()
        return guard

    def __repr__(self) -> str:
        model = "" if self.model is None else f", model={self.model_name or type(self.model).__name__}"
        cal = (
            "uncalibrated"
            if self.threshold is None
            else f"alpha={self.alpha}, n_cal={self.calibration_scores.shape[0]}"
        )
        return f"Guard({self.detector!r}{model}, {cal})"


def _check_head(weight: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(weight, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"head must be weight (C, D) and bias (C,), got {w.shape} and {b.shape}")
    return w, b


def _versions() -> dict[str, str]:
    import torch

    return {
        "unseen": unseen.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
    }
