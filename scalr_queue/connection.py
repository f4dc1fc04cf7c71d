"""Connections to Redis: one pool from the settings, with bounded waits and errors that say what to do.

Every process (worker, producer, CLI, probe) gets its client from ``create_redis``, so TLS checks, Sentinel
and the error messages are the same everywhere. A single server comes from ``REDIS_URL``; with
``SCALR_QUEUE_SENTINELS`` the sentinels name the primary and ``REDIS_URL`` gives the user, password, database
and TLS options for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry as RedisRetry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys, wire
from .config import Settings, query_flag, query_value, redact_url
from .exceptions import (
    EnqueueOutcomeUnknownError,
    RedisFullError,
    RedisPermissionError,
    RedisUnavailableError,
)

# Errors that mean "Redis is not there right now", as opposed to a bad command. READONLY is one: the server we
# reach was the primary and is a replica now (a failover); a new connection finds the new primary.
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
# Replies of a server that is up but takes no writes for now: too few replicas (min-replicas-to-write), or a
# replica cut off from its primary. redis-py has no class for them.
NOT_WRITABLE_CODES = ("NOREPLICAS", "MASTERDOWN")
# How Redis words an ACL refusal met inside a script (a plain ERR, not NOPERM).
_SCRIPT_ACL_REFUSALS = ("can't run this command", "can't access", "no permissions")
# OpenSSL's verification codes for a certificate that names another host (X509_V_ERR_HOSTNAME_MISMATCH,
# X509_V_ERR_IP_ADDRESS_MISMATCH).
_NAME_MISMATCH = frozenset({62, 64})
# What a worker rides out with backoff: Redis down, loading, full (maxmemory), or a replica after a failover
# (NOREPLICAS and MASTERDOWN, which have no class of their own, are told apart by ``not_writable``).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (*REDIS_DOWN_ERRORS, OutOfMemoryError)
# Causes that prove a command never reached Redis: the connection itself could not be made.
_NEVER_SENT = (
    ConnectionRefusedError,
    FileNotFoundError,
    socket.gaierror,
    ssl.SSLError,
    AuthenticationError,
    MasterNotFoundError,
)
# redis-py's words for a connection that could not be made ("Error 111 connecting to ...", "Timeout connecting to
# server"), for the causes that have no type of their own; a command is only sent on a made connection.
_CONNECTING = re.compile(r"(?:Error \S+|Timeout) connecting to")
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of a Redis error, never with a command's arguments (redis-py puts a pipeline's failing
    command, job payload included, into the message)."""
    text = _PIPELINE_NOTE.sub("", str(exc)).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def transient(exc: BaseException) -> bool:
    """Whether a worker should wait this error out (and log it as an outage) rather than treat it as a bug."""
    return isinstance(exc, TRANSIENT_ERRORS) or not_writable(exc)


