"""The producer side: ``enqueue`` and ``Job``, on one shared connection pool per running event loop."""

from __future__ import annotations

import asyncio
import difflib
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline, Redis
from redis.commands.core import AsyncScript

from . import inline, keys, wire
from .config import Settings, get_settings
from .connection import create_redis, redis_call
from .exceptions import (
    JobFailedError,
    JobNotFoundError,
    NotReplicatedError,
    PayloadTooLargeError,
    ScalrQueueError,
    TaskArgumentsError,
)
from .tasks import Task, as_task, registry_for

ENQUEUE_OPTIONS = ("_job_id", "_queue_name", "_defer_until", "_defer_by", "_expires", "_job_try")
EXPIRES_EXTRA_MS = 86_400_000  # arq's default: a job not started within a day of its run time expires

# arq's enqueue_job in one round trip: refuse an id whose job or result exists, else store and queue it.
# It also notes the queue's name in arq:queues, so operators can list the queues that exist, and, for a job due
# now, pushes a token to the queue's notify list, which wakes an idle worker at once instead of at its next poll.
# The keys are built in the script from arq's prefixes (one Redis server, no Cluster): fewer arguments to send.
# ARGV: expiry (ms), payload, score, job id, queue name, due now (1/0).
_ENQUEUE_LUA = """
local job = 'JOB' .. ARGV[4]
if redis.call('EXISTS', job, 'RESULT' .. ARGV[4]) > 0 then return 0 end
redis.call('PSETEX', job, ARGV[1], ARGV[2])
redis.call('ZADD', 'QUEUE' .. ARGV[5], ARGV[3], ARGV[4])
redis.call('SADD', 'QUEUES', ARGV[5])
if ARGV[6] == '1' then
  local notify = 'NOTIFY' .. ARGV[5]
  redis.call('RPUSH', notify, '1')
  redis.call('LTRIM', notify, -NOTIFY_CAP, -1)
end
return 1
"""
for _name, _value in {
    "NOTIFY_CAP": str(keys.NOTIFY_CAP),
    "'JOB'": repr(keys.JOB_PREFIX),
    "'RESULT'": repr(keys.RESULT_PREFIX),
    "'QUEUES'": repr(keys.QUEUES_KEY),
    "'QUEUE'": repr(keys.QUEUE_PREFIX),
    "'NOTIFY'": repr(keys.NOTIFY_PREFIX),
}.items():
    _ENQUEUE_LUA = _ENQUEUE_LUA.replace(_name, _value)
BATCH = 1000  # jobs per round trip in enqueue_many


class JobStatus(StrEnum):
    """Where a job is; ``failed`` is a finished job whose last try did not succeed."""

    queued = "queued"
    deferred = "deferred"
    in_progress = "in_progress"
    complete = "complete"
    failed = "failed"
    not_found = "not_found"


