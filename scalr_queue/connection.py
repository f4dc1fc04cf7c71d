"""Connections to Redis: one pool from ``REDIS_URL``, with bounded waits and errors that say what to do."""

from __future__ import annotations

import asyncio
import re
import socket
from types import TracebackType
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys, wire
from .config import Settings, redact_url
from .exceptions import EnqueueOutcomeUnknownError, RedisFullError, RedisUnavailableError

# Errors that mean "Redis is not there right now", as opposed to a bad command.
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
# What a worker rides out with backoff: Redis down, loading, full (maxmemory), or a replica after a failover.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (*REDIS_DOWN_ERRORS, OutOfMemoryError, ReadOnlyError)
# Causes that prove a command never reached Redis: the connection itself could not be made.
_NEVER_SENT = (ConnectionRefusedError, FileNotFoundError, socket.gaierror, AuthenticationError)
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of a Redis error, never with a command's arguments (redis-py puts a pipeline's failing
    command, job payload included, into the message)."""
    text = _PIPELINE_NOTE.sub("", str(exc)).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


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
    """The error of ours for "Redis did not take this", saying what to check; the URL without its password."""
    if isinstance(exc, RedisUnavailableError):
        return exc
    reason = describe_error(exc)
    if isinstance(exc, OutOfMemoryError):
        return RedisFullError(
            f"Redis at {redact_url(settings.redis_url)} is full and refused the write ({reason}); nothing was "
            "written: raise maxmemory or drain the queue (workers finishing jobs free memory)"
        )
    if isinstance(exc, AuthenticationError):
        return RedisUnavailableError(
            f"Redis at {redact_url(settings.redis_url)} refused the credentials ({reason.rstrip('.')}); "
            "check the user and password in REDIS_URL"
        )
    return RedisUnavailableError(
        f"cannot reach Redis at {redact_url(settings.redis_url)} ({reason}); "
        "check that Redis is running and that REDIS_URL points at it"
    )


def maybe_sent(exc: BaseException) -> bool:
    """Whether a failed command may still have reached Redis (a timeout, a connection lost mid-call), as opposed
    to never leaving this process (refused, unknown host, bad credentials, Redis refused it with an error)."""
    if isinstance(exc, RedisError) and not isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return False  # Redis answered with an error: the command did not run
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _NEVER_SENT):
            return False
        seen = seen.__cause__ or seen.__context__
    return True


def enqueue_failed(settings: Settings, exc: BaseException, *, job_id: str) -> RedisUnavailableError:
    """The error an enqueue raises when Redis did not take it: not enqueued, or maybe enqueued."""
    if not maybe_sent(exc):
        return unavailable(settings, exc)
    return EnqueueOutcomeUnknownError(
        f"Redis at {redact_url(settings.redis_url)} did not answer after job {job_id} was sent "
        f"({describe_error(exc)}): it may be queued and may run. Retrying may run it twice; retry with the "
        "same _job_id to make that safe"
    )


class redis_call:
    """Bound the enclosed Redis work by ``redis_timeout`` and turn "Redis is down" (or full) into an error of
    ours. With ``job_id`` (an enqueue) a failure that may have reached Redis says the outcome is unknown.

    A plain class rather than a generator-based context manager: it sits on every enqueue.
    """

    __slots__ = ("_job_id", "_settings", "_timeout")

    def __init__(self, settings: Settings, job_id: str | None = None) -> None:
        self._settings = settings
        self._job_id = job_id
        self._timeout = asyncio.timeout(settings.redis_timeout)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except REDIS_DOWN_ERRORS as timed_out:
            raise self._error(timed_out) from None
        if exc is not None and isinstance(exc, (*REDIS_DOWN_ERRORS, OutOfMemoryError)):
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> RedisUnavailableError:
        if self._job_id is not None and not isinstance(exc, OutOfMemoryError):
            return enqueue_failed(self._settings, exc, job_id=self._job_id)
        return unavailable(self._settings, exc)


async def redis_info(redis: ArqRedis) -> dict[str, Any]:
    """The server section of INFO (version, mode, ...)."""
    info: dict[str, Any] = await redis.info(section="server")
    return info