def create_redis(settings: Settings, *, socket_timeout: float | None = None, **pool_kwargs: Any) -> ArqRedis:
    """A lazily connecting client for the settings' Redis; nothing is sent until the first command.

    ``socket_timeout=0`` means no per-read timeout (the caller bounds whole calls instead).

    A dropped connection (a Redis restart, a failover) is retried twice with a short backoff before an error
    surfaces. ``rediss://`` checks that the server's certificate names the host connected to, unless the URL
    says ``ssl_check_hostname=false``.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": settings.redis_timeout if socket_timeout is None else (socket_timeout or None),
        "retry": RedisRetry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ReadOnlyError],
        **pool_kwargs,
    }
    if checks_hostname(settings.redis_url):
        options["ssl_check_hostname"] = True
    pool = (
        _sentinel_pool(settings, options)
        if settings.sentinels
        else ConnectionPool.from_url(settings.redis_url, **options)  # the URL's own options win
    )
    return ArqRedis(
        pool,
        job_serializer=wire.dumps,
        job_deserializer=wire.loads,
        default_queue_name=keys.queue_key(settings.name),
    )


def checks_hostname(url: str) -> bool:
    """Whether a TLS connection to ``url`` checks the host name: yes, unless the URL opts out.

    redis-py does not by default, so any certificate signed by a trusted CA would do, another host's included.
    ``ssl_cert_reqs=none`` (no verification at all) leaves nothing to check.
    """
    if urlsplit(url).scheme != "rediss" or query_value(url, "ssl_cert_reqs") == "none":
        return False
    return query_flag(url, "ssl_check_hostname") is not False


class _SentinelPool(SentinelConnectionPool):
    """Connections to whichever server the sentinels name as primary.

    redis-py asks the sentinels only when a connection (re)connects, so after a manual failover, where the old
    primary stays up and writable for a while, a busy pool would keep writing to it, and those writes are lost
    when Sentinel turns it into a replica. Here the sentinels are asked again at most every
    ``MASTER_CHECK_S`` seconds, in the background, and a pooled connection to a server that is no longer the
    primary is reconnected before it is handed out. Closing the pool closes the sentinel links too.
    """

    MASTER_CHECK_S = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._next_check = 0.0
        self._check: asyncio.Task[None] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._check_master_soon()
        return await super().get_connection(*args, **kwargs)

    async def ensure_connection(self, connection: Any) -> None:
        address = self.master_address
        if address is not None and connection.is_connected and (connection.host, connection.port) != address:
            await connection.disconnect()  # it talks to the old primary; reconnecting asks the sentinels
        await super().ensure_connection(connection)

    def _check_master_soon(self) -> None:
        now = time.monotonic()
        if now < self._next_check or (self._check is not None and not self._check.done()):
            return
        self._next_check = now + self.MASTER_CHECK_S
        self._check = asyncio.get_running_loop().create_task(
            self._check_master(), name="scalr_queue sentinel"
        )

    async def _check_master(self) -> None:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError):  # commands report real trouble
            await self.get_master_address()  # type: ignore[no-untyped-call]

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # a full close, not the reset redis-py does when the primary moves
            if self._check is not None:
                self._check.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._check
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def _sentinel_pool(settings: Settings, options: dict[str, Any]) -> SentinelConnectionPool:
    """A pool for the primary the sentinels name; REDIS_URL's credentials, database and TLS options apply to it."""
    from_url: dict[str, Any] = dict(parse_url(settings.redis_url))
    for name in ("host", "port", "path", "connection_class"):
        from_url.pop(name, None)
    tls = urlsplit(settings.redis_url).scheme == "rediss"
    connection = {**options, **from_url}
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": settings.redis_timeout,
    }
    if tls:  # the sentinels speak TLS too, checked the same way
        sentinel_options.update({k: v for k, v in connection.items() if k.startswith("ssl_")}, ssl=True)
    if settings.sentinel_password is not None:
        sentinel_options["password"] = settings.sentinel_password.get_secret_value()
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    return _SentinelPool(settings.sentinel_master, sentinel, ssl=tls, **connection)


def describe(settings: Settings) -> str:
    """Where the settings point, for messages: the URL without its password, and the sentinels if any."""
    url = redact_url(settings.redis_url)
    if not settings.sentinels:
        return url
    return f"{url} (primary {settings.sentinel_master!r} from sentinels {settings.sentinels})"


def unavailable(settings: Settings, exc: BaseException) -> RedisUnavailableError:
    """The error to raise when Redis cannot be used: what went wrong and what to change (never a password, nor
    a command's arguments)."""
    if isinstance(exc, RedisUnavailableError):
        return exc
    where = describe(settings)
    reason = describe_error(exc)
    if isinstance(exc, OutOfMemoryError):
        return RedisFullError(
            f"Redis at {where} is full and refused the write ({reason}); nothing was written: raise maxmemory "
            "or drain the queue (workers finishing jobs free memory)"
        )
    if isinstance(exc, AuthenticationError):
        return RedisUnavailableError(
            f"Redis at {where} refused the credentials ({reason.rstrip('.')}); "
            "check the user and password in REDIS_URL"
        )
    if isinstance(exc, ReadOnlyError):
        return RedisUnavailableError(
            f"Redis at {where} is a read-only replica ({reason.rstrip('.')}); point REDIS_URL at the primary, "
            "or give the sentinels in SCALR_QUEUE_SENTINELS so that the primary is found after a failover"
        )
    if not_writable(exc):
        return RedisUnavailableError(
            f"Redis at {where} takes no writes for now ({reason.rstrip('.')}): it has fewer connected replicas "
            "than its min-replicas-to-write, or lost its primary; the job was not stored"
        )
    tls = _certificate_error(exc)
    if tls is not None:
        advice = _tls_advice(tls.verify_message or str(tls), tls.verify_code in _NAME_MISMATCH)
        return RedisUnavailableError(f"Redis at {where}: {advice}")
    full = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in full:  # collected as text: redis-py's Sentinel reports each sentinel so
        detail = full[full.index("CERTIFICATE_VERIFY_FAILED") :].split(")")[0]
        return RedisUnavailableError(f"Redis at {where}: {_tls_advice(detail, 'mismatch' in full)}")
    return RedisUnavailableError(
        f"cannot reach Redis at {where} ({reason}); check that Redis is running and that REDIS_URL points at it"
    )


