"""Built-in middleware: limits that hold across every worker through Redis, and die with their worker.

Each is keyed by a string or by a function of the job's keyword arguments (``lambda kw: f"customer:{kw['id']}"``),
and each does its check in one Redis script, so two workers never both pass on the same look. A job held back is
``Released``: put back without using a try and without holding a slot while it waits. What each costs, in Redis
commands per job, is in docs/middleware.md.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from . import keys
from ._lua import scripts
from .connection import describe_error, transient
from .exceptions import WorkerSettingsError
from .logs import get_logger
from .outcome import Released, ReleaseReason
from .runner import CallNext, JobInfo, Middleware, now_ms

__all__ = [
    "CallNext",
    "JobInfo",
    "Middleware",
    "RateLimited",
    "ReleaseReason",
    "Released",
    "WithoutOverlapping",
]

log = get_logger("scalr_queue.worker")

Key = str | Callable[[Mapping[str, Any]], str]
REDIS_RETRY_S = 1.0  # a built-in that cannot reach Redis puts the job back for this long, its try unused
DEFAULT_LEASE_S = 10.0  # the lock's lease outside a worker (a worker uses its own SCALR_QUEUE_LEASE)


def _check_key(key: object, what: str) -> Key:
    if isinstance(key, str):
        if not key:
            raise WorkerSettingsError(f"{what}: the key must not be empty")
        return key
    if callable(key):
        return key
    raise WorkerSettingsError(
        f"{what}: the key must be a string or a function of the job's kwargs, not {key!r}"
    )


def _key_of(key: Key, job: JobInfo, what: str) -> str:
    """The key for this job; a key function's error is the middleware's (attributed to it in the logs)."""
    if isinstance(key, str):
        return key
    value = key(job.kwargs)
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"{what}'s key function returned {value!r} for job {job.job_id}, not a non-empty string"
        )
    return value


class RateLimited:
    """At most ``max_attempts`` starts per key in any window of ``decay_seconds``, across all workers.

    A job over the limit is released until the oldest start in the window leaves it. Keys are shared by every task
    that names them: one ``RateLimited("stripe", 100, 1)`` instance, or two, on two tasks is one budget.
    """

    def __init__(self, key: Key, max_attempts: int, decay_seconds: float) -> None:
        self.key = _check_key(key, "RateLimited")
        if type(max_attempts) is not int or max_attempts < 1:
            raise WorkerSettingsError(
                f"RateLimited: max_attempts must be a whole number from 1, not {max_attempts!r}"
            )
        if (
            not isinstance(decay_seconds, int | float)
            or isinstance(decay_seconds, bool)
            or not decay_seconds > 0
        ):
            raise WorkerSettingsError(
                f"RateLimited: decay_seconds must be more than 0, not {decay_seconds!r}"
            )
        self.max_attempts = max_attempts
        self.window_ms = max(int(decay_seconds * 1000), 1)

    def __repr__(self) -> str:
        return f"RateLimited({self.key!r}, max_attempts={self.max_attempts}, decay_seconds={self.window_ms / 1000:g})"

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        key = _key_of(self.key, job, "RateLimited")
        start = f"{job.job_id}:{os.urandom(4).hex()}"  # one member per start, even of one job
        try:
            wait_ms = await scripts(job.ctx["redis"]).rate_limit(
                keys=[keys.rate_key(key)], args=[self.window_ms, self.max_attempts, start]
            )
        except Exception as exc:
            if not transient(exc):
                raise
            return _redis_trouble(job, key, exc)
        if int(wait_ms) > 0:
            return Released(int(wait_ms) / 1000, ReleaseReason.rate_limited, key)
        return await call_next()


class WithoutOverlapping:
    """At most one job per key runs at a time, across all workers; the others wait for it, woken when it ends.

    The lock is a lease (the worker's ``SCALR_QUEUE_LEASE``, renewed while the job runs): a worker that dies
    holding it frees it within the lease, and its waiters come due then.
    """

    def __init__(self, key: Key) -> None:
        self.key = _check_key(key, "WithoutOverlapping")

    def __repr__(self) -> str:
        return f"WithoutOverlapping({self.key!r})"

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        key = _key_of(self.key, job, "WithoutOverlapping")
        redis = job.ctx["redis"]
        state = job.ctx.get("scalr_queue")
        lease_s = float(getattr(state, "lease_s", DEFAULT_LEASE_S))
        token = f"{getattr(state, 'worker_id', 'local')}:{job.job_id}:{job.job_try}"
        lock = keys.lock_key(key)
        waiters = keys.lock_waiters_key(key)
        member = f"{keys.queue_key(job.queue)}\n{keys.notify_key(job.queue)}\n{job.job_id}"
        try:
            left_ms = await scripts(redis).lock_take(
                keys=[lock, waiters], args=[token, int(lease_s * 1000), member]
            )
        except Exception as exc:
            if not transient(exc):
                raise
            return _redis_trouble(job, key, exc)
        if int(left_ms) != -1:
            return Released(max(int(left_ms), 0) / 1000, ReleaseReason.overlapping, key)
        renewer = asyncio.get_running_loop().create_task(_renew(redis, lock, token, lease_s, job))
        try:
            return await call_next()
        finally:
            renewer.cancel()
            release = asyncio.ensure_future(_release(redis, lock, waiters, token, job))
            try:
                await asyncio.shield(release)  # a second cancel must not leave the lock to its lease
            except asyncio.CancelledError:
                await asyncio.wait([release], timeout=lease_s)
                raise


async def _renew(redis: Any, lock: str, token: str, lease_s: float, job: JobInfo) -> None:
    """Keep the lock while the job runs: a third of the lease at a time, so two missed renewals still hold it."""
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            held = await scripts(redis).lock_renew(keys=[lock], args=[token, int(lease_s * 1000)])
        except Exception as exc:
            log.warning("lock_not_renewed", job_id=job.job_id, key=lock, error=describe_error(exc))
            continue
        if not held:
            log.error(
                "lock_lost",
                job_id=job.job_id,
                key=lock,
                reason="the lease ran out before it was renewed (a blocked event loop, or Redis unreachable)",
            )
            return


async def _release(redis: Any, lock: str, waiters: str, token: str, job: JobInfo) -> None:
    """Give the lock back and wake its oldest waiter; if Redis is unreachable the lease frees it instead."""
    try:
        await scripts(redis).lock_release(
            keys=[lock, waiters],
            args=[token, now_ms(), keys.NOTIFY_CAP, keys.QUEUE_PREFIX, keys.READY_PREFIX],
        )
    except Exception as exc:
        log.warning(
            "lock_not_released",
            job_id=job.job_id,
            key=lock,
            error=describe_error(exc),
            action="freed by its lease",
        )


def _redis_trouble(job: JobInfo, key: str, exc: BaseException) -> Released:
    log.warning("middleware_redis_unavailable", job_id=job.job_id, key=key, error=describe_error(exc))
    return Released(REDIS_RETRY_S, ReleaseReason.redis_unavailable, key)
