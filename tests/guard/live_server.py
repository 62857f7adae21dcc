"""A real uvicorn server in a background thread on 127.0.0.1 (a free port), for tests that need
true concurrency or raw sockets; startup and shutdown are bounded in time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def live_server(app: Any, startup_s: float = 30.0) -> Iterator[tuple[str, int]]:
    """Serve ``app``; yields (base URL, port)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, f"uvicorn did not start within {startup_s} s"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> socket.socket:
    """Open a socket and send a request head and (part of) its body; the caller reads or closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def read_status(sock: socket.socket) -> int:
    """The status code of the response on ``sock`` (raises on timeout)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed before a status line: {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])
