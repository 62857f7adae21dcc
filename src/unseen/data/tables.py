"""Tables for outlier detection: ADBench ``.npz`` files, CSV and Parquet tables with a label
column, and arrays a user already has. Each becomes a :class:`Table` (float64 features, a boolean
anomaly mask). Only numpy and the standard library are needed (pyarrow for Parquet).

ADBench (Han, Hu, Huang, Jiang, Zhao, "ADBench: Anomaly Detection Benchmark", NeurIPS 2022)
stores each set as ``.npz`` with exactly the keys ``X`` (n × d) and ``y`` (1 = anomaly, 0 =
inlier); they load with ``allow_pickle=False``. ``X`` is float64 in most files, uint8 or int16 in
some: it is cast to float64 here, before any scaling.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unseen.representation import Representation

#: where the ADBench "Classical" files lie below a data root
ADBENCH_SUBDIR = Path("adbench_classical19") / "Classical"
_ADBENCH_NAME = re.compile(r"^(\d+)_(.+)$")


class TableFormatError(ValueError):
    """A table file or array is malformed: wrong keys, shapes, labels or values."""


@dataclass(frozen=True, eq=False)
class Table:
    """A feature table with known anomalies.

    Attributes:
        name: the data set's name (e.g. ``"cardio"``).
        features: (n, d) float64, finite.
        anomaly: (n,) bool, True for an anomaly.
        columns: the feature names, when the source has them.
    """

    name: str
    features: np.ndarray
    anomaly: np.ndarray
    columns: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        x = _as_features(self.features, self.name)
        a = np.asarray(self.anomaly)
        if a.dtype != bool:
            raise TableFormatError(f"{self.name}: the anomaly mask must be boolean, got {a.dtype}")
        if a.shape != (x.shape[0],):
            raise TableFormatError(
                f"{self.name}: {a.shape[0] if a.ndim else 0} labels for {x.shape[0]} rows"
            )
        if self.columns is not None and len(self.columns) != x.shape[1]:
            raise TableFormatError(f"{self.name}: {len(self.columns)} column names for {x.shape[1]} features")
        object.__setattr__(self, "features", x)
        object.__setattr__(self, "anomaly", a)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_anomalies(self) -> int:
        return int(self.anomaly.sum())

    def labels(self) -> np.ndarray:
        """unseen's label convention: 0 for a normal row, −1 for an anomaly."""
        return np.where(self.anomaly, -1, 0).astype(np.int64)

    def representation(self, rows: np.ndarray | slice | None = None) -> Representation:
        """The rows as a features-only :class:`Representation` (labels 0 / −1)."""
        index = slice(None) if rows is None else rows
        return Representation(
            features=self.features[index], labels=self.labels()[index], meta={"dataset": self.name}
        )


