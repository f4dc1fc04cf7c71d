"""Job descriptions and repeating jobs: ``call(task, **kwargs)`` and ``every(seconds, task, **kwargs)``.

A ``Call`` is a job not yet queued, checked when it is built as ``enqueue`` checks (the task name, every enqueue
option, the arguments against the task's signature where the task is known, JSON); ``enqueue_many`` takes
Calls, and ``await c.enqueue()`` queues one. ``every`` is an arq ``CronJob`` whose runs fall on the multiples of
its period (since the epoch), so every worker computes the same ticks and one Redis ``SET NX`` per tick
(``arq:cron:<name>:<tick>``) lets exactly one of them queue each run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from arq.cron import CronJob

from ._ids import new_job_id
from .client import ENQUEUE_OPTIONS, Client, Job, _Options, _reject_unknown_options, _shown, default_client
from .config import get_settings
from .exceptions import PayloadTooLargeError, TaskArgumentsError, UnknownTaskError
from .records import JobRecord, JobStatus, valid_name
from .tasks import Task, as_task, registry_for

__all__ = ["Call", "Chain", "Every", "call", "chain", "check_job", "every"]


@dataclass(frozen=True, slots=True)
class Call:
    """A job described, not queued: ``(task, kwargs)``, where ``kwargs`` may hold enqueue options."""

    task: str | Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.task if isinstance(self.task, str) else as_task(self.task).name

    def __iter__(self) -> Iterator[Any]:
        """``task, kwargs = c``: a Call is an ``enqueue_many`` pair."""
        yield self.task
        yield dict(self.kwargs)

    async def enqueue(self, client: Client | None = None) -> Job | None:
        """Queue it (re-checked, with what the workers published); None if its ``_job_id`` exists."""
        (job,) = await (client or default_client()).enqueue_many([self])
        return job


def call(task: str | Callable[..., Any], /, **kwargs: Any) -> Call:
    """Describe a job without queuing it, checked as ``enqueue`` checks it: an unknown task (with
    ``SCALR_QUEUE_TASKS`` set, or a function passed), bad arguments or options, or a value that is not JSON raise
    here, with the same errors."""
    check_job(task, dict(kwargs))
    return Call(task, dict(kwargs))


def check_job(task: str | Callable[..., Any], kwargs: dict[str, Any]) -> tuple[str, Task[..., Any] | None]:
    """``enqueue``'s checks that need no Redis; returns the task name and the task where known."""
    settings = get_settings()
    options = {name: kwargs.pop(name) for name in ENQUEUE_OPTIONS if name in kwargs}
    checked = _Options.check(options, int(time.time() * 1000))
    known: Task[..., Any] | None
    if isinstance(task, str):
        if not valid_name(task):
            raise UnknownTaskError(
                f"{_shown(task)} is not a task name: 1-200 characters without whitespace or control characters"
            )
        known = registry_for(settings.tasks).get(task) if settings.tasks else None
        name = task
    else:
        known = as_task(task)
        name = known.name
    _reject_unknown_options(kwargs, known)
    if known is not None:
        known.signature.check(kwargs)
    payload = JobRecord(task=name, kwargs=kwargs, enqueue_ms=0, job_try=checked.job_try).encode()
    if len(payload) > settings.max_payload:
        raise PayloadTooLargeError(
            f"the payload of task {name!r} is {len(payload):,} bytes, over the {settings.max_payload:,}-byte limit "
            "(SCALR_QUEUE_MAX_PAYLOAD): pass ids and let the task load the data, not the data itself"
        )
    return name, known


@dataclass(repr=False)
@dataclass(frozen=True, slots=True)
class Chain:
    """The jobs of a chain, one per link, in order: each starts only after the one before it succeeded."""

    jobs: list[Job]

    async def statuses(self) -> list[JobStatus]:
        """Each link's status: ``waiting`` behind an unfinished link; a link after one that failed for good ends
        ``failed`` with reason ``dependency_failed`` without starting."""
        return [await job.status() for job in self.jobs]


