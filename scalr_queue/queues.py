"""What an operator asks of Redis: which queues exist, how they stand, which jobs wait, and the levers
(pause, resume, purge, clean). The CLI formats these; nothing here prints."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis

from . import keys, wire
from .exceptions import JobNotFoundError, ScalrQueueError
from .failed import FailedJob, FailedStore, iso_ms
from .health import live_workers
from .stats import queue_counts


class UnknownQueueError(ScalrQueueError, LookupError):
    """No job was ever enqueued to this queue and no worker serves it."""


class JobState(StrEnum):
    queued = "queued"
    deferred = "deferred"
    in_progress = "in-progress"


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def known_queues(redis: ArqRedis) -> list[str]:
    """Queues that something was enqueued to, or that a worker serves."""
    members: set[bytes] = await redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # typed sync | async
    return sorted(m.decode() for m in members)


async def require_queue(redis: ArqRedis, name: str) -> str:
    queue = keys.queue_name(name)
    known = await known_queues(redis)
    if queue not in known:
        listed = ", ".join(known) if known else "none yet"
        raise UnknownQueueError(
            f"unknown queue {queue!r}: nothing was enqueued to it and no worker serves it (known: {listed})"
        )
    return queue


async def queue_stats(redis: ArqRedis, name: str, failed_by_queue: dict[str, int]) -> QueueStats:
    counts = await queue_counts(redis, name)
    workers = await live_workers(redis, name)
    paused = bool(await redis.exists(keys.paused_key(name)))
    oldest = None if counts.oldest_due_ms is None else max(time.time() - counts.oldest_due_ms / 1000, 0.0)
    return QueueStats(
        queue=keys.queue_name(name),
        queued=counts.queued,
        in_progress=counts.in_progress,
        deferred=counts.deferred,
        failed=failed_by_queue.get(keys.queue_name(name), 0),
        workers=len(workers),
        oldest_queued_age_s=None if oldest is None else round(oldest, 3),
        paused=paused,
    )


async def failed_by_queue(store: FailedStore) -> dict[str, int]:
    """Failure records per known queue: one count on each queue's index, no record read."""
    names = await known_queues(store.redis)
    return {name: await store.count(name) for name in names}


async def list_jobs(redis: ArqRedis, queue: str, state: JobState | None, limit: int) -> list[JobSummary]:
    """Jobs in the queue, soonest first: waiting, deferred to later, or running (by the in-progress lease)."""
    now_ms = time.time() * 1000
    found: list[JobSummary] = []
    start, page = 0, max(limit, 200)
    while len(found) < limit:
        entries = await redis.zrange(keys.queue_key(queue), start, start + page - 1, withscores=True)
        if not entries:
            break
        ids = [member.decode() for member, _ in entries]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(keys.in_progress_key(job_id))
                pipe.get(keys.job_key(job_id))
                pipe.get(keys.retry_key(job_id))
            replies = await pipe.execute()
        for index, (job_id, (_, score)) in enumerate(zip(ids, entries, strict=True)):
            running, raw, tries = replies[3 * index : 3 * index + 3]
            job_state = (
                JobState.in_progress if running else JobState.deferred if score > now_ms else JobState.queued
            )
            if state is not None and job_state is not state:
                continue
            payload = _decode(raw)
            started = int(tries or 0)
            found.append(
                JobSummary(
                    job_id=job_id,
                    task=str(payload.get("f", "<expired>")) if payload else "<expired>",
                    state=job_state.value,
                    run_at=iso_ms(score),
                    enqueued_at=iso_ms(payload.get("et")) if payload else None,
                    try_=started if running else started + 1,
                )
            )
            if len(found) >= limit:
                break
        start += page
    return found


async def job_details(redis: ArqRedis, store: FailedStore, job_id: str) -> JobDetails:
    """Everything Redis holds on one job, wherever it is; JobNotFoundError if nothing."""
    queues = await known_queues(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.result_key(job_id))
        pipe.get(keys.job_key(job_id))
        pipe.exists(keys.in_progress_key(job_id))
        pipe.get(keys.retry_key(job_id))
        for name in queues:
            pipe.zscore(keys.queue_key(name), job_id)
        result_raw, job_raw, running, tries, *scores = await pipe.execute()
    failure = await store.get(job_id)
    result, payload = _decode(result_raw), _decode(job_raw)
    queued_in = [(q, score) for q, score in zip(queues, scores, strict=True) if score is not None]
    if result is None and payload is None and failure is None and not queued_in:
        raise JobNotFoundError(
            f"no job {job_id!r}: not queued, running, finished with a kept result, or failed"
        )
    source = payload or result or {}
    queue = queued_in[0][0] if queued_in else failure.queue if failure else None
    if queue is None and result is not None and result.get("q"):
        queue = keys.queue_name(str(result["q"]))
    return JobDetails(
        job_id=job_id,
        state=_state(result, failure, bool(running), queued_in[0][1] if queued_in else None),
        queue=queue,
        task=source.get("f") or (failure.task if failure else None),
        kwargs=source.get("k") if source else (failure.kwargs if failure else None),
        tries=int(tries or 0) or int(source.get("t") or 0),
        enqueued_at=iso_ms(source.get("et")),
        result=result.get("r") if result is not None and result.get("s") else None,
        error=_error(result),
        failure=asdict(failure) if failure else None,
    )


def _state(
    result: dict[str, Any] | None, failure: FailedJob | None, running: bool, score: float | None
) -> str:
    if result is not None:
        return "complete" if result.get("s") else "failed"
    if running:
        return "in-progress"
    if score is not None:
        return "deferred" if score > time.time() * 1000 else "queued"
    return "failed" if failure is not None else "expired"


def _error(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None or result.get("s"):
        return None
    error = result.get("r")
    return error if isinstance(error, dict) else {"type": "Error", "message": str(error)}


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        return wire.loads(raw)
    except ValueError:
        return {"f": "<undecodable>"}


async def pause(redis: ArqRedis, queue: str) -> None:
    await redis.set(keys.paused_key(queue), str(int(time.time() * 1000)))


async def resume(redis: ArqRedis, queue: str) -> bool:
    return bool(await redis.delete(keys.paused_key(queue)))


# Remove up to ARGV[2] waiting (not running) jobs and their data from the front of a queue.
_PURGE_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. 'in-progress:' .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[1] .. 'job:' .. id, ARGV[1] .. 'retry:' .. id)
    removed = removed + 1
  end
end
return {removed, #ids}
"""


async def purge(redis: ArqRedis, queue: str, *, batch: int = 1000) -> int:
    """Drop every job waiting in the queue (queued or deferred); running jobs are left to finish."""
    script = redis.register_script(_PURGE_LUA)
    total = 0
    while True:
        removed, seen = await script(keys=[keys.queue_key(queue)], args=["arq:", batch])
        total += int(removed)
        if int(seen) < batch or int(removed) == 0:
            return total


async def clean(redis: ArqRedis, store: FailedStore, older_than_s: float) -> tuple[int, int]:
    """Delete kept results finished, and failure records written, more than ``older_than_s`` ago."""
    cutoff_ms = (time.time() - older_than_s) * 1000
    results = 0
    async for key in redis.scan_iter(match=keys.RESULT_PREFIX + "*", count=1000):
        raw = await redis.get(key)
        record = _decode(raw)
        if record is not None and float(record.get("ft") or 0) < cutoff_ms:
            results += int(await redis.delete(key))
    failed = 0
    for job_id in await redis.zrangebyscore(keys.FAILED_KEY, "-inf", cutoff_ms):
        failed += int(await store.forget(job_id.decode()))
    return results, failed
