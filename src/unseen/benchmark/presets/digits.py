"""The embedded ``digits`` preset: scikit-learn's 8×8 digits, offline, in seconds."""

from __future__ import annotations

from pathlib import Path

from unseen.benchmark.presets.registry import register_preset
from unseen.benchmark.spec import BenchmarkSpec, PreparedModel


@register_preset("digits")
def digits(seed: int = 0) -> BenchmarkSpec:
    """Embedded: scikit-learn 8x8 digits 0-5 vs digits 6-9 (near), image patches and noise (far)."""
    from unseen.benchmark.digits_model import trained_model
    from unseen.data.digits import ID_CLASSES, digits_splits
    from unseen.data.transforms import CenterCrop, Compose, Grayscale, Resize, ToTensor

    splits = digits_splits(seed)

    def model(cache_dir: Path | None) -> PreparedModel:
        net = trained_model(splits.fit, len(ID_CLASSES), seed, cache_dir)
        return PreparedModel(
            net,
            head="head",
            input_std=(1.0,),
            description="DigitsCNN (2 conv + 128-unit layer), trained on ID fit",
            model_name="digits_cnn",
            # an 8-bit 8×8 image maps to [0, 1] exactly as the digits' pixel / 16 does
            transform=Compose([Grayscale(), Resize(8), CenterCrop(8), ToTensor()]),
        )

    return BenchmarkSpec(
        name="digits",
        model=model,
        fit=splits.fit,
        val=splits.val,
        test=splits.test,
        ood_val=splits.ood_val,
        near=dict(splits.near),
        far=dict(splits.far),
        meta={"seed": seed},
    )
