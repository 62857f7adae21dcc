"""The ``digits`` benchmark's classifier: a small CNN trained deterministically on CPU.

Training takes a few seconds. The weights are cached as safetensors under
``<cache>/models/`` keyed by a hash of the training recipe (architecture version, optimiser
settings, seed, a hash of the training data and the torch version), so a second run loads them
instead of training again. The file is sealed with its digest (:func:`unseen.cache.write_entry`);
a damaged or unreadable one is deleted with a warning and the model trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from unseen._io import atomic_path
from unseen.cache import hash_arrays, read_entry, write_entry
from unseen.data.digits import ArrayImages
from unseen.models.digits_cnn import DigitsCNN

#: bump when DigitsCNN or the training loop changes, to orphan cached weights
ARCH_VERSION = 2
RECIPE: dict[str, Any] = {"epochs": 25, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4}


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[torch.Generator]:
    """Seed torch, force deterministic kernels and one thread; restore the settings after."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # float reductions split across threads may change with load
    torch.use_deterministic_algorithms(True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def recipe_key(data: ArrayImages, num_classes: int, seed: int) -> str:
    blob = {
        "arch": f"DigitsCNN/{ARCH_VERSION}",
        "num_classes": num_classes,
        "recipe": RECIPE,
        "seed": seed,
        "data": hash_arrays([data.images, data.labels]),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def train(data: ArrayImages, num_classes: int, seed: int) -> DigitsCNN:
    """Train a :class:`DigitsCNN` with Adam on ``data`` (cross-entropy, shuffled mini-batches)."""
    x, y = data.tensors()
    with deterministic_torch(seed) as gen:
        model = DigitsCNN(num_classes)
        opt = torch.optim.Adam(
            model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"]
        )
        model.train()
        for _ in range(RECIPE["epochs"]):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), RECIPE["batch_size"]):
                idx = order[i : i + RECIPE["batch_size"]]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    return model.eval()


def trained_model(
    data: ArrayImages, num_classes: int, seed: int, cache_dir: Path | None
) -> DigitsCNN:
    """The trained CNN: loaded from ``cache_dir`` when present, else trained (and cached)."""
    if cache_dir is None:
        return train(data, num_classes, seed)
    cache_dir = Path(cache_dir)
    path = cache_dir / "models" / f"digits-cnn-{recipe_key(data, num_classes, seed)}.safetensors"

    def read(p: Path) -> DigitsCNN:
        model = DigitsCNN(num_classes)
        model.load_state_dict(load_file(p), strict=True)  # RuntimeError on missing/odd tensors
        return model.eval()

    cached = read_entry(cache_dir, path, read, (SafetensorError, RuntimeError))
    if cached is not None:
        return cached
    model = train(data, num_classes, seed)

    def write(p: Path) -> None:
        with atomic_path(p) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))

    write_entry(cache_dir, path, write)
    return model
