"""The overview, the workers and one job, read from Redis with a fixed number of round trips per page."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from arq.connections import ArqRedis

from .. import keys, timeline
from .._progress import Progress, decode_progress
from ..exceptions import UndecodableJobError
from ..failed import FailedJob, FailedStore
from ..records import JobRecord, JobStatus, ResultRecord
from ..stats import queue_counts
from . import _records as records

T = TypeVar("T")


@dataclass
class QueueRow:
    """One line of the overview."""

    name: str
    ready: int
    deferred: int
    in_progress: int
    failed: int
    paused: bool
    workers: int
    oldest_wait_s: float | None


@dataclass
class Overview:
    queues: list[QueueRow]
    chart: list[timeline.Minute]


async def known_queues(redis: ArqRedis) -> list[str]:
    """Queues something was enqueued to or a worker serves; names that are not text are shown escaped."""
    members: set[bytes] = await redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # typed sync | async
    return sorted(records.text(m) or "" for m in members)


async def overview(redis: ArqRedis, store: FailedStore) -> Overview:
    """Every queue's counts, and the last hour of outcomes summed over them."""
    names = await known_queues(redis)
    rows = [await queue_row(redis, store, name) for name in names]
    return Overview(queues=rows, chart=await timeline.last_hour(redis, names))


async def queue_row(redis: ArqRedis, store: FailedStore, name: str) -> QueueRow:
    """One queue's counts: one script, one pipeline and one count of its failed-store index."""
    counts = await queue_counts(redis, name)
    now_ms = time.time() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.paused_key(name))
        pipe.zcount(keys.workers_key(name), int(now_ms), "+inf")
        paused, live = await pipe.execute()
    oldest = counts.oldest_due_ms
    return QueueRow(
        name=name,
        ready=counts.queued,
        deferred=counts.deferred,
        in_progress=counts.in_progress,
        failed=await store.count(name),
        paused=bool(paused),
        workers=int(live),
        oldest_wait_s=None if oldest is None else max((now_ms - oldest) / 1000, 0.0),
    )


@dataclass
class WorkerRow:
    worker_id: str
    record: dict[str, Any] | None  # None: the heartbeat record is corrupt or gone
    deadline_ms: float


async def workers(redis: ArqRedis, queues: list[str]) -> list[WorkerRow]:
    """The live workers of these queues (heartbeat not run out), with their heartbeat records."""
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.zrangebyscore(keys.workers_key(name), now_ms, "+inf", withscores=True)
        per_queue = await pipe.execute()
    members = [(records.text(m) or "", float(score)) for found in per_queue for m, score in found]
    if not members:
        return []
    raws = await redis.mget([keys.worker_key(worker_id) for worker_id, _ in members])
    return [
        WorkerRow(worker_id=worker_id, record=records.worker_record(raw), deadline_ms=deadline)
        for (worker_id, deadline), raw in zip(members, raws, strict=True)
    ]


@dataclass
class Event:
    """One line of a job's timeline."""

    at_ms: float | None
    what: str


@dataclass
class JobView:
    """Everything Redis holds on one job, made safe to show."""

    job_id: str
    state: str
    queue: str | None = None
    task: str | None = None
    kwargs: Any = None
    tries: int | None = None
    max_tries: int | None = None
    result: Any = None
    has_result: bool = False
    error: dict[str, Any] | None = None
    failure: FailedJob | None = None
    worker: str | None = None
    run_at_ms: float | None = None
    lease_ms: int | None = None
    timeline: list[Event] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # what did not decode, with a preview
    progress: Progress | None = None  # the task's last progress report


