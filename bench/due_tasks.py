"""Tasks for the due-time scenario: how late a deferred job, a retry and a cron run start after their due time.

Run as a scalr_queue worker module (``tasks``, ``cron_jobs``) and as plain arq WorkerSettings (``ArqSettings``).
Each task pushes its lateness (ms, start minus due time) onto a Redis list named by ``BENCH_DUE_KEY``.
"""

from __future__ import annotations

import math
import os
import time

from arq import Retry, cron

CRON_OFFSETS_S = (0.05, 0.25, 0.45, 0.65, 0.85)  # five cron entries, each every second: five samples a second


def _key(kind: str) -> str:
    return f"{os.environ['BENCH_DUE_KEY']}:{kind}"


async def deferred(ctx: dict, due_at: float) -> None:
    """A job deferred to ``due_at`` (the producer's clock)."""
    await ctx["redis"].rpush(_key("deferred"), f"{(time.time() - due_at) * 1000:.3f}")


async def retried(ctx: dict, delay: float) -> None:
    """Asks for a retry in ``delay`` s on its first try and measures how late the second try starts."""
    if ctx["job_try"] == 1:
        await ctx["redis"].set(f"{_key('due')}:{ctx['job_id']}", repr(time.time() + delay), ex=600)
        raise Retry(defer=delay)
    due_at = float(await ctx["redis"].get(f"{_key('due')}:{ctx['job_id']}"))
    await ctx["redis"].rpush(_key("retry"), f"{(time.time() - due_at) * 1000:.3f}")


def _cron_task(offset_s: float):  # type: ignore[no-untyped-def]
    async def tick(ctx: dict) -> None:
        now = time.time()
        due = math.floor(now - offset_s) + offset_s  # the tick this run is for: every second at offset_s
        await ctx["redis"].rpush(_key("cron"), f"{(now - due) * 1000:.3f}")

    tick.__name__ = tick.__qualname__ = f"tick_{int(offset_s * 100):02d}"
    return tick


_ticks = [_cron_task(offset) for offset in CRON_OFFSETS_S]
cron_jobs = [
    cron(tick, second=set(range(60)), microsecond=int(offset * 1_000_000), run_at_startup=False)
    for tick, offset in zip(_ticks, CRON_OFFSETS_S, strict=True)
]
tasks = [deferred, retried]


def _redis_settings() -> object:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


class ArqSettings:
    """Plain arq with its defaults (0.5 s polling), on the benchmark's queue."""

    functions = [deferred, retried]
    cron_jobs = cron_jobs
    queue_name = os.environ.get("BENCH_ARQ_QUEUE", "arq:queue")
    redis_settings = _redis_settings()
