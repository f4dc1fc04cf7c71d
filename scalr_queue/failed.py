"""The failed store: every job that ends without success, with its reason, readable and re-runnable.

``arq:failed`` is a sorted set of job ids scored by failure time (ms); ``arq:failed:<job id>`` holds the record
as JSON and expires with the retention age. Retention is bounded by age and by count. The worker writes records
while it finishes jobs (``worker/_finish.py``); this module builds them (one builder) and reads them back. A
record that is not what we wrote (edited, truncated) reads as a ``corrupt_record``, never as an error.
"""

from __future__ import annotations

import builtins
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from . import keys
from ._lua import scripts
from .exceptions import JobAlreadyQueuedError, UndecodableJobError
from .outcome import FailureReason
from .records import JobRecord, preview

CORRUPT_TASK = "<corrupt record>"
RETRY_EXPIRY_MS = 86_400_000  # a retried job not started within a day expires, as arq's jobs do

__all__ = ["FailedJob", "FailedStore", "FailureReason", "failure_record", "iso_ms", "now_iso"]


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

    @property
    def corrupt(self) -> bool:
        return self.reason == "corrupt_record"

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, raw: bytes | str, job_id: str = "?") -> FailedJob:
        """The record; one that is not what scalr_queue wrote comes back marked corrupt, with a preview."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            job = cls(**known)
            _check_types(job)
        except (ValueError, TypeError) as exc:
            shown = preview(raw.encode() if isinstance(raw, str) else raw, 120)
            return cls(
                job_id=job_id,
                task=CORRUPT_TASK,
                kwargs={},
                queue="?",
                tries=0,
                reason="corrupt_record",
                error_type="CorruptRecord",
                message=f"this failure record is not one scalr_queue wrote ({exc}): {shown}",
                traceback=None,
                enqueued_at=None,
                failed_at="?",
            )
        return job


_TYPES: dict[str, type | tuple[type, ...]] = {
    "job_id": str,
    "task": str,
    "kwargs": dict,
    "queue": str,
    "tries": int,
    "reason": str,
    "error_type": str,
    "message": str,
    "traceback": (str, type(None)),
    "enqueued_at": (str, type(None)),
    "failed_at": str,
    "max_tries": (int, type(None)),
    "worker_id": (str, type(None)),
    "extra": dict,
}


def _check_types(job: FailedJob) -> None:
    for name, expected in _TYPES.items():
        value = getattr(job, name)
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            raise TypeError(f"{name} is {type(value).__name__}")


def failure_record(
    *,
    job_id: str,
    task: str,
    kwargs: dict[str, Any],
    queue: str,
    tries: int,
    max_tries: int | None,
    reason: FailureReason,
    error: BaseException,
    traceback: str | None,
    enqueue_ms: int | None,
    worker_id: str | None,
    extra: dict[str, Any] | None = None,
) -> FailedJob:
    """The failure record of a job: the one builder, for the engine and for plain arq workers alike."""
    return FailedJob(
        job_id=job_id,
        task=task,
        kwargs=kwargs,
        queue=keys.queue_name(queue),
        tries=tries,
        max_tries=max_tries,
        reason=reason.value,
        error_type=type(error).__name__,
        message=str(error),
        traceback=traceback,
        enqueued_at=iso_ms(enqueue_ms),
        failed_at=now_iso(),
        worker_id=worker_id,
        extra=extra or {},
    )


def iso_ms(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return None


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")


class FailedStore:
    """Write, list, read, retry, forget and flush failure records."""

    def __init__(self, redis: Redis, *, max_age_s: float, max_count: int) -> None:
        self.redis = redis
        self.max_age_ms = int(max_age_s * 1000)
        self.max_count = max_count

    async def record(self, failed: FailedJob) -> None:
        """Store ``failed`` and trim the store (plain arq workers; ours write records while finishing)."""
        await scripts(self.redis).record_failure(
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
        )

    async def list(self, *, limit: int = 50, queue: str | None = None) -> builtins.list[FailedJob]:
        """The newest failures first; with ``queue``, only that queue's (read through its index). A record that
        is not what scalr_queue wrote comes back marked corrupt."""
        found: builtins.list[FailedJob] = []
        start = 0
        page = max(limit, 100)
        while len(found) < limit:
            ids = await self.ids(start, page, queue=queue)
            if not ids:
                break
            for name, raw in zip(ids, await self.redis.mget([keys.failed_key(i) for i in ids]), strict=True):
                if raw is not None:
                    found.append(FailedJob.from_json(raw, name))
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
        return [i.decode(errors="backslashreplace") if isinstance(i, bytes) else str(i) for i in raw]

    async def count(self, queue: str | None = None) -> int:
        """How many failure records there are (of ``queue``: one ZCOUNT on its index)."""
        if queue is None:
            return int(await self.redis.zcard(keys.FAILED_KEY))
        return int(await self.redis.zcount(keys.failed_queue_key(queue), self._cutoff_ms(), "+inf"))

    def _cutoff_ms(self) -> int:
        return int(time.time() * 1000) - self.max_age_ms

    async def get(self, job_id: str) -> FailedJob | None:
        try:
            raw = await self.redis.get(keys.failed_key(job_id))
        except ResponseError:  # not a string: somebody else's key
            return FailedJob.from_json(b"<not a string>", job_id)
        return FailedJob.from_json(raw, job_id) if raw else None

    async def retry(self, job_id: str) -> bool:
        """Queue the job again (same id, task, arguments and queue; fresh tries). False if there is no record.

        Raises JobAlreadyQueuedError if a job with that id is queued or running again already, and
        UndecodableJobError if the record is corrupt (nothing to run).
        """
        failed = await self.get(job_id)
        if failed is None:
            return False
        if failed.corrupt:
            raise UndecodableJobError(f"job {job_id}: {failed.message}; forget it instead")
        now_ms = int(time.time() * 1000)
        payload = JobRecord(task=failed.task, kwargs=failed.kwargs, enqueue_ms=now_ms).encode()
        done = await scripts(self.redis).retry_failed(
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
            args=[RETRY_EXPIRY_MS, payload, now_ms, job_id],
        )
        if done == -1:
            raise JobAlreadyQueuedError(
                f"job {job_id} is queued or running again already; forget the failure instead"
            )
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
                if raw is not None and (task is None or FailedJob.from_json(raw, job_id).task == task)
            ]
            start += chunk
        done = []
        for job_id in matching:
            try:
                if await self.retry(job_id):
                    done.append(job_id)
            except (JobAlreadyQueuedError, UndecodableJobError):
                continue  # runs again already, or nothing to run: left for the operator to forget
        return done

    async def forget(self, job_id: str) -> bool:
        failed = await self.get(job_id)
        queues = [failed.queue] if failed is not None and not failed.corrupt else await self._known_queues()
        async with self.redis.pipeline(transaction=False) as pipe:  # a full Redis refuses a MULTI; DEL passes
            pipe.delete(keys.failed_key(job_id))
            pipe.zrem(keys.FAILED_KEY, job_id)
            for queue in queues:
                pipe.zrem(keys.failed_queue_key(queue), job_id)
            deleted, removed, *_ = await pipe.execute()
        return bool(deleted or removed)

    async def _known_queues(self) -> builtins.list[str]:
        members: set[bytes] = await self.redis.smembers(keys.QUEUES_KEY)  # type: ignore[misc]  # typed sync | async
        return [m.decode(errors="backslashreplace") for m in members]

    async def flush(self, *, queue: str | None = None) -> int:
        """Forget every failure (of ``queue``, if given); returns how many."""
        forgotten = 0
        for job in await self.list(limit=self.max_count + 1000, queue=queue):
            forgotten += await self.forget(job.job_id)
        if queue is None:
            await self.redis.delete(keys.FAILED_KEY)
        return forgotten
