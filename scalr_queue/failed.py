"""The failed store: every job that ends without success, with its reason, readable and re-runnable.

``arq:failed`` is a sorted set of job ids scored by failure time (ms); ``arq:failed:<job id>`` holds the record
as JSON and expires with the retention age. Retention is bounded by age and by count.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline

from . import keys, wire

# Write one record and trim the store to its age and count bounds, atomically. The record's id also goes into its
# queue's index (KEYS[3]), so a queue's failures are counted and paged without reading every record; an id trimmed
# for count leaves its queue's index too (the queue is read from the record).
_RECORD_LUA = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local oldest = tonumber(ARGV[3]) - tonumber(ARGV[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', oldest)) do
  redis.call('DEL', ARGV[6] .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', oldest)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest)
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
    local record = redis.call('GET', ARGV[6] .. id)
    if record then
      local ok, data = pcall(cjson.decode, record)
      if ok and type(data) == 'table' and type(data.queue) == 'string' then
        redis.call('ZREM', ARGV[7] .. data.queue, id)
      end
    end
    redis.call('DEL', ARGV[6] .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[5]) - 1)
return 1
"""

# Put a failed job back on its queue under the same id with fresh tries, and drop its failure record.
_RETRY_LUA = """
local record = redis.call('GET', KEYS[1])
if not record then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
redis.call('PSETEX', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[8], '1')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[9], ARGV[4])
return 1
"""


class FailureReason(StrEnum):
    """Why a job ended without success."""

    raised = "raised"  # the last try raised
    timed_out = "timed_out"  # the last try ran past its timeout
    non_retryable = "non_retryable"  # the task raised NonRetryableError
    retry_until_passed = "retry_until_passed"  # the task's retry deadline had passed
    unknown_task = "unknown_task"  # no worker registered the task name, even after the rollout window
    undecodable_payload = "undecodable_payload"  # not JSON (garbage, or a pickle, which is never unpickled)
    expired = "expired"  # the job's data expired before a worker took it
    max_tries_exceeded = "max_tries_exceeded"  # every try was cut short (the worker died) until none was left
    arguments_rejected = "arguments_rejected"  # the arguments do not fit the task's signature
    aborted = "aborted"  # aborted (arq's Job.abort) before it started
    result_not_serializable = "result_not_serializable"  # the task returned something that is not JSON


