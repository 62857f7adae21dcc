"""Compare two benchmark runs record by record: are their results.json files the same?

    python benchmarks/compare_results.py runs/before/results.json runs/after/results.json [--tol 0]

Records are matched on (detector, group, dataset). Prints, per metric, the largest absolute
difference over the matched records (and where it occurs), then every record that differs by
more than ``--tol`` in a metric or in its hyperparameters, every record present in only one file
and any change in the detectors listed as not applicable. Exits 0 when the files agree, 1 when
they do not. A run folder may be given instead of its results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id", "fpr95_ood")
Key = tuple[str, str, str]


def load(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise SystemExit(f"{path}: not a results.json (no 'records' list)")
    return data


def by_key(data: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    return {(r["detector"], r["group"], r["dataset"]): r for r in data["records"]}


def _difference(a: Any, b: Any) -> float:
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    return abs(float(a) - float(b))


def compare(a: dict[str, Any], b: dict[str, Any], tol: float) -> tuple[dict[str, tuple[float, Key | None]],
                                                                       list[str]]:
    """The largest difference per metric (with its record) and the lines describing differences."""
    ra, rb = by_key(a), by_key(b)
    largest: dict[str, tuple[float, Key | None]] = dict.fromkeys(METRICS, (0.0, None))
    lines: list[str] = []
    for key in sorted(ra.keys() & rb.keys()):
        diffs = {m: _difference(ra[key].get(m), rb[key].get(m)) for m in METRICS}
        for m, d in diffs.items():
            if d > largest[m][0]:
                largest[m] = (d, key)
        changed = [f"{m} {ra[key].get(m)} -> {rb[key].get(m)}" for m, d in diffs.items() if d > tol]
        if ra[key].get("hparams") != rb[key].get("hparams"):
            changed.append(f"hparams {ra[key].get('hparams')} -> {rb[key].get('hparams')}")
        if changed:
            lines.append(f"differs  {'/'.join(key)}: " + "; ".join(changed))
    lines += [f"only in A {'/'.join(k)}" for k in sorted(ra.keys() - rb.keys())]
    lines += [f"only in B {'/'.join(k)}" for k in sorted(rb.keys() - ra.keys())]
    na, nb = a.get("not_applicable") or {}, b.get("not_applicable") or {}
    lines += [f"not applicable in {side} only: {d}" for side, x, y in (("A", na, nb), ("B", nb, na))
              for d in sorted(set(x) - set(y))]
    return largest, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="results.json (or its run folder) A")
    parser.add_argument("b", type=Path, help="results.json (or its run folder) B")
    parser.add_argument("--tol", type=float, default=0.0,
                        help="largest absolute difference that still counts as equal (default 0)")
    args = parser.parse_args(argv)
    a, b = load(args.a), load(args.b)
    largest, lines = compare(a, b, args.tol)
    n_a, n_b, shared = len(a["records"]), len(b["records"]), len(by_key(a).keys() & by_key(b).keys())
    print(f"A: {args.a} ({n_a} records)\nB: {args.b} ({n_b} records)\nmatched records: {shared}\n")
    print(f"{'metric':<10} {'largest |A - B|':>16}  record")
    for m, (d, key) in largest.items():
        print(f"{m:<10} {d:>16.3g}  {'/'.join(key) if key else '-'}")
    print()
    for line in lines:
        print(line)
    print(f"{len(lines)} difference(s) beyond tol={args.tol:g}" if lines else
          f"identical within tol={args.tol:g}: every record matches")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
