"""Writing a job into its queue: the one call behind ``enqueue``, ``enqueue_many`` and cron runs."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys
from ._lane import SLOT, arguments, template
from ._lua import scripts


def store_job(
    redis: Redis,
    *,
    job_id: str,
    queue: str,
    payload: bytes,
    score_ms: float,
    now_ms: int,
    expires_ms: int,
    once_key: str | None = None,
    once_ttl_ms: int = 0,
    unique_key: str | None = None,
    unique_ttl_ms: int = 0,
    priority: int = 0,
    pipe: Pipeline | None = None,
) -> Awaitable[Any]:
    """Queue one job: 1 if stored; 0 if its id exists, or, with ``once_key``, if that key was set already; with
    ``unique_key``, the id (bytes) of the unique job that holds it, if one does. The job joins the index of its
    ``priority`` (0..9, lower claimed first).

    With ``pipe`` the call is queued on the pipeline and sent with its ``execute()``.
    """
    job_keys, args = enqueue_call(
        job_id=job_id,
        queue=queue,
        payload=payload,
        score_ms=score_ms,
        now_ms=now_ms,
        expires_ms=expires_ms,
        once_key=once_key,
        once_ttl_ms=once_ttl_ms,
        unique_key=unique_key,
        unique_ttl_ms=unique_ttl_ms,
        priority=priority,
    )
    return scripts(redis).enqueue(keys=job_keys, args=args, client=pipe)


def enqueue_call(
    *,
    job_id: str,
    queue: str,
    payload: bytes,
    score_ms: float,
    now_ms: int,
    expires_ms: int,
    once_key: str | None = None,
    once_ttl_ms: int = 0,
    unique_key: str | None = None,
    unique_ttl_ms: int = 0,
    priority: int = 0,
) -> tuple[list[str], list[Any]]:
    """The ENQUEUE script's keys and arguments for one job (``store_job``; the enqueue lane packs the same)."""
    job = keys.job_key(job_id)
    job_keys = [
        job,
        keys.result_key(job_id),
        keys.queue_key(queue),
        keys.QUEUES_KEY,
        keys.notify_key(queue),
        once_key or job,
        unique_key or job,
        keys.ready_key(queue, priority),
        keys.ready_levels_key(queue),
    ]
    args: list[Any] = [
        expires_ms,
        payload,
        score_ms,
        job_id,
        keys.queue_name(queue),
        now_ms,
        keys.NOTIFY_CAP,
        once_ttl_ms if once_key else "",
        unique_ttl_ms if unique_key else "",
        priority,
    ]
    return job_keys, args


class PlainEnqueue:
    """ENQUEUE's command for the plain jobs (no unique key, no cron tick) of one queue and priority, packed once
    but for each job's own nine arguments (what ``enqueue_call`` gives, in its order): the enqueue lane's."""

    __slots__ = ("_format",)

    def __init__(self, sha: str, queue: str, priority: int) -> None:
        job_keys, args = enqueue_call(
            job_id="-", queue=queue, payload=b"", score_ms=0, now_ms=0, expires_ms=0, priority=priority
        )
        for own in _JOB_KEYS:
            job_keys[own] = SLOT
        for own in _JOB_ARGS:
            args[own] = SLOT
        self._format = template("EVALSHA", sha, len(job_keys), *job_keys, *args)

    def command(self, job_id: str, payload: bytes, score_ms: float, now_ms: int, expires_ms: int) -> bytes:
        id_ = job_id.encode()
        job = JOB_PREFIX + id_
        result = RESULT_PREFIX + id_
        expiry = b"%d" % expires_ms
        score = repr(score_ms).encode()
        now = b"%d" % now_ms
        return self._format % (  # the slots' lengths and values: job, result, once and unique (the job's own),
            len(job), job, len(result), result, len(job), job, len(job), job,  # then expiry, payload, score, id, now
            len(expiry), expiry, len(payload), payload, len(score), score, len(id_), id_, len(now), now,
        )  # fmt: skip