async def chain(*calls: Call, client: Client | None = None) -> Chain:
    """Queue ``calls`` as a chain: link N+1 depends on link N (``_depends_on``), so each starts only after the
    previous one succeeded, and a link that fails for good stops the chain (the rest fail as dependency_failed).
    All links are queued in one round trip; each gets a random ``_job_id`` unless its call names one."""
    if not calls:
        raise TaskArgumentsError("chain() needs at least one call(...)")
    pairs: list[tuple[str | Callable[..., Any], dict[str, Any]]] = []
    previous: str | None = None
    client = client or default_client()
    for link in calls:
        if not isinstance(link, Call):
            raise TaskArgumentsError(f"chain() takes call(...) descriptions, not {_shown(link)}")
        kwargs = dict(link.kwargs)
        if "_depends_on" in kwargs:
            raise TaskArgumentsError("a chain link depends on the link before it: leave out _depends_on")
        job_id = kwargs.setdefault("_job_id", new_job_id())
        if previous is not None:
            kwargs["_depends_on"] = [previous]
        pairs.append((link.task, kwargs))
        previous = job_id
    chain_id = str(pairs[0][1]["_job_id"])  # the chain is named by its first link; each record says its place
    prepared = [
        await client.prepare(task, kwargs, None, meta={"chain": chain_id, "link": n, "links": len(pairs)})
        for n, (task, kwargs) in enumerate(pairs, 1)
    ]
    stored = await client.backend.store_many(prepared)
    jobs = [client.handle_for(job, outcome) for job, outcome in zip(prepared, stored, strict=True)]
    for number, job in enumerate(jobs, 1):
        if job is None:
            raise TaskArgumentsError(f"chain link {number}: a job with its _job_id exists already")
    return Chain([job for job in jobs if job is not None])


@dataclass(repr=False)
class Every(CronJob):
    """arq's CronJob, ticking at the multiples of ``period_s`` (since the epoch) instead of calendar fields; each
    run gets ``kwargs``."""

    period_s: float = 60.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def calculate_next(self, prev_run: datetime) -> None:
        """The first multiple of the period after ``prev_run``: every worker computes the same ticks, and a run
        late by a little does not move the ones after it (no drift)."""
        period_ms = round(self.period_s * 1000)
        prev_ms = int(prev_run.timestamp() * 1000)
        tick_ms = (prev_ms // period_ms + 1) * period_ms
        self.next_run = datetime.fromtimestamp(tick_ms / 1000, tz=prev_run.tzinfo)


def every(
    seconds: float | timedelta,
    task: Callable[..., Awaitable[Any]],
    /,
    *,
    _name: str | None = None,
    **kwargs: Any,
) -> Every:
    """A repeating job for a worker module's ``cron_jobs``: ``task(ctx, **kwargs)`` once per period across all
    workers, at the multiples of the period; after an outage, a missed period runs once, not once per tick.

    ``_name`` (default ``every:<task>:<seconds>``, plus a hash of the arguments if any) names the runs' task and
    their per-tick key (``arq:cron:<name>:<tick ms>``)."""
    period = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
    if isinstance(period, bool) or not isinstance(period, int | float) or not 0.001 <= period <= 366 * 86_400:
        raise TaskArgumentsError(
            f"every() needs a period from 1 ms to a year, in seconds, not {_shown(seconds)}"
        )
    known = as_task(task)
    for option in kwargs:
        if option.startswith("_"):
            raise TaskArgumentsError(
                f"every() takes the task's arguments only, not the enqueue option {option!r}"
            )
    check_job(task, dict(kwargs))
    name = _name
    if name is None:
        name = f"every:{known.name}:{period:g}"
        if kwargs:
            stored = json.loads(JobRecord(task=known.name, kwargs=kwargs, enqueue_ms=0).encode())["k"]
            digest = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:8]
            name = f"{name}:{digest}"
    return Every(
        name=name,
        coroutine=known.fn,  # type: ignore[arg-type]  # arq's WorkerCoroutine protocol: (ctx, **kwargs)
        month=None,
        day=None,
        weekday=None,
        hour=None,
        minute=None,
        second=None,
        microsecond=0,
        run_at_startup=False,
        unique=True,
        job_id=None,
        timeout_s=known.options.timeout_s,
        keep_result_s=0,
        keep_result_forever=False,
        max_tries=1,
        period_s=float(period),
        kwargs=dict(kwargs),
    )
