"""Where extraction time goes: ``unseen.extract`` against an OpenOOD-style loop and forward alone.

    python benchmarks/extract_speed.py --data-root /work/data              # 3,000 CIFAR-10 JPEGs
    python benchmarks/extract_speed.py --data-root /work/data --repeats 5 --onnx

All variants run in this one process on the same images (ResNet-56, CIFAR-10 JPEG test set, a
fixed random subset), interleaved round by round, and the table reports the median ms/image over
the rounds (min-max beside it). Interleaving matters on a shared machine: a slow minute then
hits every variant alike instead of one.

Variants:

* ``forward (pre-decoded)``: the images decoded and transformed once before timing; only
  ``model(x)`` in batches of 200 under ``torch.inference_mode``. The floor for this CPU.
* ``OpenOOD loop``: ``DataLoader(batch_size=200, num_workers=2)``, ``model(x)`` per batch and
  logits kept (``BasePostprocessor.inference`` in OpenOOD v1.5 does this).
* ``unseen.extract``: the public call with its defaults (plus ``progress=False``): features,
  logits and labels through the head check.
* ``extract, workers=0``: the same with decoding in the main process (the old default).
* ``forward channels-last``: the pre-decoded pass with model and input in ``channels_last``.
* ``unseen.extract, channels_last=True``: the public call with the opt-in flag (its own copy of
  the model, since the flag converts the model in place).
* ``onnxruntime``: the pre-decoded pass through the model exported to ONNX (``--onnx``; only when
  the ``onnxruntime`` package is importable).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Subset

import unseen
from unseen import models
from unseen.data import ImageFolder, cifar_test_transform

BATCH = 200


def load(data_root: Path, n: int, seed: int) -> tuple[torch.nn.Module, Subset]:
    model = models.pretrained("resnet56_cifar10", data_root)
    arch = models.info(models.preset("resnet56_cifar10").model)
    folder = ImageFolder(data_root / "cifar10" / "test", cifar_test_transform(arch.mean, arch.std))
    rows = np.sort(np.random.default_rng(seed).choice(len(folder), n, replace=False))
    return model, Subset(folder, [int(r) for r in rows])


def predecode(data: Subset) -> list[torch.Tensor]:
    loader = DataLoader(data, batch_size=BATCH, num_workers=2)
    return [x for x, _ in loader]


def forward(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in batches:
            model(x)


def openood_loop(model: torch.nn.Module, data: Subset) -> None:
    kept = []
    with torch.no_grad():
        for x, _ in DataLoader(data, batch_size=BATCH, num_workers=2, shuffle=False):
            kept.append(model(x).cpu())


def onnx_runner(model: torch.nn.Module, batches: list[torch.Tensor]) -> Callable[[], None] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = Path(tempfile.mkdtemp()) / "resnet56.onnx"
    torch.onnx.export(model, (batches[0],), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    arrays = [b.numpy() for b in batches]
    ref = model(batches[0]).detach().numpy()
    got = sess.run(None, {"x": arrays[0]})[0]
    print(f"onnxruntime {ort.__version__}: max |logit diff| vs torch {np.abs(got - ref).max():.2e}")

    def run() -> None:
        for a in arrays:
            sess.run(None, {"x": a})

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--onnx", action="store_true", help="also time onnxruntime if installed")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model, data = load(args.data_root, args.images, args.seed)
    batches = predecode(data)
    model_cl = models.pretrained("resnet56_cifar10", args.data_root).to(
        memory_format=torch.channels_last)
    batches_cl = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    model_extract_cl = models.pretrained("resnet56_cifar10", args.data_root)
    variants: dict[str, Callable[[], object]] = {
        "forward (pre-decoded)": lambda: forward(model, batches),
        "OpenOOD loop (DataLoader 200, 2 workers)": lambda: openood_loop(model, data),
        "unseen.extract (defaults)": lambda: unseen.extract(model, data, progress=False),
        "unseen.extract, num_workers=0": lambda: unseen.extract(
            model, data, progress=False, num_workers=0),
        "forward channels-last": lambda: forward(model_cl, batches_cl),
        "unseen.extract, channels_last=True": lambda: unseen.extract(
            model_extract_cl, data, progress=False, channels_last=True),
    }
    if args.onnx:
        ort_run = onnx_runner(model, batches)
        if ort_run is None:
            print("onnxruntime is not installed: skipped")
        else:
            variants["onnxruntime (pre-decoded)"] = ort_run
    forward(model, batches[:1])  # warm-up: first-call allocations and thread pools
    forward(model_cl, batches_cl[:1])
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t0) / len(data))
    base = statistics.median(times["OpenOOD loop (DataLoader 200, 2 workers)"])
    table = Table(title=f"extraction speed: ResNet-56, {len(data)} CIFAR-10 JPEG test images, "
                  f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved rounds")
    for col in ("variant", "ms/image (median)", "min-max", "× OpenOOD loop"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, ts in times.items():
        med = statistics.median(ts)
        table.add_row(name, f"{med:.2f}", f"{min(ts):.2f}-{max(ts):.2f}", f"{med / base:.3f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