def _as_features(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TableFormatError(f"{name}: features must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise TableFormatError(f"{name}: features must be a non-empty 2-D array (rows × features), "
                               f"got shape {arr.shape}")
    arr = arr.astype(np.float64)  # uint8 / int16 sets are cast before any arithmetic
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise TableFormatError(
            f"{name}: {int((~np.isfinite(arr)).sum())} NaN or infinite values (first at row "
            f"{bad[0]}, column {bad[1]}); impute or drop them first"
        )
    return arr


def _anomaly_mask(y: Any, name: str) -> np.ndarray:
    """ADBench's ``y`` (1 = anomaly, 0 = inlier; integer, bool or float 0./1.) as a mask."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.dtype.kind not in "iubf":
        raise TableFormatError(f"{name}: y must be a 1-D numeric array, got {arr.dtype} {arr.shape}")
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:
        raise TableFormatError(f"{name}: y must hold only 0 (inlier) and 1 (anomaly), "
                               f"got values {sorted(values)[:5]}")
    return arr == 1


def from_arrays(features: Any, anomaly: Any = None, name: str = "table",
                columns: Sequence[str] | None = None) -> Table:
    """A :class:`Table` from arrays: ``anomaly`` is a boolean mask or 0/1 labels (1 = anomaly);
    None means no known anomaly (every row normal)."""
    x = _as_features(features, name)
    if anomaly is None:
        mask = np.zeros(x.shape[0], dtype=bool)
    else:
        a = np.asarray(anomaly)
        mask = a if a.dtype == bool else _anomaly_mask(a, name)
    return Table(name, x, mask, None if columns is None else tuple(columns))


def adbench_name(path: str | os.PathLike[str]) -> str:
    """``"6_cardio.npz"`` → ``"cardio"`` (ADBench's file names start with its set number)."""
    stem = Path(path).stem
    m = _ADBENCH_NAME.match(stem)
    return m.group(2) if m else stem


def read_adbench(path: str | os.PathLike[str]) -> Table:
    """One ADBench ``.npz`` file: keys exactly ``X`` and ``y``; loaded without pickle."""
    path = Path(path)
    name = adbench_name(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ADBench file")
    if not zipfile.is_zipfile(path):
        raise TableFormatError(f"{path}: not a readable .npz file (a .npz is a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if keys != {"X", "y"}:
                raise TableFormatError(
                    f"{path}: an ADBench file holds exactly the arrays 'X' and 'y', this one has "
                    f"{sorted(keys)}"
                )
            x, y = npz["X"], npz["y"]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TableFormatError(f"{path}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        if isinstance(exc, TableFormatError):
            raise
        raise TableFormatError(
            f"{path}: the arrays cannot be loaded without pickle ({exc}); ADBench's X and y are "
            "plain numeric arrays"
        ) from None
    mask = _anomaly_mask(y, str(path))
    features = _as_features(x, str(path))
    if features.shape[0] != mask.shape[0]:
        raise TableFormatError(f"{path}: X has {features.shape[0]} rows but y has {mask.shape[0]}")
    return Table(name, features, mask)


def adbench_files(root: str | os.PathLike[str]) -> list[Path]:
    """The ADBench ``.npz`` files under ``root`` (a data root holding ``adbench_classical19/
    Classical`` or that folder itself), ordered by ADBench's set number."""
    root = Path(root)
    folder = root / ADBENCH_SUBDIR if (root / ADBENCH_SUBDIR).is_dir() else root
    files = sorted(folder.glob("*.npz"), key=lambda p: (_set_number(p), p.name))
    if not files:
        raise FileNotFoundError(
            f"no ADBench .npz files in {folder}; pass the data root that holds "
            f"{ADBENCH_SUBDIR} (unpacked from adbench_classical19.tar.gz) or that folder itself"
        )
    return files


def _set_number(path: Path) -> int:
    m = _ADBENCH_NAME.match(path.stem)
    return int(m.group(1)) if m else 1 << 30


def _canon(v: Any) -> str:
    """A label as text; numbers that are integers read as such ("1.0", 1.0, True → "1")."""
    if isinstance(v, bool | np.bool_):
        return str(int(v))
    text = str(v).strip()
    try:
        f = float(text)
    except ValueError:
        return text
    return str(int(f)) if f.is_integer() else text


def _label_mask(raw: Sequence[Any], anomaly: Iterable[Any], normal: Iterable[Any], where: str) -> np.ndarray:
    anomaly_set, normal_set = {_canon(v) for v in anomaly}, {_canon(v) for v in normal}
    if anomaly_set & normal_set:
        raise ValueError(f"label values {sorted(anomaly_set & normal_set)} are both anomaly and normal")
    labels = np.asarray([_canon(v) for v in raw])
    unknown = sorted(set(labels.tolist()) - anomaly_set - normal_set)
    if unknown:
        raise TableFormatError(
            f"{where}: label values {unknown[:5]} are neither anomaly {sorted(anomaly_set)} nor "
            f"normal {sorted(normal_set)}; pass anomaly=... and normal=... to say which is which"
        )
    return np.isin(labels, sorted(anomaly_set))


def _numeric_columns(columns: dict[str, Sequence[Any]], where: str) -> np.ndarray:
    out = []
    for col, values in columns.items():
        try:
            out.append(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(values) if not _is_number(v))
            raise TableFormatError(
                f"{where}: column {col!r} is not numeric (row {bad + 1}: {values[bad]!r}); drop it "
                "with drop=[...] or encode it as numbers"
            ) from None
    return np.column_stack(out)


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _table(name: str, columns: dict[str, Sequence[Any]], label_column: str | None,
           anomaly: Iterable[Any], normal: Iterable[Any], drop: Iterable[str], where: str) -> Table:
    for col in [*([] if label_column is None else [label_column]), *drop]:
        if col not in columns:
            raise TableFormatError(f"{where}: no column {col!r}; the columns are {list(columns)}")
    mask = None
    if label_column is not None:
        mask = _label_mask(columns[label_column], anomaly, normal, where)
    features = {c: v for c, v in columns.items() if c != label_column and c not in set(drop)}
    if not features:
        raise TableFormatError(f"{where}: no feature columns left")
    x = _numeric_columns(features, where)
    return from_arrays(x, mask, name=name, columns=list(features))


def read_csv(path: str | os.PathLike[str], label_column: str | None = "label", *,
             anomaly: Iterable[Any] = ("1",), normal: Iterable[Any] = ("0",),
             drop: Iterable[str] = (), delimiter: str | None = None) -> Table:
    """A CSV (or TSV) table with a header row. ``label_column`` (None: no labels) holds the
    anomaly values ``anomaly`` or the normal values ``normal``; every other column, less
    ``drop``, must be numeric. The delimiter is sniffed from the header unless given."""
    path = Path(path)
    drop = list(drop)
    with open(path, newline="", encoding="utf-8") as fh:
        head = fh.readline()
        if not head.strip():
            raise TableFormatError(f"{path}: empty file; a CSV table needs a header row")
        sep = delimiter or ("\t" if "\t" in head else ";" if head.count(";") > head.count(",") else ",")
        fh.seek(0)
        reader = csv.reader(fh, delimiter=sep)
        header = [h.strip() for h in next(reader)]
        if len(set(header)) != len(header):
            raise TableFormatError(f"{path}: repeated column names in the header {header}")
        rows = list(reader)
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise TableFormatError(
                f"{path}: line {i + 2} has {len(r)} fields, the header has {len(header)}"
            )
    if not rows:
        raise TableFormatError(f"{path}: no data rows below the header")
    columns: dict[str, Sequence[Any]] = {h: [r[j].strip() for r in rows] for j, h in enumerate(header)}
    for col, values in columns.items():
        if col != label_column and col not in drop and "" in values:
            raise TableFormatError(
                f"{path}: column {col!r} has missing values (row {values.index('') + 1}); "
                "impute or drop them first"
            )
    return _table(path.stem, columns, label_column, anomaly, normal, drop, str(path))


def read_parquet(path: str | os.PathLike[str], label_column: str | None = "label", *,
                 anomaly: Iterable[Any] = ("1",), normal: Iterable[Any] = ("0",),
                 drop: Iterable[str] = ()) -> Table:
    """A Parquet table (needs pyarrow), with the same label rules as :func:`read_csv`."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from None
    path = Path(path)
    try:
        data = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError types
        raise TableFormatError(f"{path}: not a readable Parquet file ({exc})") from None
    for col, values in data.items():
        if col != label_column and col not in set(drop) and any(v is None for v in values):
            raise TableFormatError(f"{path}: column {col!r} has missing values; impute or drop them")
    return _table(path.stem, data, label_column, anomaly, normal, list(drop), str(path))


def read_table(path: str | os.PathLike[str], label_column: str | None = "label",
               **options: Any) -> Table:
    """Read ``path`` by its suffix: ``.npz`` (ADBench), ``.csv`` / ``.tsv`` / ``.txt``, ``.parquet``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        if options:
            raise TypeError(f"ADBench .npz files take no options, got {sorted(options)}")
        return read_adbench(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return read_csv(path, label_column, **options)
    if suffix in (".parquet", ".pq"):
        return read_parquet(path, label_column, **options)
    raise TableFormatError(f"{path}: unknown table format {suffix!r}; use .npz, .csv, .tsv or .parquet")
