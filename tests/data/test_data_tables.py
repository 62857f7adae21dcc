"""The table readers on format-exact fixtures (ADBench .npz, CSV, Parquet) and their errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from unseen.data.tables import (
    Table,
    TableFormatError,
    adbench_files,
    adbench_name,
    from_arrays,
    read_adbench,
    read_csv,
    read_parquet,
    read_table,
)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_adbench_npz_casts_integer_features_and_reads_labels(tmp_path):
    # as 32_shuttle: int16 X, int64 y with 1 = anomaly
    x = np.array([[1, -2], [300, 4], [5, 6]], dtype=np.int16)
    path = write_npz(tmp_path / "32_shuttle.npz", X=x, y=np.array([0, 1, 0], dtype=np.int64))
    t = read_adbench(path)
    assert t.name == "shuttle" and t.features.dtype == np.float64
    np.testing.assert_array_equal(t.features, x.astype(np.float64))
    np.testing.assert_array_equal(t.anomaly, [False, True, False])
    np.testing.assert_array_equal(t.labels(), [0, -1, 0])
    rep = t.representation()
    assert rep.features.dtype == np.float64 and rep.labels.tolist() == [0, -1, 0]
    # uint8 values above 127 survive the cast (a signed cast would wrap them)
    path = write_npz(tmp_path / "4_breastw.npz", X=np.array([[200, 1]], np.uint8), y=np.array([1], np.int32))
    assert read_adbench(path).features.tolist() == [[200.0, 1.0]]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [({"X": np.ones((3, 2))}, "exactly the arrays"),
     ({"X": np.ones((3, 2)), "y": np.zeros(3), "z": np.zeros(1)}, "exactly the arrays"),
     ({"X": np.ones((3, 2)), "y": np.array([0, 2, 1])}, "only 0"),
     ({"X": np.ones((3, 2)), "y": np.zeros(2)}, "rows"),
     ({"X": np.ones(3), "y": np.zeros(3)}, "2-D"),
     ({"X": np.array([[1.0, np.nan]]), "y": np.zeros(1)}, "NaN"),
     ({"X": np.array([["a", "b"]]), "y": np.zeros(1)}, "numeric")],
)
def test_bad_adbench_files_raise_clearly(tmp_path, arrays, match):
    with pytest.raises(TableFormatError, match=match):
        read_adbench(write_npz(tmp_path / "1_bad.npz", **arrays))


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "2_obj.npz"
    np.savez(path, X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(TableFormatError, match="without pickle"):
        read_adbench(path)
    (tmp_path / "3_junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TableFormatError, match="readable"):
        read_adbench(tmp_path / "3_junk.npz")


def test_adbench_files_order_and_names(tmp_path):
    folder = tmp_path / "adbench_classical19" / "Classical"
    folder.mkdir(parents=True)
    for name in ("14_glass", "2_annthyroid", "6_cardio"):
        write_npz(folder / f"{name}.npz", X=np.ones((2, 1)), y=np.zeros(2))
    want = ["2_annthyroid.npz", "6_cardio.npz", "14_glass.npz"]  # by set number, not by text
    assert [p.name for p in adbench_files(tmp_path)] == want
    assert [p.name for p in adbench_files(folder)] == want
    assert adbench_name("31_satimage-2.npz") == "satimage-2"
    with pytest.raises(FileNotFoundError, match="adbench_classical19"):
        adbench_files(tmp_path / "empty")


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,id,label\n1.5,2,x1,0\n-3,4e1,x2,1\n5,6,x3,0\n\n", encoding="utf-8")
    t = read_csv(path, "label", drop=["id"])
    assert t.columns == ("a", "b") and t.name == "t"
    np.testing.assert_array_equal(t.features, [[1.5, 2], [-3, 40], [5, 6]])
    np.testing.assert_array_equal(t.anomaly, [False, True, False])
    # string labels, semicolons, named anomaly/normal values; "1.0" reads as 1
    path.write_text("a;cls\n1;fraud\n2;ok\n3;ok\n", encoding="utf-8")
    assert read_csv(path, "cls", anomaly=["fraud"], normal=["ok"]).anomaly.tolist() == [True, False, False]
    path.write_text("a,y\n1,1.0\n2,0.0\n", encoding="utf-8")
    assert read_table(path, "y").anomaly.tolist() == [True, False]


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [("a,label\n1,0\n2,7\n", {}, "neither anomaly"),
     ("a,label\n1,0\nx,1\n", {}, "not numeric"),
     ("a,label\n1,0\n,1\n", {}, "missing"),
     ("a,label\n1,0\n2\n", {}, "fields"),
     ("a,label\n", {}, "no data rows"),
     ("", {}, "empty"),
     ("a,a,label\n1,2,0\n", {}, "repeated"),
     ("a,b\n1,0\n", {}, "no column 'label'")],
)
def test_bad_csv_raises_clearly(tmp_path, text, kwargs, match):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TableFormatError, match=match):
        read_csv(path, "label", **kwargs)


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"f1": [0.5, 1.0, 2.0], "f2": [1, 2, 3], "label": [0, 1, 0]}), path)
    t = read_table(path)
    np.testing.assert_array_equal(t.features, [[0.5, 1], [1, 2], [2, 3]])
    assert t.anomaly.tolist() == [False, True, False] and t.columns == ("f1", "f2")
    pq.write_table(pa.table({"f1": [0.5, None], "label": [0, 1]}), path)
    with pytest.raises(TableFormatError, match="missing"):
        read_parquet(path)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(TableFormatError, match="Parquet"):
        read_parquet(tmp_path / "junk.parquet")


def test_arrays_and_unknown_format(tmp_path):
    t = from_arrays(np.arange(6).reshape(3, 2), [0, 0, 1], name="mine")
    assert isinstance(t, Table) and t.n_anomalies == 1 and t.features.dtype == np.float64
    assert from_arrays(np.ones((2, 2))).n_anomalies == 0
    with pytest.raises(TableFormatError, match="labels for"):
        from_arrays(np.ones((3, 2)), np.array([True, False]))
    with pytest.raises(TableFormatError, match="unknown table format"):
        read_table(tmp_path / "x.xlsx")


@pytest.mark.data
def test_real_adbench_files_match_the_bundle_table():
    root = os.environ.get("UNSEEN_DATA_ROOT")
    if not root or not (Path(root) / "adbench_classical19").is_dir():
        pytest.skip("UNSEEN_DATA_ROOT with adbench_classical19 not set")
    files = adbench_files(root)
    assert len(files) == 19
    # n, d, anomalies as counted in the bundle's README (caveat 10)
    shuttle = read_adbench(next(p for p in files if p.stem == "32_shuttle"))
    assert shuttle.features.shape == (49097, 9) and shuttle.n_anomalies == 3511
    wine = read_adbench(next(p for p in files if p.stem == "45_wine"))
    assert wine.features.shape == (129, 13) and wine.n_anomalies == 10
