"""What a guard accepts: turning images, tensors and raw arrays into Representations.

:class:`InputAdapter` holds the optional model, its preprocessing and the classifier head, and
turns whatever a caller sends (a Representation, a preprocessed batch, PIL images, uint8 arrays,
raw feature or logit rows) into a Representation checked against the detector. It also checks
that an attached model is the registered architecture it claims to be, so that it can be saved.
Prediction and calibration live in :mod:`unseen.guard.core`, files in :mod:`unseen.guard.persist`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from unseen.detectors.base import Detector
from unseen.representation import Representation


class GuardInputError(ValueError):
    """An input the guard cannot score (wrong type, shape, dimension, non-finite values)."""


def check_head(weight: Any, bias: Any) -> tuple[np.ndarray, np.ndarray]:
    """A classifier head as contiguous float32 ``(weight (C, D), bias (C,))``, finite."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ValueError(f"head must be weight (C, D) and bias (C,), got {w.shape} and {b.shape}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError("the classifier head contains NaN or infinite values")
    return w, b


class InputAdapter:
    """The front of a guard: model, preprocessing and head that make inputs scoreable.

    Args:
        model: optional classifier (``torch.nn.Module``); without it only Representations and
            raw feature/logit rows are accepted.
        model_name: the model's name in ``unseen.models`` (needed to save the model).
        transform: preprocessing applied to PIL images or uint8 arrays before the model.
        head: optional classifier head ``(weight, bias)`` that completes feature-only inputs.
        device: where the model runs.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        model_name: str | None = None,
        transform: Any = None,
        head: tuple[np.ndarray, np.ndarray] | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.transform = transform
        self.device = device
        self.head = None if head is None else check_head(*head)
        # Extraction hooks capture whatever passes the head, so concurrent forwards would mix.
        self._model_lock = threading.Lock()
        if model is not None:
            model.eval()

    # -- inputs -> Representation ---------------------------------------------------------------
    def represent(self, inputs: Any) -> Representation:
        """Turn inputs into a Representation (see :meth:`unseen.guard.Guard.represent`)."""
        if isinstance(inputs, Representation):
            return self.complete(inputs)
        if self.model is None:
            raise GuardInputError(
                f"this guard has no model, so it scores Representations only (got "
                f"{type(inputs).__name__}); build one with unseen.extract, or use from_arrays()"
            )
        return self.complete(self._run_model(self._to_batch(inputs)))

    def from_arrays(
        self, detector: Detector, features: np.ndarray | None = None,
        logits: np.ndarray | None = None,
    ) -> Representation:
        """A Representation from raw feature vectors or logits, checked against ``detector``."""
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
        expected = self.input_dim(detector, name)
        if arr.shape[1] != expected:
            raise GuardInputError(f"{name} must have {expected} columns, got {arr.shape[1]}")
        arr = arr.astype(np.float32)
        rep = Representation(features=arr) if name == "features" else Representation(logits=arr)
        return self.complete(rep)

    def input_dim(self, detector: Detector, kind: str) -> int:
        """Columns expected for ``kind`` ("features" or "logits") raw inputs; error if unusable."""
        if kind == "features":
            needs_only_logits = "features" not in detector.requires and self.head is None
            if detector.n_features_in_ is None or needs_only_logits:
                raise GuardInputError(
                    f"detector {detector.name} consumes logits and this guard has no classifier "
                    "head; send logits instead of features"
                )
            return int(detector.n_features_in_)
        if kind == "logits":
            if "features" in detector.requires or detector.n_classes_in_ is None:
                raise GuardInputError(f"detector {detector.name} needs features; send features")
            return int(detector.n_classes_in_)
        raise GuardInputError(f"unknown input kind {kind!r}")

    def complete(self, rep: Representation) -> Representation:
        """Feature-only inputs get logits from the stored head (or the input's own head)."""
        head = self.head
        if head is None and rep.weight is not None and rep.bias is not None:
            head = (rep.weight, rep.bias)
        if rep.logits is not None or rep.features is None or head is None:
            return rep
        weight, bias = head
        if rep.features.shape[1] != weight.shape[1]:
            raise GuardInputError(
                f"features have {rep.features.shape[1]} columns but the classifier head expects "
                f"{weight.shape[1]}"
            )
        logits = np.asarray(rep.features, np.float64) @ weight.T.astype(np.float64) + bias
        return Representation(
            features=rep.features,
            logits=logits.astype(np.float32),
            labels=rep.labels,
            weight=rep.weight,
            bias=rep.bias,
            layers=rep.layers,
            meta=rep.meta,
        )

    # -- raw inputs -> a preprocessed batch -> the model ---------------------------------------
    def _to_batch(self, inputs: Any) -> Any:
        import torch

        if isinstance(inputs, torch.Tensor):
            batch = inputs
        elif isinstance(inputs, np.ndarray) and inputs.dtype.kind == "f":
            batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        else:
            batch = self._stack_images(inputs)
        if batch.ndim < 2 or batch.shape[0] == 0 or not batch.is_floating_point():
            raise GuardInputError(
                f"a preprocessed batch must be a non-empty float tensor (N, ...), got shape "
                f"{tuple(batch.shape)} dtype {batch.dtype}"
            )
        if not torch.isfinite(batch).all():
            raise GuardInputError("the input batch contains NaN or infinite values")
        return batch

    def _stack_images(self, inputs: Any) -> Any:
        import torch
        from PIL import Image

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
        return torch.stack(tensors)

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
            raise GuardInputError(
                f"image {i}: expected a PIL image or uint8 array, got {type(img).__name__}"
            )
        try:
            return self.transform(img)
        except (ValueError, TypeError, OSError) as exc:
            raise GuardInputError(f"image {i}: preprocessing failed: {exc}") from None

    def _run_model(self, batch: Any) -> Representation:
        from unseen.extraction import extract

        head = None
        if self.model_name is not None:
            from unseen.models import info

            head = info(self.model_name).head
        with self._model_lock:
            try:
                return extract(
                    self.model, batch, head=head, batch_size=max(1, len(batch)),
                    device=self.device, progress=False, check_head=False,
                )
            except RuntimeError as exc:
                raise GuardInputError(f"the model rejected the input batch: {exc}") from None

    # -- the architecture -------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        """``{"name", "num_classes"}`` of the attached model, checked against ``unseen.models``.

        Raises ValueError when the model is not the registered architecture it is named as (a
        saved guard rebuilds it from the registry, so anything else would load differently).
        """
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
        reference = None
        if isinstance(num_classes, int):
            reference = models.create(name, num_classes=num_classes)
        ours = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        if reference is None or type(reference) is not type(self.model) or ours != {
            k: tuple(v.shape) for k, v in reference.state_dict().items()
        }:
            raise ValueError(
                f"cannot save the model: it does not match the registered architecture {name!r} "
                "(different class, head or state-dict layout)"
            )
        return {"name": name, "num_classes": num_classes}
