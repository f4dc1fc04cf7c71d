"""FastAPI glue: a lifespan that owns the pool, a dependency for handlers, a 503 for "Redis is down", and a
readiness route that says whether jobs can be queued and run.

    from scalr_queue.fastapi import health_router, install_error_handler, lifespan

    app = FastAPI(lifespan=lifespan(my_own_lifespan))   # my_own_lifespan is optional
    install_error_handler(app)                            # RedisUnavailableError -> 503 + Retry-After
    app.include_router(health_router())                   # GET /health/queue
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

try:
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, Response
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("scalr_queue.fastapi needs FastAPI: pip install 'scalr_queue[fastapi]'") from exc

from . import keys
from .client import Client, set_default_client
from .config import get_settings
from .connection import redis_call
from .exceptions import RedisUnavailableError
from .health import live_workers
from .logs import get_logger
from .stats import queue_counts

STATE_KEY = "scalr_queue"
RETRY_AFTER_S = 5

log = get_logger("scalr_queue.fastapi")

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]


def lifespan(app_lifespan: Lifespan | None = None) -> Lifespan:
    """A FastAPI lifespan that opens scalr_queue's pool at start-up and closes it at shutdown.

    It wraps the app's own lifespan, if given, and merges its state. Handlers then reach the client through
    ``Depends(get_client)`` and the module-level ``enqueue`` uses the same pool, so enqueueing costs no
    new connection. A Redis that is down at start-up is logged, not fatal: the app serves and the readiness
    route answers 503 until Redis is back.
    """

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = Client(get_settings())
        set_default_client(client)
        try:
            async with redis_call(client.settings):
                await client.redis.ping()
        except RedisUnavailableError as exc:
            log.warning("redis_unavailable_at_startup", error=str(exc))
        try:
            if app_lifespan is None:
                yield {STATE_KEY: client}
            else:
                async with app_lifespan(app) as own_state:
                    yield {**(own_state or {}), STATE_KEY: client}
        finally:
            await client.close()

    return run


def get_client(request: Request) -> Client:
    """Dependency: the client the lifespan opened (the loop's default client without the lifespan)."""
    client = getattr(request.state, STATE_KEY, None)
    if isinstance(client, Client):
        return client
    from .client import default_client

    return default_client()


ClientDep = Annotated[Client, Depends(get_client)]


async def redis_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """RedisUnavailableError -> 503 with Retry-After, so clients and load balancers back off and retry."""
    return JSONResponse(
        {"detail": f"the job queue is unavailable: {exc}"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install_error_handler(app: FastAPI) -> None:
    """Opt in: answer 503 + Retry-After instead of 500 when an enqueue finds Redis down."""
    app.add_exception_handler(RedisUnavailableError, redis_unavailable_handler)


def health_router(
    *, path: str = "/health/queue", queue: str | None = None, require_worker: bool = False
) -> APIRouter:
    """A readiness route: 200 with the queue's depth and live workers; 503 when Redis is down or, with
    ``require_worker``, when no live worker serves the queue."""
    router = APIRouter()

    @router.get(path, tags=["health"], summary="Can jobs be queued (and run)?")
    async def queue_readiness(client: ClientDep) -> JSONResponse:
        name = keys.queue_name(queue or client.settings.name)
        try:
            async with redis_call(client.settings):
                counts = await queue_counts(client.redis, name)
                workers = await live_workers(client.redis, name)
        except RedisUnavailableError as exc:
            return JSONResponse(
                {"status": "unavailable", "queue": name, "error": str(exc)},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        body = {
            "status": "ok",
            "queue": name,
            "queued": counts.queued,
            "in_progress": counts.in_progress,
            "deferred": counts.deferred,
            "workers": len(workers),
        }
        if require_worker and not workers:
            body["status"] = "no live worker serves the queue"
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse(body)

    return router


def metrics_router(*, path: str = "/metrics", registry: Any = None) -> APIRouter:
    """A route serving Prometheus metrics: this process's ``scalr_queue_enqueued_total{queue,task}`` and whatever
    else prometheus-client's default registry (or ``registry``) holds. Needs ``pip install 'scalr_queue[metrics]'``
    (MissingExtraError at once otherwise)."""
    from . import metrics

    metrics.require()
    router = APIRouter()

    @router.get(path, tags=["metrics"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition(registry)
        return Response(body, media_type=content_type)

    return router


__all__ = [
    "ClientDep",
    "get_client",
    "health_router",
    "install_error_handler",
    "lifespan",
    "metrics_router",
    "redis_unavailable_handler",
]
