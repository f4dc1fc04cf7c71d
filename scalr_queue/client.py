"""The producer side: ``enqueue`` and ``Job``, on one shared connection pool per running event loop.

Everything is checked before anything is written, with the worker's own rules: the task name, every enqueue
option, the arguments against the task's signature (from ``SCALR_QUEUE_TASKS``, a function passed in, or the
registry the workers published) and as JSON. What the producer accepts, a worker can run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from typing_extensions import TypeVar

from . import keys, metrics, tracing
from ._backends import InlineBackend, Prepared, RedisBackend, Stored, backend_for
from ._ids import new_job_id
from ._progress import Progress
from ._state import STATE
from .config import QUEUE_NAME_PATTERN, Settings, get_settings
from .connection import REDIS_DOWN_ERRORS
from .exceptions import (
    JobFailedError,
    JobNotFoundError,
    PayloadTooLargeError,
    ResultTimeoutError,
    ScalrQueueError,
    TaskArgumentsError,
    UnknownTaskError,
)
from .records import MAX_TRY, JobRecord, JobStatus, ResultRecord, valid_name
from .registry import PublishedRegistry, PublishedTask
from .tasks import Task, as_task, registry_for

if TYPE_CHECKING:
    from .workflows import Call

ENQUEUE_OPTIONS = (
    "_job_id",
    "_queue_name",
    "_defer_until",
    "_defer_by",
    "_expires",
    "_priority",
    "_depends_on",
    "_job_try",
)
_OPTION_NAMES = frozenset(ENQUEUE_OPTIONS)
EXPIRES_EXTRA_MS = 86_400_000  # arq's default: a job not started within a day of its run time expires
MAX_DELAY_S = 10 * 365 * 86_400  # deferrals and expiries beyond ten years are mistakes, not plans
SUB_MS_STEPS = 4096  # a score near 1.7e12 ms holds 1/4096 ms exactly
VALID_NAMES_KEPT = 1000
_order = itertools.count()
ResultT = TypeVar("ResultT", default=Any)  # a Job's result type
_JOB_ID = re.compile(r"[^\x00-\x1f\x7f]{1,512}")

__all__ = ["Client", "Job", "JobStatus", "close", "default_client", "enqueue", "enqueue_many"]


class Client:
    """Owns one Redis pool (or, in sync mode, runs jobs inline) and enqueues through it."""

    def __init__(self, settings: Settings | None = None, *, redis: ArqRedis | None = None) -> None:
        self.settings = settings or get_settings()
        self.backend: RedisBackend | InlineBackend = backend_for(self.settings, redis)
        self._closed = False
        # The loop's default client hands out Jobs that look the default up again, so a handle kept past
        # close() uses the next pool instead of reopening this one.
        self._is_default = False
        self._propagate = self.settings.propagate_names
        self._valid_names: set[str] = set()  # task names already checked (its regex sat on every enqueue)

    @property
    def redis(self) -> ArqRedis:
        if self._closed:
            raise ScalrQueueError("this Client is closed; create a new one (or use the module-level enqueue)")
        if not isinstance(self.backend, RedisBackend):
            raise ScalrQueueError("SCALR_QUEUE_MODE=sync: this client has no Redis")
        return self.backend.redis

    async def close(self) -> None:
        self._closed = True
        await self.backend.close()

    def job(self, job_id: str, queue: str | None = None) -> Job:
        return Job(job_id, queue, client=None if self._is_default else self)

    def resolve(self, task: str | Callable[..., Any]) -> tuple[str, Task[..., Any] | None]:
        """The task name and, where known, the task itself (passed in, or from ``SCALR_QUEUE_TASKS``)."""
        if not isinstance(task, str):
            resolved = as_task(task)
            return resolved.name, resolved
        if task not in self._valid_names:
            if not valid_name(task):
                raise UnknownTaskError(
                    f"{_shown(task)} is not a task name: 1-200 characters without whitespace or control characters"
                )
            if len(self._valid_names) < VALID_NAMES_KEPT:
                self._valid_names.add(task)
        if self.settings.tasks:
            return task, registry_for(self.settings.tasks).get(task)
        return task, None

    async def _refresh(self, registry: PublishedRegistry) -> None:
        """Read what the workers published (lazily, then now and then); Redis trouble shows at the write."""
        async with _quiet_redis_call(self.settings):
            await registry.refresh(self.redis)

    async def prepare(
        self,
        task: str | Callable[..., Any],
        kwargs: dict[str, Any],
        default_queue: str | None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> Prepared:
        """Every check and the payload, before anything is written; ``kwargs`` may hold enqueue options.

        The options first (they are the caller's, whatever the task), then the task and its arguments. ``meta``
        joins the record's own additions (``batch()`` names the job's batch there)."""
        options = {name: kwargs.pop(name) for name in _OPTION_NAMES.intersection(kwargs)} if kwargs else None
        now_ms = int(time.time() * 1000)
        checked = _Options.check(options, now_ms) if options else _Options.plain(now_ms)
        name, known = self.resolve(task)
        _reject_unknown_options(kwargs, known)
        published = None  # what the workers published for the task, when nothing local knows it
        if known is None and isinstance(self.backend, RedisBackend):
            registry = self.backend.published
            if registry.stale(name):
                await self._refresh(registry)
            published = registry.lookup(name) if registry.read else None
        if known is not None:
            known.signature.check(kwargs)
        elif published is not None:
            published.check(kwargs)
        queue = (
            checked.queue
            or default_queue
            or (known.options.queue if known else published.queue if published else None)
            or self.settings.name
        )
        extra = tracing.carry(self._propagate)  # trace and logging context: in meta, never in kwargs
        if checked.priority:
            extra["priority"] = checked.priority
        if meta:
            extra.update(meta)
        record = JobRecord(task=name, kwargs=kwargs, enqueue_ms=now_ms, job_try=checked.job_try, meta=extra)
        payload = record.encode()  # every argument checked as JSON first
        unique_key, unique_ttl_ms = _uniqueness(name, known, published, kwargs, payload, checked.expires_ms)
        if unique_key is not None:
            record = dataclasses.replace(record, meta={**record.meta, "unique": unique_key})
            payload = record.encode()
        if len(payload) > self.settings.max_payload:
            raise PayloadTooLargeError(
                f"the payload of task {name!r} is {len(payload):,} bytes, over the {self.settings.max_payload:,}-byte "
                "limit (SCALR_QUEUE_MAX_PAYLOAD): pass ids and let the task load the data, not the data itself"
            )
        return Prepared(
            name,
            known,
            keys.queue_name(queue),
            checked.job_id or new_job_id(),
            record,
            payload,
            checked.score,
            now_ms,
            checked.expires_ms,
            unique_key,
            unique_ttl_ms,
            checked.priority,
            checked.depends_on,
            fresh=not options and unique_key is None,
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
        _priority: int | None = None,
        _depends_on: Iterable[Job | str] | None = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> Job | None:
        """Queue ``task`` with keyword arguments; None when a job with ``_job_id`` already exists."""
        options = (_job_id, _queue_name, _defer_until, _defer_by, _expires, _priority, _depends_on, _job_try)
        if options.count(None) < len(options):  # kwargs is this call's own dict: the options join it
            kwargs.update(
                (name, value)
                for name, value in zip(ENQUEUE_OPTIONS, options, strict=True)
                if value is not None
            )
        job = await self.prepare(task, kwargs, None)
        return self.handle_for(job, await self.backend.store(job))

    def handle_for(self, job: Prepared, stored: Stored) -> Job | None:
        """The caller's handle: the new job, the unique job already waiting (deduplicated), or None for an
        existing ``_job_id`` (arq's rule)."""
        if stored is True:
            metrics.record_enqueued(job.queue, job.name)
            return self.job(job.job_id, job.queue)
        if isinstance(stored, str):
            handle = self.job(stored, job.queue)
            handle.deduplicated = True
            return handle
        return None

    async def enqueue_many(
        self,
        jobs: Iterable[tuple[str | Callable[..., Any], Mapping[str, Any]] | Call],
        *,
        _queue_name: str | None = None,
    ) -> list[Job | None]:
        """Queue many jobs in a few round trips (one per 1,000 jobs); each gets ``enqueue``'s checks first.

        ``jobs`` holds ``(task, {arguments})`` pairs or ``call(task, ...)`` descriptions; the arguments may carry
        enqueue options (``_job_id``, ``_defer_by``, ``_priority`` ...). Nothing is written if any job fails its checks. Returns one Job per pair, in order,
        ``None`` where the ``_job_id`` already existed.
        """
        default_queue = _queue_option(_queue_name)
        prepared = [await self.prepare(task, dict(kwargs), default_queue) for task, kwargs in jobs]
        if not prepared:
            return []
        stored = await self.backend.store_many(prepared)
        return [self.handle_for(job, outcome) for job, outcome in zip(prepared, stored, strict=True)]


class Job(Generic[ResultT]):
    """A handle on one job; ``Job(job_id)`` rebuilds it from an id (say, one a client sent back). ``Job[R]``: a
    job whose result is an ``R`` (a typed task's ``enqueue`` says so); plain ``Job`` is ``Job[Any]``."""

    __slots__ = ("_client", "deduplicated", "job_id", "queue")

    def __init__(self, job_id: str, queue: str | None = None, *, client: Client | None = None) -> None:
        self.job_id = job_id
        self.queue = keys.queue_name(queue) if queue else None
        self._client = client
        self.deduplicated = False  # True: a unique job was waiting already, and this is its handle

    def __repr__(self) -> str:
        return f"<Job {self.job_id} queue={self.queue or 'default'}>"

    @property
    def client(self) -> Client:
        return self._client or default_client()

    async def status(self) -> JobStatus:
        client = self.client
        return await client.backend.status(self.job_id, self.queue or client.settings.name)

    async def progress(self) -> Progress | None:
        """The job's last ``progress(ctx, fraction, message)`` report, None if it made none (or it expired)."""
        return await self.client.backend.progress(self.job_id)

    async def abort(self) -> bool:
        """Abort the job: a queued or deferred job never starts; a running one is cancelled within about a second
        on whichever worker runs it. Either way it is not retried, its status reads ``aborted`` and the failed
        store keeps it with reason ``aborted``. False if it had finished already (complete or failed): nothing
        changes. Raises JobNotFoundError if Redis knows nothing of the job."""
        client = self.client
        state = await client.backend.abort(self.job_id, self.queue or client.settings.name)
        if state == "not_found":
            raise JobNotFoundError(
                f"job {self.job_id} is not queued, running or finished with a kept result or failure record"
            )
        return state != "finished"

    async def info(self) -> dict[str, Any] | None:
        """The stored result record if finished, else the queued job record; None if Redis has neither."""
        result, job, _ = await self.client.backend.record(self.job_id)
        if result is not None:
            return {**_as_arq_dict(result), "id": result.job_id}
        return job.to_dict() if job is not None else None

    async def result(self, timeout: float | None = None, *, poll_interval: float = 0.2) -> ResultT:
        """Wait for the job and return its result (JSON data); raise JobFailedError if it failed.

        Raises ResultTimeoutError after ``timeout`` seconds, JobNotFoundError if Redis knows nothing of the job.
        """
        backend = self.client.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            result, _, exists = await backend.record(self.job_id)
            if result is not None:
                value: ResultT = _unpack_result(result)
                return value
            if not exists:
                raise JobNotFoundError(
                    f"job {self.job_id} is not queued, running or finished with a kept result "
                    "(never enqueued, or its result expired)"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(f"job {self.job_id} did not finish within {timeout:g} s")
            wait = delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
            await asyncio.sleep(wait)
            delay = min(delay * 2, poll_interval)


def _as_arq_dict(result: ResultRecord) -> dict[str, Any]:
    return {
        "t": result.job_try,
        "f": result.task,
        "a": list(result.args),
        "k": result.kwargs,
        "et": result.enqueue_ms,
        "s": result.success,
        "r": result.result,
        "st": result.start_ms,
        "ft": result.finish_ms,
        "q": result.queue,
    }


def _unpack_result(record: ResultRecord) -> Any:
    if record.success:
        return record.result
    error = record.error or {}
    raise JobFailedError(
        record.job_id, str(error.get("type")), str(error.get("message", "")), error.get("traceback")
    )


@dataclass(slots=True)
class _Options:
    """The enqueue options, checked: what each must be is said in its error."""

    queue: str | None
    job_id: str | None
    job_try: int | None
    score: float
    expires_ms: int
    priority: int
    depends_on: tuple[str, ...] = ()

    @classmethod
    def plain(cls, now_ms: int) -> _Options:
        """No options given: due now, on the task's queue, expiring a day after (``check({})``, quicker)."""
        return cls(None, None, None, _score({}, now_ms), EXPIRES_EXTRA_MS, 0)

    @classmethod
    def check(cls, options: dict[str, Any], now_ms: int) -> _Options:
        score = _score(options, now_ms)
        expires = options.get("_expires")
        expires_ms = (
            _duration_ms("_expires", expires, positive=True)
            if expires is not None
            else max(int(score) - now_ms, 0) + EXPIRES_EXTRA_MS
        )
        job_try = options.get("_job_try")
        if job_try is not None and (type(job_try) is not int or not 1 <= job_try <= MAX_TRY):
            raise TaskArgumentsError(
                f"_job_try must be a whole number of tries from 1, not {_shown(job_try)}"
            )
        job_id = options.get("_job_id")
        if job_id is not None and (not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id)):
            raise TaskArgumentsError(
                f"_job_id must be a string of 1-512 characters without control characters, not {_shown(job_id)}"
            )
        priority = options.get("_priority", 0)
        if priority is None:
            priority = 0
        if type(priority) is not int or priority not in keys.PRIORITIES:
            raise TaskArgumentsError(
                f"_priority must be a whole number from 0 (claimed first, the default) to 9, not {_shown(priority)}"
            )
        depends_on = _depends_on_option(options.get("_depends_on"), job_id)
        return cls(
            _queue_option(options.get("_queue_name")),
            job_id,
            job_try,
            score,
            expires_ms,
            priority,
            depends_on,
        )


def _uniqueness(
    name: str,
    known: Task[..., Any] | None,
    published: PublishedTask | None,
    kwargs: dict[str, Any],
    payload: bytes,
    expires_ms: int,
) -> tuple[str | None, int]:
    """The unique key of a unique task's job and how long it may hold (ms), or ``(None, 0)``.

    The id is the task's ``unique_id(kwargs)``, or else a hash of the kwargs as stored (so ``{"a": 1, "b": 2}``
    and ``{"b": 2, "a": 1}`` are one job). Held for ``unique_for``, or, without it, as long as the job may wait."""
    if known is not None:
        if not known.options.unique:
            return None, 0
        unique_for, make_id = known.options.unique_for_s, known.options.unique_id
    elif published is not None and published.unique:
        if published.unique_custom_id:
            raise TaskArgumentsError(
                f"task {name!r} makes its unique id with a function (unique_id=), which only its own code has: "
                "enqueue it by function, or set SCALR_QUEUE_TASKS to the module that exports it"
            )
        unique_for, make_id = published.unique_for_s, None
    else:
        return None, 0
    if make_id is not None:
        unique_id = make_id(dict(kwargs))
        if not isinstance(unique_id, str) or not unique_id:
            raise TaskArgumentsError(
                f"task {name!r}: its unique_id function returned {_shown(unique_id)}, not a non-empty string"
            )
    else:
        stored = json.loads(payload).get("k", {})
        canonical = json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        unique_id = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    ttl_ms = int(unique_for * 1000) if unique_for is not None else expires_ms
    return keys.unique_key(name, unique_id), max(ttl_ms, 1)


def _reject_unknown_options(kwargs: dict[str, Any], known: Task[..., Any] | None) -> None:
    """A misspelt ``_defer_by`` would otherwise reach the task as an argument."""
    for name in kwargs:
        if name.startswith("_") and not (known and name in known.signature.names):
            close = difflib.get_close_matches(name, ENQUEUE_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TaskArgumentsError(
                f"unknown enqueue option {name!r}{hint} (options are {', '.join(ENQUEUE_OPTIONS[:-1])})"
            )


MAX_DEPENDENCIES = 1000


def _depends_on_option(value: Any, job_id: str | None) -> tuple[str, ...]:
    """``_depends_on``: Jobs or job ids (deduplicated, in order); the job may not depend on itself."""
    if value is None:
        return ()
    if isinstance(value, Job | str) or not isinstance(value, list | tuple | set | frozenset):
        raise TaskArgumentsError(f"_depends_on must be a list of Jobs or job ids, not {_shown(value)}")
    ids: dict[str, None] = {}
    for item in value:
        dep = item.job_id if isinstance(item, Job) else item
        if not isinstance(dep, str) or not _JOB_ID.fullmatch(dep):
            raise TaskArgumentsError(f"_depends_on holds {_shown(item)}: each must be a Job or a job id")
        ids[dep] = None
    if job_id is not None and job_id in ids:
        raise TaskArgumentsError(f"job {job_id!r} cannot depend on itself")
    if len(ids) > MAX_DEPENDENCIES:
        raise TaskArgumentsError(f"_depends_on holds {len(ids)} jobs, over the {MAX_DEPENDENCIES} limit")
    return tuple(ids)


def _queue_option(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not QUEUE_NAME_PATTERN.fullmatch(value) or len(value) > 200:
        raise TaskArgumentsError(
            f"_queue_name must be a queue name (letters, digits and _ . : - only), not {_shown(value)}"
        )
    return value


def _score(options: dict[str, Any], now_ms: int) -> float:
    """The job's run-at score (ms). A fraction of a millisecond from a per-process counter keeps jobs queued in
    the same millisecond in the order they were queued (the queue orders equal scores by id, which is random);
    a job due now is scored just below now (it is due at once), a deferred one just after its time (never
    before it)."""
    order = next(_order) % SUB_MS_STEPS / SUB_MS_STEPS
    defer_until, defer_by = options.get("_defer_until"), options.get("_defer_by")
    if defer_until is not None and defer_by is not None:
        raise TaskArgumentsError("pass _defer_until or _defer_by, not both")
    if defer_until is not None:
        if not isinstance(defer_until, datetime):
            raise TaskArgumentsError(f"_defer_until must be a datetime, not {_shown(defer_until)}")
        score = int(defer_until.timestamp() * 1000)
        if score - now_ms > MAX_DELAY_S * 1000:
            raise TaskArgumentsError(f"_defer_until {defer_until.isoformat()} is more than ten years away")
    elif defer_by is not None:
        score = now_ms + _duration_ms("_defer_by", defer_by, positive=False)
    else:
        score = now_ms
    return score + order if score > now_ms else score - 1 + order


def _duration_ms(option: str, value: Any, *, positive: bool) -> int:
    """A duration option in ms: a finite number of seconds (or a timedelta) within ten years."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TaskArgumentsError(f"{option} must be seconds (a number) or a timedelta, not {_shown(value)}")
    if not math.isfinite(seconds) or abs(seconds) > MAX_DELAY_S:
        raise TaskArgumentsError(
            f"{option} must be a finite number of seconds within ten years, not {value!r}"
        )
    if positive and seconds <= 0:
        raise TaskArgumentsError(f"{option} must be more than 0 seconds, not {value!r}")
    return round(seconds * 1000)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


class _quiet_redis_call:
    """Reading the published registry must not make an enqueue fail: Redis trouble shows at the write."""

    def __init__(self, settings: Settings) -> None:
        self._timeout = asyncio.timeout(settings.redis_timeout)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool:
        try:
            await self._timeout.__aexit__(*exc)
        except TimeoutError:
            return True
        return exc[1] is not None and isinstance(exc[1], (*REDIS_DOWN_ERRORS, RedisError))


def default_client() -> Client:
    """The client of the running event loop, created on first use from the settings (one per loop: pools must
    not cross loops, as in pytest, TestClient and scripts)."""
    loop = asyncio.get_running_loop()
    client: Client | None = STATE.clients.get(loop)
    if client is None:
        client = STATE.clients[loop] = Client()
        client._is_default = True
    return client


def set_default_client(client: Client) -> None:
    """Make ``client`` the one module-level ``enqueue`` uses on the running loop (FastAPI's lifespan does)."""
    client._is_default = True
    STATE.clients[asyncio.get_running_loop()] = client


async def close() -> None:
    """Close the running loop's default pool; the next enqueue opens a new one."""
    loop = asyncio.get_running_loop()
    client: Client | None = STATE.clients.pop(loop, None)
    if client is not None:
        await client.close()


async def enqueue_many(
    jobs: Iterable[tuple[str | Callable[..., Any], Mapping[str, Any]] | Call],
    *,
    _queue_name: str | None = None,
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
    _priority: int | None = None,
    _depends_on: Iterable[Job | str] | None = None,
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
        _priority=_priority,
        _depends_on=_depends_on,
        **kwargs,
    )