def not_writable(exc: BaseException) -> bool:
    """A reply that means "not now" rather than "wrong command": NOREPLICAS, MASTERDOWN."""
    return isinstance(exc, ResponseError) and str(exc).startswith(NOT_WRITABLE_CODES)


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed underneath a connection error, if that is what happened."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _tls_advice(detail: str, name_mismatch: bool) -> str:
    detail = detail.rstrip(".")
    if name_mismatch:
        return (
            f"the server's TLS certificate does not match the host name connected to ({detail}); connect with "
            "a host name the certificate names, or add ssl_check_hostname=false to the URL's query to skip the "
            "host-name check (the certificate must still be signed by a trusted CA)"
        )
    return (
        f"the server's TLS certificate could not be verified ({detail}); if a private CA signed it, name the "
        "CA's certificate in the URL: ?ssl_ca_certs=/path/to/ca.pem"
    )


def permission_denied(exc: BaseException) -> bool:
    """The user's ACL refused a command or a key: NOPERM, or the same refusal inside a Lua script."""
    if isinstance(exc, NoPermissionError):
        return True
    return isinstance(exc, ResponseError) and any(s in str(exc) for s in _SCRIPT_ACL_REFUSALS)


def no_permission(settings: Settings, exc: BaseException) -> RedisPermissionError:
    """A command the Redis user may not run: name it and point at the ACL each role needs."""
    return RedisPermissionError(
        f"Redis at {describe(settings)} refused a command: {str(exc).rstrip('.')}; give this Redis user the "
        "ACL its role needs (docs/security.md lists the commands for the worker, the producer and the CLI)"
    )


def maybe_sent(exc: BaseException) -> bool:
    """Whether a failed command may still have reached Redis (a timeout, a connection lost mid-call), as opposed
    to never leaving this process (refused, unknown host, bad credentials, Redis refused it with an error)."""
    if isinstance(exc, RedisError) and not isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return False  # Redis answered with an error: the command did not run
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _NEVER_SENT) or _CONNECTING.search(str(seen)):
            return False
        seen = seen.__cause__ or seen.__context__
    return True


def enqueue_failed(settings: Settings, exc: BaseException, *, job_id: str) -> RedisUnavailableError:
    """The error an enqueue raises when Redis did not take it: not enqueued, or maybe enqueued."""
    if not maybe_sent(exc):
        return unavailable(settings, exc)
    return EnqueueOutcomeUnknownError(
        f"Redis at {describe(settings)} did not answer after job {job_id} was sent ({describe_error(exc)}): it "
        "may be queued and may run. Retrying may run it twice; retry with the same _job_id to make that safe"
    )


class redis_call:
    """Bound the enclosed Redis work by ``redis_timeout`` and turn "Redis is down" (or full, or refusing the
    command) into an error of ours. With ``job_id`` (an enqueue), a failure that may have reached Redis says the
    outcome is unknown.

    A plain class rather than a generator-based context manager: it sits on every enqueue.
    """

    __slots__ = ("_job_id", "_settings", "_timeout")

    def __init__(self, settings: Settings, job_id: str | None = None, *, until: float | None = None) -> None:
        """``until``: bound by that time of the loop's clock instead of ``redis_timeout`` from now."""
        self._settings = settings
        self._job_id = job_id
        self._timeout = (
            asyncio.timeout(settings.redis_timeout) if until is None else asyncio.timeout_at(until)
        )

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except REDIS_DOWN_ERRORS as timed_out:
            raise redis_error(self._settings, timed_out, self._job_id) or timed_out from None
        if exc is not None:
            ours = redis_error(self._settings, exc, self._job_id)
            if ours is not None:
                raise ours from None


def redis_error(
    settings: Settings, exc: BaseException, job_id: str | None = None
) -> RedisUnavailableError | RedisPermissionError | None:
    """Ours for a Redis failure (down, timed out, full, read-only, no permission), or None for any other error.
    With ``job_id`` (an enqueue), one that may have reached Redis says the outcome is unknown."""
    if isinstance(exc, REDIS_DOWN_ERRORS):
        return (
            enqueue_failed(settings, exc, job_id=job_id) if job_id is not None else unavailable(settings, exc)
        )
    if isinstance(exc, OutOfMemoryError) or not_writable(exc):
        return unavailable(settings, exc)
    if permission_denied(exc):
        return no_permission(settings, exc)
    return None


async def redis_info(redis: ArqRedis) -> dict[str, Any]:
    """The server's version and mode: the server section of INFO, else HELLO's answer, else nothing.

    INFO is in the ACL category ``@dangerous``, so a least-privilege user may not have it; what it tells is only
    logged, never needed.
    """
    try:
        info: dict[str, Any] = await redis.info(section="server")
    except NoPermissionError:
        try:
            hello = await redis.execute_command("HELLO")  # type: ignore[no-untyped-call]
        except NoPermissionError:
            return {}
        if isinstance(hello, list):  # RESP2: name, value, name, value ...
            hello = dict(zip(hello[::2], hello[1::2], strict=False))
        fields = {_text(k): _text(v) for k, v in hello.items()}
        return {"redis_version": fields.get("version"), "redis_mode": fields.get("mode")}
    return info


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
