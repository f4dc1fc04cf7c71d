"""Writing a job into its queue: the one call behind ``enqueue``, ``enqueue_many`` and cron runs."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys
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
    pipe: Pipeline | None = None,
) -> Awaitable[Any]:
    """Queue one job (1 if stored, 0 if its id exists, or, with ``once_key``, if that key was set already).

    With ``pipe`` the call is queued on the pipeline and sent with its ``execute()``.
    """
    job_keys = [
        keys.job_key(job_id),
        keys.result_key(job_id),
        keys.queue_key(queue),
        keys.QUEUES_KEY,
        keys.notify_key(queue),
    ]
    args: list[Any] = [expires_ms, payload, score_ms, job_id, keys.queue_name(queue), now_ms, keys.NOTIFY_CAP]
    if once_key is not None:
        job_keys.append(once_key)
        args.append(once_ttl_ms)
    return scripts(redis).enqueue(keys=job_keys, args=args, client=pipe)