class FreshEnqueue:
    """A fresh job's write as one MULTI/EXEC of plain commands, not the ENQUEUE script: the enqueue lane's for a
    job queued with no option (its id made here, due now, priority 0) and no uniqueness.

    Nothing can hold a fresh job's id (128 random bits), so ENQUEUE's one decision, whether the id exists, is
    settled before it is sent; the rest are writes, the same as the script's and as atomic. Why: a script call
    costs Redis 50 µs more than these commands when its caches are cold (a job every few milliseconds), and that
    time lies between the enqueue and the job's start."""

    __slots__ = ("_format",)

    REPLIES = 8  # MULTI's, one per queued command, EXEC's (the last)

    def __init__(self, queue: str) -> None:
        ready = keys.ready_key(queue, 0)
        notify = keys.notify_key(queue)
        self._format = b"".join(
            [
                template("MULTI"),
                template("PSETEX", SLOT, SLOT, SLOT),  # job key, expiry ms, payload
                template("ZADD", keys.queue_key(queue), SLOT, SLOT),  # score, id
                template("ZADD", ready, SLOT, SLOT),
                template("SADD", keys.QUEUES_KEY, keys.queue_name(queue)),
                template("RPUSH", notify, "1"),  # due now: a wake-up token, the list capped as ENQUEUE does
                template("LTRIM", notify, -keys.NOTIFY_CAP, -1),
                template("EXEC"),
            ]
        )

    def command(self, job_id: str, payload: bytes, score_ms: float, expires_ms: int) -> bytes:
        id_ = job_id.encode()
        job = JOB_PREFIX + id_
        expiry = b"%d" % expires_ms
        score = repr(score_ms).encode()
        return self._format % (
            len(job), job, len(expiry), expiry, len(payload), payload,
            len(score), score, len(id_), id_, len(score), score, len(id_), id_,
        )  # fmt: skip


_JOB_KEYS = (0, 1, 5, 6)  # job, result, once (the job's), unique (the job's)
_JOB_ARGS = (0, 1, 2, 3, 5)  # expiry, payload, score, id, now
JOB_PREFIX = keys.JOB_PREFIX.encode()
RESULT_PREFIX = keys.RESULT_PREFIX.encode()


def store_plain_jobs(
    redis: Redis, *, queue: str, now_ms: int, jobs: Sequence[PlainJob], pipe: Pipeline | None = None
) -> Awaitable[Any]:
    """Queue many plain jobs of one queue in one call (``ENQUEUE_MANY``): 1 or 0 (its id exists) per job."""
    job_keys, args = enqueue_many_call(queue, now_ms)
    for job in jobs:
        args += job
    return scripts(redis).enqueue_many(keys=job_keys, args=args, client=pipe)


def enqueue_many_call(queue: str, now_ms: int) -> tuple[list[Any], list[Any]]:
    """``ENQUEUE_MANY``'s keys and its arguments before the jobs' own (five per job, a ``PlainJob``)."""
    job_keys = [keys.queue_key(queue), keys.QUEUES_KEY, keys.notify_key(queue), keys.ready_levels_key(queue)]
    args: list[Any] = [
        now_ms,
        keys.NOTIFY_CAP,
        keys.queue_name(queue),
        keys.JOB_PREFIX,
        keys.RESULT_PREFIX,
        keys.ready_prefix(queue),
    ]
    return job_keys, args


class PlainEnqueueMany:
    """``ENQUEUE_MANY``'s command for one queue, packed once but for the time and the jobs' own arguments: the
    lane's ``enqueue_many``, where redis-py's packing of 5,000 arguments per 1,000 jobs cost more than Redis."""

    __slots__ = ("_count", "_head", "_rest")

    def __init__(self, sha: str, queue: str) -> None:
        job_keys, args = enqueue_many_call(queue, 0)
        self._count = 3 + len(job_keys) + len(args)  # every argument but the jobs'
        self._head = arguments("EVALSHA", sha, len(job_keys), *job_keys)  # the time (args[0]) goes between
        self._rest = arguments(*args[1:])

    def command(self, now_ms: int, jobs: Sequence[PlainJob]) -> bytes:
        parts = [b"*%d\r\n" % (self._count + 5 * len(jobs)), self._head, arguments(now_ms), self._rest]
        for job_id, payload, score_ms, expires_ms, priority in jobs:
            id_ = job_id.encode()
            score = repr(score_ms).encode()
            expiry = b"%d" % expires_ms
            level = b"%d" % priority
            parts.append(
                _PLAIN_JOB
                % (len(id_), id_, len(payload), payload, len(score), score, len(expiry), expiry, len(level), level)
            )  # fmt: skip
        return b"".join(parts)


