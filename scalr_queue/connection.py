"""Connections to Redis: one pool from ``REDIS_URL``, with bounded waits and errors that say what to do."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys, wire
from .config import Settings, redact_url
from .exceptions import RedisUnavailableError

# Errors that mean "Redis is not there right now", as opposed to a bad command.
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def create_redis(settings: Settings, *, socket_timeout: float | None = None, **pool_kwargs: Any) -> ArqRedis:
    """A lazily connecting client for ``settings.redis_url``; nothing is sent until the first command.

    ``socket_timeout=0`` means no per-read timeout (the caller bounds whole calls instead).

    A dropped connection (a Redis restart) is retried twice with a short backoff before an error surfaces.
    """
    pool = ConnectionPool.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout if socket_timeout is None else (socket_timeout or None),
        retry=RedisRetry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **pool_kwargs,
    )
    return ArqRedis(
        pool,
        job_serializer=wire.dumps,
        job_deserializer=wire.loads,
        default_queue_name=keys.queue_key(settings.name),
    )


def unavailable(settings: Settings, exc: BaseException) -> RedisUnavailableError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, AuthenticationError):
        return RedisUnavailableError(
            f"Redis at {redact_url(settings.redis_url)} refused the credentials ({reason.rstrip('.')}); "
            "check the user and password in REDIS_URL"
        )
    return RedisUnavailableError(
        f"cannot reach Redis at {redact_url(settings.redis_url)} ({reason}); "
        "check that Redis is running and that REDIS_URL points at it"
    )


class redis_call:
    """Bound the enclosed Redis work by ``redis_timeout`` and turn "Redis is down" into RedisUnavailableError.

    A plain class rather than a generator-based context manager: it sits on every enqueue.
    """

    __slots__ = ("_settings", "_timeout")

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = asyncio.timeout(settings.redis_timeout)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except REDIS_DOWN_ERRORS as timed_out:
            raise unavailable(self._settings, timed_out) from timed_out
        if exc is not None and isinstance(exc, REDIS_DOWN_ERRORS):
            raise unavailable(self._settings, exc) from exc


async def redis_info(redis: ArqRedis) -> dict[str, Any]:
    """The server section of INFO (version, mode, ...)."""
    info: dict[str, Any] = await redis.info(section="server")
    return info
