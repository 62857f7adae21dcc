"""Unit tests of the array-file readers (IDX, CIFAR pickle batches, SVHN .mat) on fixtures
written byte for byte in the official formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from unseen.data import (
    CIFARPickle,
    IDXDataset,
    IDXFormatError,
    SVHNMat,
    UnsafePickleError,
    load_batch,
    read_idx,
)
from unseen.data.cifar import RestrictedUnpickler

# ----------------------------------------------------------------------------------- IDX


def _idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", 0x00000803, n, rows, cols) + images.tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


@pytest.fixture
def digits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), np.array([7, 2, 1, 0, 4, 1, 4])


@pytest.mark.parametrize("gz", [False, True])
def test_idx_pixels_and_labels(tmp_path: Path, digits, gz: bool) -> None:
    images, labels = digits
    suffix, pack = (".gz", gzip.compress) if gz else ("", bytes)
    ip, lp = tmp_path / f"t10k-images-idx3-ubyte{suffix}", tmp_path / f"t10k-labels{suffix}"
    ip.write_bytes(pack(_idx_images(images)))
    lp.write_bytes(pack(_idx_labels(labels)))
    ds = IDXDataset(ip, lp)
    assert len(ds) == 7
    for i in (0, 3, 6):
        img, label = ds[i]
        assert img.mode == "L" and img.size == (28, 28)
        np.testing.assert_array_equal(np.asarray(img), images[i])
        assert label == labels[i] and type(label) is int
    assert isinstance(ds.images, np.memmap) != gz  # uncompressed files are memory-mapped


def test_idx_without_labels_gives_minus_one(tmp_path: Path, digits) -> None:
    (tmp_path / "x-images").write_bytes(_idx_images(digits[0]))
    ds = IDXDataset(tmp_path / "x-images")
    assert [ds[i][1] for i in range(len(ds))] == [-1] * 7


def test_idx_truncated_and_wrong_magic(tmp_path: Path, digits) -> None:
    images, labels = digits
    data = _idx_images(images)
    cut = tmp_path / "cut-images"
    cut.write_bytes(data[:-1])
    with pytest.raises(IDXFormatError, match=r"cut-images: .*7x28x28 = 5488 bytes.*holds 5487"):
        read_idx(cut, 0x803)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(IDXFormatError, match=r"cut.gz: not a valid gzip"):
        read_idx(tmp_path / "cut.gz", 0x803)
    (tmp_path / "labels").write_bytes(_idx_labels(labels))
    with pytest.raises(IDXFormatError, match=r"labels: magic number 0x00000801, expected 0x0+803"):
        IDXDataset(tmp_path / "labels")
    (tmp_path / "short").write_bytes(struct.pack(">II", 0x803, 7))
    with pytest.raises(IDXFormatError, match="truncated IDX header"):
        read_idx(tmp_path / "short", 0x803)


def test_idx_count_mismatch(tmp_path: Path, digits) -> None:
    images, labels = digits
    (tmp_path / "i").write_bytes(_idx_images(images))
    (tmp_path / "l").write_bytes(_idx_labels(labels[:5]))
    with pytest.raises(IDXFormatError, match=r"holds 5 labels but .* holds 7 images"):
        IDXDataset(tmp_path / "i", tmp_path / "l")


def test_idx_identity_changes_with_content(tmp_path: Path, digits) -> None:
    images = digits[0]
    ip = tmp_path / "i"
    ip.write_bytes(_idx_images(images))
    key = IDXDataset(ip).identity()
    assert key == IDXDataset(ip).identity()
    images = images.copy()
    images[3, 5, 5] ^= 1
    ip.write_bytes(_idx_images(images))
    assert IDXDataset(ip).identity() != key


# --------------------------------------------------------------------------------- CIFAR


class _Py2Pickler(pickle._Pickler):  # type: ignore[misc]
    """Writes byte strings the way Python 2's cPickle wrote ``str`` (BINSTRING opcodes) and
    names numpy's reconstructor by its numpy 1 module, as in the official CIFAR batches."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", "") == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _py2_dump(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _cifar10(root: Path, py2: bool) -> dict[str, np.ndarray]:
    """Six batches of 3 images each; returns the arrays written."""
    root.mkdir()
    rng = np.random.default_rng(1)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(3)]
        batch = {b"batch_label": b"batch", b"labels": labels, b"data": data,
                 b"filenames": [b"a.png", b"b.png", b"c.png"]}
        if py2:
            _py2_dump(batch, root / name)
        else:
            (root / name).write_bytes(pickle.dumps(batch, protocol=4))
        written[name] = data
        written[name + "_labels"] = np.array(labels)
    return written