class Client:
    """Owns one Redis pool and enqueues through it; the module-level ``enqueue`` uses one per event loop."""

    def __init__(self, settings: Settings | None = None, *, redis: ArqRedis | None = None) -> None:
        self.settings = settings or get_settings()
        self._redis = redis
        self._enqueue_script: AsyncScript | None = None
        self._closed = False
        # The loop's default client hands out Jobs that look the default up again, so a handle kept past
        # close() uses the next pool instead of reopening this one.
        self._is_default = False

    @property
    def redis(self) -> ArqRedis:
        if self._closed:
            raise ScalrQueueError("this Client is closed; create a new one (or use the module-level enqueue)")
        if self._redis is None:
            # No per-read socket timeout: every call is bounded as a whole by redis_call (one timer, not three).
            self._redis = create_redis(self.settings, socket_timeout=0)
        return self._redis

    async def close(self) -> None:
        self._closed = True
        if self._redis is not None:
            redis, self._redis, self._enqueue_script = self._redis, None, None
            await redis.aclose(close_connection_pool=True)

    def job(self, job_id: str, queue: str | None = None) -> Job:
        return Job(job_id, queue, client=None if self._is_default else self)

    def resolve(self, task: str | Callable[..., Any]) -> tuple[str, Task[..., Any] | None]:
        """The task name and, where known, the task itself (passed in, or from ``SCALR_QUEUE_TASKS``)."""
        if not isinstance(task, str):
            resolved = as_task(task)
            return resolved.name, resolved
        if self.settings.tasks:
            return task, registry_for(self.settings.tasks).get(task)
        return task, None

    def _prepare(
        self, task: str | Callable[..., Any], kwargs: dict[str, Any], default_queue: str | None
    ) -> _Prepared:
        """Every check and the payload, before anything is written; ``kwargs`` may hold enqueue options."""
        options = {name: kwargs.pop(name) for name in ENQUEUE_OPTIONS if name in kwargs}
        name, known = self.resolve(task)
        _reject_unknown_options(kwargs, known)
        if known is not None:
            known.signature.check(kwargs)
        defer_until, defer_by = options.get("_defer_until"), options.get("_defer_by")
        if defer_until is not None and defer_by is not None:
            raise TaskArgumentsError("pass _defer_until or _defer_by, not both")
        queue = (
            options.get("_queue_name")
            or default_queue
            or (known.options.queue if known else None)
            or self.settings.name
        )
        now_ms = int(time.time() * 1000)
        payload = wire.job_payload(name, kwargs, options.get("_job_try"), now_ms)
        if len(payload) > self.settings.max_payload:
            raise PayloadTooLargeError(
                f"the payload of task {name!r} is {len(payload):,} bytes, over the {self.settings.max_payload:,}-byte "
                "limit (SCALR_QUEUE_MAX_PAYLOAD): pass ids and let the task load the data, not the data itself"
            )
        score = now_ms
        if defer_until is not None:
            score = int(defer_until.timestamp() * 1000)
        elif defer_by is not None:
            score = now_ms + _to_ms(defer_by)
        expires = options.get("_expires")
        expires_ms = _to_ms(expires) if expires is not None else max(score - now_ms, 0) + EXPIRES_EXTRA_MS
        job_id = options.get("_job_id") or os.urandom(16).hex()  # like uuid4().hex, a little cheaper
        return _Prepared(
            name, known, keys.queue_name(queue), job_id, payload, score, expires_ms, score <= now_ms
        )

    def _store(self, job: _Prepared, pipe: Pipeline | Redis | None = None) -> Awaitable[Any]:
        if self._enqueue_script is None:
            self._enqueue_script = self.redis.register_script(_ENQUEUE_LUA)
        return self._enqueue_script(
            args=[job.expires_ms, job.payload, job.score, job.job_id, job.queue, 1 if job.due_now else 0],
            client=pipe,
        )

    async def enqueue(
        self,
        task: str | Callable[..., Any],
        /,
        *,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: float | timedelta | None = None,
        _expires: float | timedelta | None = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> Job | None:
        """Queue ``task`` with keyword arguments; None when a job with ``_job_id`` already exists."""
        options = {
            "_job_id": _job_id,
            "_defer_until": _defer_until,
            "_defer_by": _defer_by,
            "_expires": _expires,
            "_job_try": _job_try,
        }
        job = self._prepare(
            task, {**kwargs, **{k: v for k, v in options.items() if v is not None}}, _queue_name
        )
        if self.settings.mode == "sync":
            return await inline.run(self, job.name, job.known, job.payload, job.job_id, job.queue)
        if self.settings.wait_replicas:
            return (await self._store_replicated([job]))[0]
        async with redis_call(self.settings):
            created = await self._store(job)
        return self.job(job.job_id, job.queue) if created else None

    async def _store_replicated(self, jobs: list[_Prepared]) -> list[Job | None]:
        """Store, then ``WAIT`` on the same connection (WAIT counts that connection's writes) for the replicas."""
        wanted, timeout_s = self.settings.wait_replicas, self.settings.wait_timeout
        async with redis_call(self.settings):
            connection = self.redis.client()  # one connection for the writes and the WAIT that follows them
            try:
                created = [await self._store(job, connection) for job in jobs]
                acknowledged = int(await connection.execute_command("WAIT", wanted, int(timeout_s * 1000)))  # type: ignore[no-untyped-call]
            finally:
                await connection.aclose()
        stored = [job for job, done in zip(jobs, created, strict=True) if done]
        if stored and acknowledged < wanted:
            raise NotReplicatedError([job.job_id for job in stored], wanted, acknowledged, timeout_s)
        return [
            self.job(job.job_id, job.queue) if done else None for job, done in zip(jobs, created, strict=True)
        ]

    async def enqueue_many(
        self,
        jobs: Iterable[tuple[str | Callable[..., Any], Mapping[str, Any]]],
        *,
        _queue_name: str | None = None,
    ) -> list[Job | None]:
        """Queue many jobs in a few round trips (one per ``BATCH`` jobs); each gets ``enqueue``'s checks first.

        ``jobs`` holds ``(task, {arguments})`` pairs; the arguments may carry enqueue options (``_job_id``,
        ``_defer_by`` ...). Nothing is written if any job fails its checks. Returns one Job per pair, in order,
        ``None`` where the ``_job_id`` already existed.
        """
        prepared = [self._prepare(task, dict(kwargs), _queue_name) for task, kwargs in jobs]
        if self.settings.mode == "sync":
            return [await inline.run(self, p.name, p.known, p.payload, p.job_id, p.queue) for p in prepared]
        created: list[Any] = []
        wait = self.settings.wait_replicas
        for start in range(0, len(prepared), BATCH):
            batch = prepared[start : start + BATCH]
            async with redis_call(self.settings), self.redis.pipeline(transaction=False) as pipe:
                for job in batch:
                    await self._store(job, pipe)  # queued on the pipeline: sent with execute()
                if wait:  # the pipeline's own connection: WAIT counts the writes just sent
                    pipe.execute_command("WAIT", wait, int(self.settings.wait_timeout * 1000))
                results = await pipe.execute()
            if wait:
                acknowledged = int(results.pop())
                stored = [job.job_id for job, done in zip(batch, results, strict=True) if done]
                if stored and acknowledged < wait:
                    raise NotReplicatedError(stored, wait, acknowledged, self.settings.wait_timeout)
            created += results
        return [
            self.job(p.job_id, p.queue) if done else None for p, done in zip(prepared, created, strict=True)
        ]


@dataclass(frozen=True)
class _Prepared:
    name: str
    known: Task[..., Any] | None
    queue: str
    job_id: str
    payload: bytes
    score: int
    expires_ms: int
    due_now: bool


class Job:
    """A handle on one job; ``Job(job_id)`` rebuilds it from an id (say, one a client sent back)."""

    __slots__ = ("_client", "job_id", "queue")

    def __init__(self, job_id: str, queue: str | None = None, *, client: Client | None = None) -> None:
        self.job_id = job_id
        self.queue = keys.queue_name(queue) if queue else None
        self._client = client

    def __repr__(self) -> str:
        return f"<Job {self.job_id} queue={self.queue or 'default'}>"

    @property
    def client(self) -> Client:
        return self._client or default_client()

    async def status(self) -> JobStatus:
        client = self.client
        if client.settings.mode == "sync":
            outcome = inline.outcome(self.job_id)
            if outcome is None:
                return JobStatus.not_found
            return JobStatus.complete if outcome.success else JobStatus.failed
        queue_key = keys.queue_key(self.queue or client.settings.name)
        async with redis_call(client.settings), client.redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.result_key(self.job_id))
            pipe.exists(keys.in_progress_key(self.job_id))
            pipe.zscore(queue_key, self.job_id)
            result, in_progress, score = await pipe.execute()
        if result is not None:
            return JobStatus.complete if wire.loads(result).get("s") else JobStatus.failed
        if in_progress:
            return JobStatus.in_progress
        if score is not None:
            return JobStatus.deferred if score > time.time() * 1000 else JobStatus.queued
        return JobStatus.not_found

    async def info(self) -> dict[str, Any] | None:
        """The stored result record if finished, else the queued job record; None if Redis has neither."""
        client = self.client
        if client.settings.mode == "sync":
            outcome = inline.outcome(self.job_id)
            return outcome.record if outcome else None
        async with redis_call(client.settings):
            raw = await client.redis.get(keys.result_key(self.job_id)) or await client.redis.get(
                keys.job_key(self.job_id)
            )
        return wire.loads(raw) if raw else None

    async def result(self, timeout: float | None = None, *, poll_interval: float = 0.2) -> Any:
        """Wait for the job and return its result (JSON data); raise JobFailedError if it failed.

        Raises TimeoutError after ``timeout`` seconds, JobNotFoundError if Redis knows nothing of the job.
        """
        client = self.client
        if client.settings.mode == "sync":
            outcome = inline.outcome(self.job_id)
            if outcome is None:
                raise JobNotFoundError(f"no job {self.job_id} ran in this process (SCALR_QUEUE_MODE=sync)")
            return _unpack_result(self.job_id, outcome.record)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            async with redis_call(client.settings), client.redis.pipeline(transaction=True) as pipe:
                pipe.get(keys.result_key(self.job_id))
                pipe.exists(keys.job_key(self.job_id))
                raw, exists = await pipe.execute()
            if raw is not None:
                return _unpack_result(self.job_id, wire.loads(raw))
            if not exists:
                raise JobNotFoundError(
                    f"job {self.job_id} is not queued, running or finished with a kept result "
                    "(never enqueued, or its result expired)"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} did not finish within {timeout:g} s")
            wait = delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
            await asyncio.sleep(wait)
            delay = min(delay * 2, poll_interval)


