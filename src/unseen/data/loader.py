"""A DataLoader preset for feature extraction: fixed order, worker processes for decoding."""

from __future__ import annotations

import os

from torch.utils.data import DataLoader, Dataset


def default_num_workers() -> int:
    """Decoding workers: one per CPU core beyond the main process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def make_loader(
    dataset: Dataset, batch_size: int = 256, num_workers: int | None = None
) -> DataLoader:
    """DataLoader over ``dataset`` in index order (``shuffle=False``, last batch kept).

    The dataset must yield tensors, so a reader needs a ``transform`` ending in ``ToTensor``
    (e.g. :func:`unseen.data.transforms.cifar_test_transform`). ``num_workers`` defaults to
    :func:`default_num_workers`; batches come back in index order whatever the worker count.
    """
    if getattr(dataset, "transform", object()) is None:
        raise ValueError(
            f"{dataset!r} has no transform and yields PIL images, which cannot be batched; "
            "give it a transform ending in ToTensor(), e.g. cifar_test_transform(mean, std)"
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    workers = default_num_workers() if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=workers,
        persistent_workers=False,
    )
