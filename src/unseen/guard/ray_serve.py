"""The guard's HTTP service as a Ray Serve deployment with N replicas (``unseen serve --ray``).

Each replica loads the guard directory once, read-only, in its constructor and serves the same
FastAPI app as the single-process service (:func:`_service`), so answers are identical and each
replica has its own monitor window and its own ``/metrics`` counters. Every response carries
the header ``x-unseen-replica`` naming the replica that answered, so a scraper (or a person) can
tell the per-replica metrics apart; Prometheus should scrape every replica (see
``docs/scale-out.md``). The directory must be readable at the same path on every node (a shared
or copied folder).

An inspection guard (``unseen.inspection-guard/1``) is refused here with a message: each replica
would hold its own backbone and memory bank, and nothing of it has been tried on a cluster.

Ray is imported lazily here (``pip install 'unseen[ray]'``); nothing else in the guard needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from unseen.guard import persist
from unseen.guard.core import Guard

#: response header naming the replica that answered
REPLICA_HEADER = "x-unseen-replica"


def _service() -> tuple[Callable[..., Any], type]:
    """``create_app`` and ``Limits`` of the single-process service: the one place naming its module."""
    from unseen.guard.http import Limits, create_app

    return create_app, Limits


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise ImportError(
            "serving on Ray needs ray[serve]: install it with `pip install 'unseen[ray]'`"
        ) from None
    return serve


class GuardReplica:
    """One replica: the guard loaded from ``guard_dir`` and the service's FastAPI app over it."""

    def __init__(self, guard_dir: str, limits: Any = None, monitor: dict[str, Any] | None = None,
                 device: str = "cpu") -> None:
        self.guard = Guard.load(guard_dir, device=device)
        if monitor:
            self.guard.set_monitor(**{**self.guard.monitor_settings, **monitor})
        self.limits = limits

    def __serve_build_asgi_app__(self) -> Any:
        """Ray Serve calls this after ``__init__`` on the replica (``serve.ingress()``)."""
        create_app, _ = _service()
        app = create_app(self.guard, self.limits)
        tag = _serve().get_replica_context().replica_tag

        @app.middleware("http")
        async def name_replica(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = tag
            return response

        return app


def guard_application(
    guard_dir: str | Path,
    *,
    replicas: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    limits: Any = None,
    monitor: dict[str, Any] | None = None,
) -> Any:
    """A bound Ray Serve application: ``replicas`` copies of the guard service.

    ``num_cpus``/``num_gpus`` are reserved per replica (with ``num_gpus > 0`` the model runs on
    the replica's GPU). The guard directory is checked here, on the driver, so a wrong path
    fails before any replica starts.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    path = Path(guard_dir).resolve()
    if persist.saved_format(path) == persist.INSPECTION_FORMAT:
        raise ValueError(
            f"{guard_dir} is an inspection guard: `unseen serve --ray` serves conformal guards "
            "(unseen.guard/1) only; serve it with `unseen serve DIR` (one process, its worker "
            "pool sized by --workers) or run that behind your own load balancer"
        )
    Guard.load(path)  # verifies every file's hash now, not in N replica logs later
    serve = _serve()
    device = "cuda" if num_gpus > 0 else "cpu"
    deployment = serve.deployment(
        name="unseen-guard",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
    )(serve.ingress()(GuardReplica))
    return deployment.bind(str(path), limits, monitor, device)


def serve_on_ray(
    guard_dir: str | Path,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    limits: Any = None,
    monitor: dict[str, Any] | None = None,
    blocking: bool = True,
) -> Any:
    """Join (or start) a Ray cluster and serve the guard on ``host:port`` with ``replicas``.

    ``address``: as :class:`unseen.extraction.ray.RayRunner` (None: ``$RAY_ADDRESS``, a
    cluster of this machine or a new local one). Blocks until interrupted unless
    ``blocking=False`` (then returns the deployment handle).
    """
    from unseen.extraction.ray import RayRunner

    app = guard_application(guard_dir, replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus,
                            limits=limits, monitor=monitor)
    RayRunner(address=address).connect()
    serve = _serve()
    serve.start(http_options={"host": host, "port": port})
    return serve.run(app, name="unseen-guard", route_prefix="/", blocking=blocking)
