"""What an operator asks of Redis: which queues exist, how they stand, which jobs wait, and the levers
(pause, resume, purge, clean). The CLI formats these; nothing here prints.

Records read here may be anything (edited by hand, written by another tool): each is decoded with the same
checks the worker uses, and one that does not decode is shown as such, never raised.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from . import keys, timeline
from ._lua import scripts
from ._progress import decode_progress
from .exceptions import JobNotFoundError, UndecodableJobError, UnknownQueueError
from .failed import FailedJob, FailedStore, iso_ms
from .health import live_workers
from .records import JobRecord, JobStatus, ResultRecord, batch_id_in, result_status
from .stats import queue_counts

UNDECODABLE = "<undecodable>"
EXPIRED = "<expired>"
# What ``scalr-queue jobs --state`` can list: the states of a job that is still in its queue.
WAITING_STATES = (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)

__all__ = [
    "WAITING_STATES",
    "JobDetails",
    "JobSummary",
    "QueueStats",
    "UnknownQueueError",
    "clean",
    "failed_by_queue",
    "job_details",
    "known_queues",
    "list_jobs",
    "pause",
    "purge",
    "queue_stats",
    "require_queue",
    "resume",
]


@dataclass
class QueueStats:
    queue: str
    queued: int
    in_progress: int
    deferred: int
    failed: int
    workers: int
    oldest_queued_age_s: float | None
    paused: bool
    released_last_hour: int = 0  # put back by a middleware (rate limit, overlap lock) without using a try

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class JobSummary:
    job_id: str
    task: str
    state: str
    run_at: str | None
    enqueued_at: str | None
    try_: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["try"] = data.pop("try_")
        return data


@dataclass
class JobDetails:
    job_id: str
    state: str
    queue: str | None
    task: str | None
    kwargs: dict[str, Any] | None
    tries: int
    enqueued_at: str | None
    result: Any = None
    error: dict[str, Any] | None = None
    failure: dict[str, Any] | None = field(default=None)
    problem: str | None = None  # why a record could not be read
    released: dict[str, Any] | None = None  # the last time a middleware put it back, why, and how often
    progress: dict[str, Any] | None = None  # the task's last progress report: fraction, message, at
    # held back (state waiting): {"dependencies_pending": n} for _depends_on, {"for_batch": id} for a callback
    waiting: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None  # the chain or batch its record names (while the record exists)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def known_queues(redis: Redis) -> list[str]:
    """Queues that something was enqueued to, or that a worker serves; and plain arq's ``arq:queue`` while jobs
    wait there (arq's producers register no queue name), so they show up (docs/migrating.md)."""
    members: set[bytes] = await redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # typed sync | async
    names = {m.decode(errors="backslashreplace") for m in members}
    if await redis.exists(keys.ARQ_DEFAULT_QUEUE):
        names.add(keys.ARQ_DEFAULT_QUEUE)
    return sorted(names)


async def require_queue(redis: Redis, name: str) -> str:
    queue = keys.queue_name(name)
    known = await known_queues(redis)
    if queue not in known:
        listed = ", ".join(known) if known else "none yet"
        raise UnknownQueueError(
            f"unknown queue {queue!r}: nothing was enqueued to it and no worker serves it (known: {listed})"
        )
    return queue


async def queue_stats(redis: Redis, name: str, failed_by_queue: dict[str, int]) -> QueueStats:
    counts = await queue_counts(redis, name)
    workers = await live_workers(redis, name)
    paused = bool(await redis.exists(keys.paused_key(name)))
    oldest = None if counts.oldest_due_ms is None else max(time.time() - counts.oldest_due_ms / 1000, 0.0)
    hour = await timeline.last_hour(redis, [keys.queue_name(name)])
    return QueueStats(
        queue=keys.queue_name(name),
        queued=counts.queued,
        in_progress=counts.in_progress,
        deferred=counts.deferred,
        failed=failed_by_queue.get(keys.queue_name(name), 0),
        workers=len(workers),
        oldest_queued_age_s=None if oldest is None else round(oldest, 3),
        paused=paused,
        released_last_hour=sum(minute.released for minute in hour),
    )


async def failed_by_queue(store: FailedStore) -> dict[str, int]:
    """Failure records per known queue: one count on each queue's index, no record read."""
    names = await known_queues(store.redis)
    return {name: await store.count(name) for name in names}


def _job_record(raw: bytes | None) -> JobRecord | str:
    """The job record, or what to show instead (expired, undecodable)."""
    if raw is None:
        return EXPIRED
    try:
        return JobRecord.decode(raw)
    except UndecodableJobError:
        return UNDECODABLE


async def list_jobs(redis: Redis, queue: str, state: JobStatus | None, limit: int) -> list[JobSummary]:
    """Jobs in the queue, soonest first: waiting, deferred to later, or running (by the in-progress lease)."""
    now_ms = time.time() * 1000
    found: list[JobSummary] = []
    start, page = 0, max(limit, 200)
    while len(found) < limit:
        entries = await redis.zrange(keys.queue_key(queue), start, start + page - 1, withscores=True)
        if not entries:
            break
        ids = [member.decode(errors="backslashreplace") for member, _ in entries]
        async with redis.pipeline(transaction=False) as pipe:
            for member, _ in entries:
                pipe.exists(keys.IN_PROGRESS_PREFIX.encode() + member)
                pipe.get(keys.JOB_PREFIX.encode() + member)
                pipe.get(keys.RETRY_PREFIX.encode() + member)
            replies = await pipe.execute(raise_on_error=False)
        for index, (job_id, (_, score)) in enumerate(zip(ids, entries, strict=True)):
            running, raw, tries = replies[3 * index : 3 * index + 3]
            job_state = (
                JobStatus.in_progress
                if running is True or running == 1
                else JobStatus.deferred
                if score > now_ms
                else JobStatus.queued
            )
            if state is not None and job_state is not state:
                continue
            record = _job_record(raw if isinstance(raw, bytes) else None)
            started = _int(tries)
            found.append(
                JobSummary(
                    job_id=job_id,
                    task=record.task if isinstance(record, JobRecord) else record,
                    state=job_state.value,
                    run_at=iso_ms(score) if math.isfinite(score) else str(score),
                    enqueued_at=iso_ms(record.enqueue_ms) if isinstance(record, JobRecord) else None,
                    try_=started if job_state is JobStatus.in_progress else started + 1,
                )
            )
            if len(found) >= limit:
                break
        start += page
    return found


async def job_details(redis: Redis, store: FailedStore, job_id: str) -> JobDetails:
    """Everything Redis holds on one job, wherever it is; JobNotFoundError if nothing."""
    queues = await known_queues(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.result_key(job_id))
        pipe.get(keys.job_key(job_id))
        pipe.exists(keys.in_progress_key(job_id))
        pipe.get(keys.retry_key(job_id))
        pipe.hgetall(keys.released_key(job_id))
        pipe.get(keys.progress_key(job_id))
        pipe.zscore(keys.ABORT_KEY, job_id)
        pipe.hmget(keys.waiting_key(job_id), ["n", "q"])
        for name in queues:
            pipe.zscore(keys.queue_key(name), job_id)
        replies = await pipe.execute(raise_on_error=False)
    result_raw, job_raw, running, tries, released, progress_raw, aborted, held, *scores = replies
    failure = await store.get(job_id)
    problems = []
    result = None
    if isinstance(result_raw, bytes):
        try:
            result = ResultRecord.decode(result_raw, job_id)
        except UndecodableJobError as exc:
            problems.append(f"{keys.result_key(job_id)}: {exc}")
    job: JobRecord | None = None
    if isinstance(job_raw, bytes):
        try:
            job = JobRecord.decode(job_raw)
        except UndecodableJobError as exc:
            problems.append(f"{keys.job_key(job_id)}: {exc}")
    elif isinstance(job_raw, Exception):
        problems.append(f"{keys.job_key(job_id)} is not a string")
    queued_in = [(q, s) for q, s in zip(queues, scores, strict=True) if isinstance(s, float)]
    held_fields = held if isinstance(held, list) and len(held) == 2 else [None, None]
    held_queue = held_fields[1] if isinstance(held_fields[1], bytes) else None
    is_held = held_queue is not None
    if result is None and job is None and failure is None and not queued_in and not problems:
        raise JobNotFoundError(
            f"no job {job_id!r}: not queued, running, finished with a kept result, or failed"
        )
    queue = queued_in[0][0] if queued_in else failure.queue if failure else None
    if queue is None and held_queue is not None:
        queue = keys.queue_name(held_queue.decode(errors="backslashreplace"))
    workflow = _workflow(job)
    state = _state(
        result,
        failure,
        running is True or running == 1,
        queued_in[0][1] if queued_in else None,
        aborted=isinstance(aborted, float),
    )
    waiting: dict[str, Any] | None = None
    if state == "expired" and is_held and job is not None:
        state = JobStatus.waiting
        if workflow is not None and workflow.get("role") in ("then", "catch"):
            waiting = {"for_batch": workflow["batch_id"]}
        else:
            waiting = {"dependencies_pending": _int(held_fields[0])}
    if queue is None and result is not None and result.queue:
        queue = keys.queue_name(result.queue)
    task = job.task if job else result.task if result else failure.task if failure else None
    kwargs = job.kwargs if job else result.kwargs if result else failure.kwargs if failure else None
    return JobDetails(
        job_id=job_id,
        state=state,
        queue=queue,
        task=task,
        kwargs=kwargs,
        tries=_int(tries) or (job.job_try or 0 if job else result.job_try if result else 0),
        enqueued_at=iso_ms(job.enqueue_ms if job else result.enqueue_ms if result else None),
        result=result.result if result is not None and result.success else None,
        error=result.error if result is not None else None,
        failure=asdict(failure) if failure else None,
        problem="; ".join(problems) or None,
        released=_released(released),
        progress=_progress_dict(progress_raw),
        waiting=waiting,
        workflow=workflow,
    )


def _workflow(job: JobRecord | None) -> dict[str, Any] | None:
    """The batch or chain the job's record names (read from Redis: only well-formed ids are shown)."""
    if job is None:
        return None
    meta = job.meta
    member = batch_id_in(meta.get("batch"))
    if member is not None:
        return {"kind": "batch", "batch_id": member, "role": "job"}
    callback = batch_id_in(meta.get("batch_callback"))
    if callback is not None:
        role = meta.get("batch_role")
        return {
            "kind": "batch",
            "batch_id": callback,
            "role": role if role in ("then", "catch") else "callback",
        }
    chain = meta.get("chain")
    link, links = meta.get("link"), meta.get("links")
    if isinstance(chain, str) and type(link) is int and type(links) is int and 1 <= link <= links:
        return {"kind": "chain", "chain_id": one_line_id(chain), "link": link, "links": links}
    return None


def one_line_id(value: str) -> str:
    """An id read from Redis, safe to print on one line."""
    return value[:512].encode("unicode_escape").decode("ascii")


def _progress_dict(raw: object) -> dict[str, Any] | None:
    found = decode_progress(raw)
    return found.as_dict() if found is not None else None


def _released(raw: object) -> dict[str, Any] | None:
    """The job's release info (``arq:released:<id>``), read defensively: it came from Redis."""
    if not isinstance(raw, dict) or not raw:
        return None
    fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    try:
        last = json.loads(fields.get("last", "{}"))
    except ValueError:
        last = {}
    if not isinstance(last, dict):
        last = {}
    return {
        "count": _int(fields.get("count")),
        "at": iso_ms(_int(fields.get("at")) or None),
        "reason": str(last.get("reason", "?")),
        "key": last.get("key"),
        "retry_in_s": last.get("retry_in_s"),
    }


def _state(
    result: ResultRecord | None,
    failure: FailedJob | None,
    running: bool,
    score: float | None,
    *,
    aborted: bool = False,
) -> str:
    if result is not None:
        return result_status(result)
    if aborted and (running or score is not None):
        return JobStatus.aborted  # ending: cancelled by its worker, or ended without starting
    if failure is not None and failure.reason == "aborted" and not running and score is None:
        return JobStatus.aborted
    if running:
        return JobStatus.in_progress
    if score is not None:
        return JobStatus.deferred if score > time.time() * 1000 else JobStatus.queued
    return JobStatus.failed if failure is not None else "expired"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


async def pause(redis: Redis, queue: str) -> None:
    await redis.set(keys.paused_key(queue), str(int(time.time() * 1000)))


async def resume(redis: Redis, queue: str) -> bool:
    """Unpause; wake the queue's idle workers at once (a token), rather than at their next look."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.paused_key(queue))
        pipe.rpush(keys.notify_key(queue), *(["1"] * 10))
        pipe.ltrim(keys.notify_key(queue), -keys.NOTIFY_CAP, -1)
        was_paused, *_ = await pipe.execute()
    return bool(was_paused)


async def purge(redis: Redis, queue: str, *, batch: int = 1000) -> int:
    """Drop every job waiting in the queue (queued or deferred); running jobs are left to finish."""
    total = 0
    while True:
        removed, seen = await scripts(redis).purge(
            keys=[keys.queue_key(queue)],
            args=[keys.IN_PROGRESS_PREFIX, keys.JOB_PREFIX, keys.RETRY_PREFIX, batch],
        )
        total += int(removed)
        if int(seen) < batch or int(removed) == 0:
            return total


async def clean(redis: Redis, store: FailedStore, older_than_s: float) -> tuple[int, int]:
    """Delete kept results finished, and failure records written, more than ``older_than_s`` ago."""
    cutoff_ms = (time.time() - older_than_s) * 1000
    results = 0
    async for key in redis.scan_iter(match=keys.RESULT_PREFIX + "*", count=1000):
        try:
            raw = await redis.get(key)
            finished = ResultRecord.decode(raw).finish_ms if raw else 0
        except (UndecodableJobError, ResponseError):
            finished = 0  # unreadable: as old as can be
        if finished < cutoff_ms:
            results += int(await redis.delete(key))
    failed = 0
    for job_id in await redis.zrangebyscore(keys.FAILED_KEY, "-inf", cutoff_ms):
        failed += int(await store.forget(job_id.decode(errors="backslashreplace")))
    return results, failed
