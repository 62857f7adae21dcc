"""``unseen serve DIR``: arguments of the HTTP service; the service itself is in the library.

The port is tried before the guard loads, so a port in use is a one-line runtime error (exit
1) like every other, not uvicorn's own exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
from pathlib import Path

from rich.console import Console

from unseen.cli._common import Subcommand


def configure(srv: argparse.ArgumentParser) -> None:
    srv.description = (
        "Serve a guard directory: a conformal guard with POST /v1/predict and POST "
        "/v1/predict-features, an inspection guard (told apart by its manifest's format) with "
        "POST /inspect; both with GET /healthz, GET /metrics and /openapi.json. Binds 127.0.0.1 "
        "unless --host says otherwise."
    )
    srv.add_argument("guard_dir", type=Path, help="directory written by `unseen calibrate`")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000)
    from unseen.guard.http.limits import Limits

    for f in dataclasses.fields(Limits):  # one flag per request/server limit, defaults from Limits
        kind = float if f.name == "body_timeout_s" else int
        flag = "--" + f.name.removesuffix("_s").replace("_", "-")
        default = None if f.default is dataclasses.MISSING else f.default
        srv.add_argument(flag, dest=f.name, type=kind, default=default,
                         help=f"Limits.{f.name} (default: {default or 'derived'})")
    srv.add_argument("--window", type=int, help="monitoring window in inputs (default: "
                     "the guard's setting, else 1000)")
    srv.add_argument("--alarm-level", type=float, help="significance level of the flag-rate "
                     "alarm (default: the guard's setting, else 0.01)")
    srv.add_argument("--log-level", default="info")
    srv.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="serve a conformal guard (not an inspection guard) on Ray Serve: join "
                     "the cluster at ADDRESS (default: $RAY_ADDRESS, a cluster of this machine, "
                     "else a new local one)")
    srv.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas (--ray; 2)")
    srv.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per replica (--ray; 1)")


def check_port(host: str, port: int) -> None:
    """Raise OSError saying so when ``host:port`` cannot be listened on (in use, not local)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(choose another --port)") from None


def run(args: argparse.Namespace, console: Console) -> int:
    check_port(args.host, args.port)
    from unseen.guard.http import Limits, serve

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)}
    limits = Limits(**{k: v for k, v in given.items() if v is not None})
    monitor = {k: v for k, v in (("window", args.window), ("level", args.alarm_level))
               if v is not None}
    if args.ray is not None:
        from unseen.guard.ray_serve import serve_on_ray

        serve_on_ray(args.guard_dir, address=args.ray or None, host=args.host, port=args.port,
                     replicas=args.replicas, num_cpus=args.replica_cpus, limits=limits,
                     monitor=monitor)
        return 0
    try:
        serve(str(args.guard_dir), host=args.host, port=args.port, limits=limits,
              monitor=monitor, log_level=args.log_level)
    except SystemExit as exc:  # uvicorn exits with its own status when it cannot start
        if exc.code not in (0, None):
            raise RuntimeError(f"the server could not start on {args.host}:{args.port} "
                               "(see the log above)") from None
    return 0


COMMAND = Subcommand("serve", "serve a guard directory over HTTP (127.0.0.1 by default)",
                     configure, run)