_PLAIN_JOB = b"$%d\r\n%b\r\n" * 5  # id, payload, score, expiry, priority


# One plain job for store_plain_jobs: id, payload, score (ms), expiry (ms), priority
PlainJob = tuple[str, bytes, float, int, int]


def store_after(
    redis: Redis,
    *,
    job_id: str,
    queue: str,
    payload: bytes,
    score_ms: float,
    now_ms: int,
    expires_ms: int,
    priority: int,
    depends_on: tuple[str, ...],
    pipe: Pipeline | None = None,
) -> Awaitable[Any]:
    """Queue one job that depends on others (``ENQUEUE_AFTER``): 1 stored (queued, or waiting for them), 0 its id
    exists, ``[b'unknown', id]`` a dependency Redis knows nothing of (nothing written)."""
    job_keys = [
        keys.job_key(job_id),
        keys.result_key(job_id),
        keys.queue_key(queue),
        keys.QUEUES_KEY,
        keys.notify_key(queue),
        keys.ready_key(queue, priority),
        keys.waiting_key(job_id),
        keys.DEPENDENCY_FAILED_KEY,
        keys.ready_levels_key(queue),
    ]
    args: list[Any] = [
        expires_ms,
        payload,
        score_ms,
        job_id,
        keys.queue_name(queue),
        now_ms,
        keys.NOTIFY_CAP,
        keys.RESULT_PREFIX,
        keys.JOB_PREFIX,
        keys.FAILED_RECORD_PREFIX,
        keys.DEPENDENTS_PREFIX,
        priority,
        *depends_on,
    ]
    return scripts(redis).enqueue_after(keys=job_keys, args=args, client=pipe)


def hold_job(pipe: Pipeline, *, job_id: str, queue: str, payload: bytes, ttl_ms: int, priority: int) -> None:
    """Store a job that waits until FINISH queues it (a batch's then/catch): its record and its waiting record,
    which names where it goes (queue, priority index, notify list, levels) when it is released, due then."""
    pipe.psetex(keys.job_key(job_id), ttl_ms, payload)
    hold = keys.waiting_key(job_id)
    pipe.hset(
        hold,
        mapping={
            "q": keys.queue_key(queue),
            "i": keys.ready_key(queue, priority),
            "w": keys.notify_key(queue),
            "s": 0,
            "n": 0,
            "l": keys.ready_levels_key(queue),
            "p": priority,
        },
    )
    pipe.pexpire(hold, ttl_ms)
    pipe.sadd(keys.QUEUES_KEY, keys.queue_name(queue))


def open_batch(
    pipe: Pipeline,
    *,
    batch_id: str,
    job_ids: list[str],
    then_id: str | None,
    catch_id: str | None,
    now_ms: int,
    ttl_ms: int,
    chunk: int,
) -> None:
    """A batch's state, written before any of its jobs: the hash, and every job id in the pending set (so the
    last job to end is the last one of the whole batch, however its jobs are spread over round trips)."""
    state = keys.batch_key(batch_id)
    pipe.hset(
        state,
        mapping={"total": len(job_ids), "then": then_id or "", "catch": catch_id or "", "created": now_ms},
    )
    pipe.pexpire(state, ttl_ms)
    pending = keys.batch_pending_key(batch_id)
    for start in range(0, len(job_ids), chunk):
        pipe.sadd(pending, *job_ids[start : start + chunk])
    pipe.pexpire(pending, ttl_ms)