async def job(redis: ArqRedis, job_id: str) -> JobView | None:
    """One job wherever it is (queued, deferred, running, complete, failed); None if Redis holds nothing."""
    names = await known_queues(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.job_key(job_id))
        pipe.get(keys.result_key(job_id))
        pipe.pttl(keys.in_progress_key(job_id))
        pipe.get(keys.retry_key(job_id))
        pipe.get(keys.failed_key(job_id))
        pipe.get(keys.progress_key(job_id))
        for name in names:
            pipe.zscore(keys.queue_key(name), job_id)
        job_raw, result_raw, lease, tries_raw, failed_raw, progress_raw, *scores = await pipe.execute()
    queued_in = [(name, float(score)) for name, score in zip(names, scores, strict=True) if score is not None]
    if job_raw is None and result_raw is None and failed_raw is None and not queued_in:
        return None
    view = JobView(job_id=job_id, state="expired")
    payload, result = _decoded(JobRecord.decode, job_raw), _decoded(ResultRecord.decode, result_raw)
    if job_raw is not None and payload is None:
        view.corrupt.append(f"job payload: {records.preview(job_raw)}")
    if result_raw is not None and result is None:
        view.corrupt.append(f"result: {records.preview(result_raw)}")
    failure = records.failed_job(failed_raw)
    if failed_raw is not None and failure is None:
        view.corrupt.append(f"failure record: {records.preview(failed_raw)}")
    view.failure = failure
    view.progress = decode_progress(progress_raw)
    view.task = payload.task if payload else result.task if result else failure.task if failure else None
    view.kwargs = (
        payload.kwargs if payload else result.kwargs if result else failure.kwargs if failure else None
    )
    tries = records.integer(records.text(tries_raw)) if tries_raw is not None else None
    if tries is None:
        tries = (payload.job_try if payload else result.job_try if result else None) or (
            failure.tries if failure else None
        )
    view.tries = tries
    view.max_tries = failure.max_tries if failure else None
    view.queue = queued_in[0][0] if queued_in else None
    if view.queue is None and result is not None and result.queue:
        view.queue = keys.queue_name(result.queue)
    if view.queue is None and failure is not None:
        view.queue = failure.queue
    running = isinstance(lease, int) and (lease > 0 or lease == -1)
    view.lease_ms = lease if running and lease > 0 else None
    if queued_in:
        view.run_at_ms = queued_in[0][1]
    view.state = _state(result, failure, running, view.run_at_ms, bool(job_raw or result_raw))
    if result is not None:
        view.has_result = result.success
        if result.success:
            view.result = result.result
        else:
            view.error = result.error
    if running:
        view.worker = await _runner(redis, view.queue, job_id)
    elif failure is not None:
        view.worker = failure.worker_id
    view.timeline = _events(view, payload, result, failure)
    return view


def _decoded(decode: Callable[[bytes], T], raw: bytes | None) -> T | None:
    """A record from Redis, typed; None if absent or not one (shown as corrupt instead)."""
    if raw is None:
        return None
    try:
        return decode(raw)
    except UndecodableJobError:
        return None


def _state(
    result: ResultRecord | None,
    failure: FailedJob | None,
    running: bool,
    run_at_ms: float | None,
    data: bool,
) -> str:
    if running:
        return JobStatus.in_progress
    if run_at_ms is not None:
        return JobStatus.deferred if run_at_ms > time.time() * 1000 else JobStatus.queued
    if result is not None:
        return JobStatus.complete if result.success else JobStatus.failed
    if failure is not None:
        return JobStatus.failed
    return "expired" if not data else "unknown"


async def _runner(redis: ArqRedis, queue: str | None, job_id: str) -> str | None:
    """The live worker whose last heartbeat lists the job as running."""
    if queue is None:
        return None
    for row in await workers(redis, [queue]):
        if row.record and any(j["job_id"] == job_id for j in row.record["running"]):
            return row.worker_id
    return None


def _events(
    view: JobView, payload: JobRecord | None, result: ResultRecord | None, failure: FailedJob | None
) -> list[Event]:
    events = []
    enqueued = payload.enqueue_ms if payload else result.enqueue_ms if result else None
    if enqueued:
        events.append(Event(enqueued, "enqueued"))
    elif failure is not None and failure.enqueued_at:
        events.append(Event(records.iso_to_ms(failure.enqueued_at), "enqueued"))
    if view.run_at_ms is not None:
        events.append(
            Event(view.run_at_ms, "due" if view.state != JobStatus.in_progress else "due (claimed)")
        )
    if result is not None:
        label = f"try {result.job_try} started" if result.job_try else "last try started"
        if result.start_ms:
            events.append(Event(result.start_ms, label))
        if result.finish_ms:
            events.append(Event(result.finish_ms, "succeeded" if result.success else "failed"))
    if view.state == JobStatus.in_progress:
        events.append(Event(None, f"running now{f' on {view.worker}' if view.worker else ''}"))
    if failure is not None:
        events.append(
            Event(records.iso_to_ms(failure.failed_at), f"moved to the failed store ({failure.reason})")
        )
    return events
