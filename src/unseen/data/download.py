"""Download the official dataset files: checksummed, resumable, atomic; standard library only.

:func:`download` streams into ``<dest>.part``, resumes a partial ``.part`` with an HTTP
``Range`` request, verifies the checksum and only then renames the file to ``dest``. A wrong
checksum deletes the ``.part`` file; an interrupted transfer keeps it for the next attempt.
:func:`fetch_dataset` downloads one entry of :data:`DATASETS` and extracts its archives with
path-traversal checks.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20
_HEX_LEN = {"md5": 32, "sha256": 64}


class ChecksumError(ValueError):
    """A downloaded or existing file does not have the expected checksum."""


class IncompleteDownloadError(OSError):
    """The server closed the connection before sending the whole file."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split ``"md5:<hex>"`` or ``"sha256:<hex>"`` into ``(algorithm, lower-case hex)``."""
    algo, sep, digest = checksum.partition(":")
    digest = digest.lower()
    if not sep or algo not in _HEX_LEN or not re.fullmatch(f"[0-9a-f]{{{_HEX_LEN[algo]}}}", digest):
        raise ValueError(
            f"checksum must be 'md5:<32 hex digits>' or 'sha256:<64 hex digits>', got {checksum!r}"
        )
    return algo, digest


def file_digest(path: str | os.PathLike[str], algo: str) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike[str],
    checksum: str,
    *,
    resume: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right ``checksum`` is already there.

    ``checksum`` is ``"sha256:<hex>"`` or ``"md5:<hex>"`` (several official archives publish only
    MD5). Raises :class:`ChecksumError` when the download (its ``.part`` file is deleted) or an
    existing ``dest`` does not match, :class:`IncompleteDownloadError` when the connection drops
    (the ``.part`` file is kept and ``resume=True`` continues it next time).
    """
    algo, expected = parse_checksum(checksum)
    dest = Path(dest)
    if dest.exists():
        actual = file_digest(dest, algo)
        if actual != expected:
            raise ChecksumError(
                f"{dest} exists but its {algo} is {actual}, expected {expected}; "
                "delete it and download again"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.exists() and not resume:
        part.unlink()
    offset = part.stat().st_size if part.exists() else 0
    _fetch(url, part, offset, timeout)
    actual = file_digest(part, algo)
    if actual != expected:
        part.unlink()
        raise ChecksumError(
            f"download of {url} has {algo} {actual}, expected {expected}; the file was deleted"
        )
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, offset: int, timeout: float) -> None:
    """Write the body of ``url`` to ``part``, continuing at byte ``offset`` if the server can."""
    headers = {"User-Agent": "unseen-downloader"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: .part is complete (or too long)
            return
        raise
    with response:
        start = _range_start(response.headers.get("Content-Range"))
        appending = offset > 0 and response.status == 206 and start == offset
        length = response.headers.get("Content-Length")
        with open(part, "ab" if appending else "wb") as f:
            written = _copy(response, f)
            f.flush()
            os.fsync(f.fileno())
    if length is not None and written != int(length):
        raise IncompleteDownloadError(
            f"{url}: connection closed after {written} of {length} bytes; "
            f"{part} is kept, call download() again to resume"
        )


def _copy(source: BinaryIO, target: BinaryIO) -> int:
    written = 0
    while chunk := source.read(_CHUNK):
        target.write(chunk)
        written += len(chunk)
    return written


def _range_start(content_range: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (content_range or "").strip())
    return int(match.group(1)) if match else None


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if os.path.isabs(name) or not target.is_relative_to(root):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {root}")
    return target


def extract_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a ``.zip`` or tar (optionally compressed) archive into ``dest``.

    Every member must land inside ``dest``: absolute names, ``..`` components and links
    pointing outside raise :class:`UnsafeArchiveError` before anything is written; device
    files and FIFOs are refused too.
    """
    archive, root = Path(archive), Path(dest).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _inside(root, info.filename)
            zf.extractall(root)
        return
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            target = _inside(root, m.name)
            if m.issym():
                _inside(root, str(target.parent.relative_to(root) / m.linkname))
            elif m.islnk():
                _inside(root, m.linkname)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"archive member {m.name!r} is a device or FIFO")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members checked above
            tar.extractall(root, members=members)


@dataclass(frozen=True)
class RemoteFile:
    """One official file: mirrors tried in order, its checksum, whether to extract it."""

    filename: str
    urls: tuple[str, ...]
    checksum: str
    extract: bool = False


def _idx_files(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f, tuple(m + f for m in mirrors), f"md5:{h}") for f, h in md5s.items())


# MD5s as published with the datasets and used by torchvision's dataset classes; the authors
# publish no SHA-256.
DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "cifar10": (RemoteFile(
        "cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        "md5:c58f30108f718f92721af3b95e74349a", extract=True),),
    "cifar100": (RemoteFile(
        "cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        "md5:eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
    "mnist": _idx_files(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": _idx_files(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "svhn_test": (RemoteFile(
        "test_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
        "md5:eb5a983be6a315427106f1b164d9cef3"),),
    "tinyimagenet": (RemoteFile(
        "tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
        "md5:90528d7ca1a48142e341f4ef8d21d0de", extract=True),),
}


def fetch_dataset(name: str, root: str | os.PathLike[str]) -> Path:
    """Download (and extract) dataset ``name`` of :data:`DATASETS` into ``root/name``.

    Each file is verified by checksum; archives are extracted next to it once (a
    ``.<archive>.extracted`` stamp marks completion, so a re-run skips the work). Returns the
    folder. Mirrors are tried in order; the last error is raised when all fail.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    folder = Path(root) / name
    for remote in DATASETS[name]:
        path = _download_any(remote, folder / remote.filename)
        stamp = folder / f".{remote.filename}.extracted"
        if remote.extract and not stamp.exists():
            extract_archive(path, folder)
            stamp.touch()
    return folder


def _download_any(remote: RemoteFile, dest: Path) -> Path:
    errors = []
    for url in remote.urls:
        try:
            return download(url, dest, remote.checksum)
        except (urllib.error.URLError, OSError, ChecksumError) as err:
            if dest.exists():  # an existing wrong file: another mirror cannot fix that
                raise
            errors.append(f"{url}: {err}")
    raise OSError(f"could not download {remote.filename}:\n" + "\n".join(errors))