@dataclass
class FailedJob:
    """One record of the failed store."""

    job_id: str
    task: str
    kwargs: dict[str, Any]
    queue: str
    tries: int
    reason: str
    error_type: str
    message: str
    traceback: str | None
    enqueued_at: str | None
    failed_at: str
    max_tries: int | None = None
    worker_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, raw: bytes | str) -> FailedJob:
        data = json.loads(raw)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def iso_ms(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")


def _field(raw: bytes, name: str) -> str | None:
    """A text field of a failure record, or None if the record is not one."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _queue_of(raw: bytes) -> str | None:
    return _field(raw, "queue")


def _task_of(raw: bytes) -> str | None:
    return _field(raw, "task")


class FailedStore:
    """Write, list, read, retry, forget and flush failure records."""

    def __init__(self, redis: ArqRedis, *, max_age_s: float, max_count: int) -> None:
        self.redis = redis
        self.max_age_ms = int(max_age_s * 1000)
        self.max_count = max_count
        self._record = redis.register_script(_RECORD_LUA)
        self._retry = redis.register_script(_RETRY_LUA)

    async def record(self, failed: FailedJob, *, pipe: Pipeline | None = None) -> None:
        """Store ``failed``; inside ``pipe`` it commits together with the rest of that transaction."""
        await self._record(
            keys=[keys.FAILED_KEY, keys.failed_key(failed.job_id), keys.failed_queue_key(failed.queue)],
            args=[
                failed.to_json(),
                self.max_age_ms,
                int(time.time() * 1000),
                failed.job_id,
                self.max_count,
                keys.FAILED_RECORD_PREFIX,
                keys.FAILED_QUEUE_PREFIX,
            ],
            client=pipe,
        )

    async def list(self, *, limit: int = 50, queue: str | None = None) -> list[FailedJob]:
        """The newest failures first; with ``queue``, only that queue's (read through its index). A record that
        does not decode is left out (the dashboard shows it as corrupt)."""
        found: list[FailedJob] = []
        start = 0
        page = max(limit, 100)
        while len(found) < limit:
            ids = await self.ids(start, page, queue=queue)
            if not ids:
                break
            for raw in await self.redis.mget([keys.failed_key(i) for i in ids]):
                with contextlib.suppress(ValueError, TypeError):  # a corrupt record is skipped, not fatal
                    found.append(FailedJob.from_json(raw))
            start += page
        return found[:limit]

    async def ids(self, start: int, count: int, *, queue: str | None = None) -> builtins.list[str]:
        """A page of failed job ids, newest first: all of them, or ``queue``'s (within the retention age)."""
        if queue is None:
            raw = await self.redis.zrevrange(keys.FAILED_KEY, start, start + count - 1)
        else:
            raw = await self.redis.zrevrangebyscore(
                keys.failed_queue_key(queue), "+inf", self._cutoff_ms(), start=start, num=count
            )
        return [i.decode(errors="replace") if isinstance(i, bytes) else str(i) for i in raw]

    async def count(self, queue: str | None = None) -> int:
        """How many failure records there are (of ``queue``: one ZCOUNT on its index)."""
        if queue is None:
            return int(await self.redis.zcard(keys.FAILED_KEY))
        return int(await self.redis.zcount(keys.failed_queue_key(queue), self._cutoff_ms(), "+inf"))

    def _cutoff_ms(self) -> int:
        return int(time.time() * 1000) - self.max_age_ms

    async def get(self, job_id: str) -> FailedJob | None:
        raw = await self.redis.get(keys.failed_key(job_id))
        return FailedJob.from_json(raw) if raw else None

    async def retry(self, job_id: str) -> bool:
        """Queue the job again (same id, task, arguments and queue; fresh tries). False if there is no record.

        Raises ValueError if a job with that id is queued or running again already.
        """
        failed = await self.get(job_id)
        if failed is None:
            return False
        now_ms = int(time.time() * 1000)
        payload = wire.job_payload(failed.task, failed.kwargs, None, now_ms)
        done = await self._retry(
            keys=[
                keys.failed_key(job_id),
                keys.FAILED_KEY,
                keys.job_key(job_id),
                keys.result_key(job_id),
                keys.retry_key(job_id),
                keys.in_progress_key(job_id),
                keys.queue_key(failed.queue),
                keys.notify_key(failed.queue),
                keys.failed_queue_key(failed.queue),
            ],
            args=[86_400_000, payload, now_ms, job_id],
        )
        if done == -1:
            raise ValueError(f"job {job_id} is queued or running again already; forget the failure instead")
        return bool(done)

    async def retry_all(self, *, queue: str | None = None, task: str | None = None) -> builtins.list[str]:
        """Retry every failure (of ``queue``, of ``task``); records that are corrupt or whose job is queued or
        running again are left as they are. Returns the ids queued again."""
        matching: builtins.list[str] = []
        start, chunk = 0, 500
        while ids := await self.ids(start, chunk, queue=queue):
            raws = await self.redis.mget([keys.failed_key(i) for i in ids])
            matching += [
                job_id
                for job_id, raw in zip(ids, raws, strict=True)
                if raw is not None and (task is None or _task_of(raw) == task)
            ]
            start += chunk
        done = []
        for job_id in matching:
            with contextlib.suppress(
                ValueError, TypeError
            ):  # a corrupt record, or the job runs again already
                if await self.retry(job_id):
                    done.append(job_id)
        return done

    async def forget(self, job_id: str) -> bool:
        raw = await self.redis.get(keys.failed_key(job_id))
        queue = _queue_of(raw) if raw is not None else None
        queues = [queue] if queue else await self._known_queues()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.failed_key(job_id))
            pipe.zrem(keys.FAILED_KEY, job_id)
            for queue in queues:
                pipe.zrem(keys.failed_queue_key(queue), job_id)
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def _known_queues(self) -> builtins.list[str]:
        members: set[bytes] = await self.redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # typed sync | async
        return [m.decode(errors="replace") for m in members]

    async def flush(self, *, queue: str | None = None) -> int:
        """Forget every failure (of ``queue``, if given); returns how many."""
        forgotten = 0
        for job in await self.list(limit=self.max_count + 1000, queue=queue):
            forgotten += await self.forget(job.job_id)
        if queue is None:
            await self.redis.delete(keys.FAILED_KEY)
        return forgotten
