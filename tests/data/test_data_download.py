"""download() and fetch_dataset() against a local HTTP server with Range support."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from unseen.data import download as dl
from unseen.data.download import (
    ChecksumError,
    IncompleteDownloadError,
    RemoteFile,
    UnsafeArchiveError,
    download,
    extract_archive,
    fetch_dataset,
    parse_checksum,
)

BODY = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes


class _Server:
    """Serves ``files`` (path -> bytes); honours ``Range: bytes=N-`` unless ``ranges`` is off;
    with ``cut_after`` set, sends that many body bytes of a full-length response and hangs up."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng[len("bytes="):-1]) if rng and server.ranges else 0
                if start >= len(body) and start > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_after is not None:
                    payload = payload[: server.cut_after]
                    self.close_connection = True
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    s.files["/f.bin"] = BODY
    yield s
    s.close()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_success_and_reuse(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "f.bin"
    assert download(server.url + "/f.bin", dest, _sha(BODY)) == dest
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "sub" / "f.bin.part").exists()
    download(server.url + "/f.bin", dest, "md5:" + hashlib.md5(BODY).hexdigest())
    assert len(server.requests) == 1  # the verified file is reused, not fetched again


def test_resume_from_part_file(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(BODY[:3000])
    download(server.url + "/f.bin", dest, _sha(BODY))
    assert server.requests == [("/f.bin", "bytes=3000-")]
    assert dest.read_bytes() == BODY


def test_resume_restarts_when_server_ignores_range(server: _Server, tmp_path: Path) -> None:
    server.ranges = False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    download(server.url + "/f.bin", tmp_path / "f.bin", _sha(BODY))
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_resume_false_starts_over(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(BODY[:100])
    download(server.url + "/f.bin", tmp_path / "f.bin", _sha(BODY), resume=False)
    assert server.requests == [("/f.bin", None)]


def test_complete_part_file_gets_416(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(BODY)
    download(server.url + "/f.bin", tmp_path / "f.bin", _sha(BODY))
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_interrupted_then_resumed(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    server.cut_after = 4000
    with pytest.raises(IncompleteDownloadError, match="after 4000 of 10244 bytes"):
        download(server.url + "/f.bin", dest, _sha(BODY))
    assert not dest.exists()
    assert (tmp_path / "f.bin.part").read_bytes() == BODY[:4000]
    server.cut_after = None
    download(server.url + "/f.bin", dest, _sha(BODY))
    assert server.requests[-1] == ("/f.bin", "bytes=4000-")
    assert dest.read_bytes() == BODY


def test_wrong_checksum_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    wrong = _sha(b"something else")
    with pytest.raises(ChecksumError, match="expected " + wrong.split(":")[1]):
        download(server.url + "/f.bin", dest, wrong)
    assert list(tmp_path.iterdir()) == []


def test_existing_wrong_file_is_reported(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"corrupt")
    with pytest.raises(ChecksumError, match="exists but its sha256"):
        download(server.url + "/f.bin", dest, _sha(BODY))
    assert server.requests == []


def test_http_error_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="404"):
        download(server.url + "/missing", tmp_path / "m", _sha(BODY))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["abc", "sha1:" + "0" * 40, "md5:123", "sha256:" + "g" * 64])
def test_parse_checksum_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="checksum must be"):
        parse_checksum(bad)


def test_parse_checksum_accepts_upper_case() -> None:
    assert parse_checksum("md5:" + "AB" * 16) == ("md5", "ab" * 16)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_dataset_downloads_and_extracts(server: _Server, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _tar_bytes({"toy-py/data_1": b"one", "toy-py/sub/data_2": b"two"})
    server.files["/toy.tar.gz"] = archive
    server.files["/extra.bin"] = BODY
    monkeypatch.setitem(dl.DATASETS, "toy", (
        RemoteFile("toy.tar.gz", (server.url + "/down", server.url + "/toy.tar.gz"),
                   _sha(archive), extract=True),
        RemoteFile("extra.bin", (server.url + "/extra.bin",), _sha(BODY)),
    ))
    folder = fetch_dataset("toy", tmp_path)
    assert folder == tmp_path / "toy"
    assert (folder / "toy-py" / "data_1").read_bytes() == b"one"
    assert (folder / "toy-py" / "sub" / "data_2").read_bytes() == b"two"
    assert (folder / "extra.bin").read_bytes() == BODY
    n = len(server.requests)  # first mirror 404 -> second mirror used
    assert [p for p, _ in server.requests] == ["/down", "/toy.tar.gz", "/extra.bin"]
    (folder / "toy-py" / "data_1").unlink()
    fetch_dataset("toy", tmp_path)  # verified files and the extraction stamp: no new work
    assert len(server.requests) == n and not (folder / "toy-py" / "data_1").exists()
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        fetch_dataset("nope", tmp_path)


def test_fetch_dataset_all_mirrors_fail(server: _Server, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dl.DATASETS, "toy", (
        RemoteFile("x.bin", (server.url + "/a", server.url + "/b"), _sha(BODY)),))
    expected = r"could not download x\.bin:\n.*/a: HTTP Error 404.*\n.*/b: HTTP Error 404"
    with pytest.raises(OSError, match=expected):
        fetch_dataset("toy", tmp_path)


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/unseen-evil.txt", "ok/../../evil.txt"])
def test_tar_path_traversal_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_bytes({"good.txt": b"g", name: b"evil"}))
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "good.txt").exists()  # checked before anything is written


def test_tar_symlink_out_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc"
        tar.addfile(link)
    (tmp_path / "l.tar").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(tmp_path / "l.tar", tmp_path / "out")


def test_zip_extract_and_traversal(tmp_path: Path) -> None:
    good = tmp_path / "g.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
    extract_archive(good, tmp_path / "out")
    assert (tmp_path / "out" / "tiny-imagenet-200" / "wnids.txt").read_text() == "n01\n"
    bad = tmp_path / "b.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(bad, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()


def test_registry_entries_are_well_formed() -> None:
    assert set(dl.DATASETS) == {"cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_test",
                                "tinyimagenet"}
    for files in dl.DATASETS.values():
        for f in files:
            parse_checksum(f.checksum)
            assert all(u.endswith("/" + f.filename) for u in f.urls)
    assert len(dl.DATASETS["mnist"]) == 4 and len(dl.DATASETS["mnist"][0].urls) == 2