def _unpack_result(job_id: str, record: dict[str, Any]) -> Any:
    if record.get("s"):
        return record.get("r")
    error = record.get("r")
    if isinstance(error, dict):
        raise JobFailedError(
            job_id, str(error.get("type")), str(error.get("message", "")), error.get("traceback")
        )
    raise JobFailedError(job_id, "Error", str(error))


def _reject_unknown_options(kwargs: dict[str, Any], known: Task[..., Any] | None) -> None:
    """A misspelt ``_defer_by`` would otherwise reach the task as an argument."""
    for name in kwargs:
        if name.startswith("_") and not (known and name in known.signature.names):
            close = difflib.get_close_matches(name, ENQUEUE_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TaskArgumentsError(
                f"unknown enqueue option {name!r}{hint} (options are {', '.join(ENQUEUE_OPTIONS[:-1])})"
            )


def _to_ms(value: float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return round(seconds * 1000)


# One default client per running event loop: pools must not cross loops (pytest, TestClient, scripts).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = weakref.WeakKeyDictionary()


def default_client() -> Client:
    """The client of the running event loop, created on first use from the settings."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = Client()
        client._is_default = True
    return client


def set_default_client(client: Client) -> None:
    """Make ``client`` the one module-level ``enqueue`` uses on the running loop (FastAPI's lifespan does)."""
    client._is_default = True
    _clients[asyncio.get_running_loop()] = client


async def close() -> None:
    """Close the running loop's default pool; the next enqueue opens a new one."""
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.close()


async def enqueue_many(
    jobs: Iterable[tuple[str | Callable[..., Any], Mapping[str, Any]]], *, _queue_name: str | None = None
) -> list[Job | None]:
    """Queue many ``(task, {arguments})`` pairs in a few round trips; see ``Client.enqueue_many``."""
    return await default_client().enqueue_many(jobs, _queue_name=_queue_name)


async def enqueue(
    task: str | Callable[..., Any],
    /,
    *,
    _job_id: str | None = None,
    _queue_name: str | None = None,
    _defer_until: datetime | None = None,
    _defer_by: float | timedelta | None = None,
    _expires: float | timedelta | None = None,
    **kwargs: Any,
) -> Job | None:
    """Queue a job by task name or function; returns its Job, or None if ``_job_id`` already exists.

    Arguments are keyword-only JSON-able values. A value that is not JSON-able, an unknown task (with
    ``SCALR_QUEUE_TASKS`` set or a function passed) or arguments that do not fit the task raise at once.
    """
    return await default_client().enqueue(
        task,
        _job_id=_job_id,
        _queue_name=_queue_name,
        _defer_until=_defer_until,
        _defer_by=_defer_by,
        _expires=_expires,
        **kwargs,
    )