@pytest.mark.parametrize("py2", [True, False])
def test_cifar10_batches(tmp_path: Path, py2: bool) -> None:
    written = _cifar10(tmp_path / "cifar-10-batches-py", py2)
    train = CIFARPickle(tmp_path / "cifar-10-batches-py", train=True)
    test = CIFARPickle(tmp_path / "cifar-10-batches-py", train=False)
    assert (len(train), len(test)) == (15, 3)
    # image 4 of train = image 1 of data_batch_2; pixel (r, c) of channel ch = data[ch*1024+r*32+c]
    img, label = train[4]
    row = written["data_batch_2"][1]
    arr = np.asarray(img)
    assert img.mode == "RGB" and img.size == (32, 32)
    for r, c in [(0, 0), (0, 31), (5, 17), (31, 2)]:
        assert tuple(arr[r, c]) == tuple(row[ch * 1024 + r * 32 + c] for ch in range(3))
    assert label == written["data_batch_2_labels"][1]
    assert [test[i][1] for i in range(3)] == list(written["test_batch_labels"])
    assert train.identity() != test.identity()
    with pytest.raises(ValueError, match="no coarse labels"):
        CIFARPickle(tmp_path / "cifar-10-batches-py", train=True, fine=False)


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    data = np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3072)
    for name in ("train", "test"):
        _py2_dump({b"data": data, b"fine_labels": [42, 99], b"coarse_labels": [3, 19],
                   b"filenames": [b"x", b"y"], b"batch_label": name.encode()}, root / name)
    fine, coarse = CIFARPickle(root, train=False), CIFARPickle(root, train=False, fine=False)
    assert [fine[i][1] for i in range(2)] == [42, 99]
    assert [coarse[i][1] for i in range(2)] == [3, 19]
    assert fine.identity() != coarse.identity()
    # image 1: red plane starts at byte 3072 -> value (3072 + r*32 + c) % 256
    assert tuple(np.asarray(fine[1][0])[1, 2]) == ((3072 + 34) % 256, (4096 + 34) % 256,
                                                   (5120 + 34) % 256)


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=4))
    with pytest.raises(UnsafePickleError, match=r"test_batch: refusing to load global .*system"):
        load_batch(path)
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()
    with pytest.raises(UnsafePickleError):
        CIFARPickle(tmp_path, train=False)


def test_cifar_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither CIFAR-10"):
        CIFARPickle(tmp_path, train=True)
    (tmp_path / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR batch"):
        CIFARPickle(tmp_path, train=False)
    _py2_dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, tmp_path / "test_batch")
    with pytest.raises(ValueError, match="1 labels for 2 images"):
        CIFARPickle(tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        CIFARPickle(tmp_path, train=True)


# ---------------------------------------------------------------------------------- SVHN


def test_svhn_mat(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)  # 10 is the digit 0
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    ds = SVHNMat(tmp_path / "test_32x32.mat")
    assert [ds[i][1] for i in range(4)] == [0, 1, 9, 0]
    img = ds[2][0]
    assert img.mode == "RGB" and img.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(img), x[:, :, :, 2])
    assert ds.identity().startswith("SVHNMat:")


def test_svhn_bad_labels_and_format(tmp_path: Path) -> None:
    x = np.zeros((32, 32, 3, 2), np.uint8)
    scipy.io.savemat(tmp_path / "a.mat", {"X": x, "y": np.array([[0], [3]])})
    with pytest.raises(ValueError, match=r"labels must lie in 1..10, found 0..3"):
        SVHNMat(tmp_path / "a.mat")
    scipy.io.savemat(tmp_path / "b.mat", {"X": x[:, :, :2], "y": np.array([[1], [3]])})
    with pytest.raises(ValueError, match="32x32x3xN"):
        SVHNMat(tmp_path / "b.mat")
    (tmp_path / "c.mat").write_bytes(b"not matlab")
    with pytest.raises(ValueError, match=r"c\.mat"):
        SVHNMat(tmp_path / "c.mat")
