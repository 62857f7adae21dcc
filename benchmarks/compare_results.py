"""Compare two benchmark runs record by record: ``python benchmarks/compare_results.py A B``.

A and B are run directories (or their ``results.json``). Records are matched by (detector,
group, dataset). Prints a table of the largest absolute difference per metric, the records whose
hyperparameters or metrics differ, records present in one run only, and whether the search logs
(grid points, validation AUROCs, errors) agree. Exit status 0 when every record is identical,
1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Key = tuple[str, str, str]


def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    return json.loads((p / "results.json" if p.is_dir() else p).read_text(encoding="utf-8"))


def _records(result: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    return {(r["detector"], r["group"], r["dataset"]): r for r in result["records"]}


def _metrics(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def compare(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """The largest |A − B| per metric and a line per difference found."""
    ra, rb = _records(a), _records(b)
    largest: dict[str, float] = {}
    lines = [f"only in A: {k}" for k in sorted(set(ra) - set(rb))]
    lines += [f"only in B: {k}" for k in sorted(set(rb) - set(ra))]
    for key in sorted(set(ra) & set(rb)):
        x, y = ra[key], rb[key]
        if x["hparams"] != y["hparams"]:
            lines.append(f"{key}: hparams {x['hparams']} != {y['hparams']}")
        mx, my = _metrics(x), _metrics(y)
        for name in sorted(set(mx) | set(my)):
            if name not in mx or name not in my:
                lines.append(f"{key}: metric {name} in one run only")
                continue
            diff = abs(mx[name] - my[name])
            largest[name] = max(largest.get(name, 0.0), diff)
            if diff:
                lines.append(f"{key}: {name} {mx[name]!r} != {my[name]!r} (|diff| {diff:.3g})")
    for det in sorted(set(a.get("search", {})) & set(b.get("search", {}))):
        if a["search"][det] != b["search"][det]:
            lines.append(f"{det}: search logs differ")
    return largest, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="run directory or results.json (before)")
    parser.add_argument("b", help="run directory or results.json (after)")
    args = parser.parse_args(argv)
    a, b = _load(args.a), _load(args.b)
    largest, lines = compare(a, b)
    print(f"records: A {len(a['records'])}, B {len(b['records'])}")
    print(f"{'metric':<12} {'largest |A - B|':>16}")
    for name, diff in sorted(largest.items()):
        print(f"{name:<12} {diff:>16.3g}")
    if lines:
        print(f"{len(lines)} difference(s):")
        print("\n".join(f"  {line}" for line in lines))
    else:
        print("every record (hyperparameters and metrics) and every search log is identical")
    return 1 if any(not line.endswith("search logs differ") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
