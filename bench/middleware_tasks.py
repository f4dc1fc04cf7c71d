"""The benchmark's no-op task behind each built-in middleware (bench/middleware_cost.py), as one worker module.

The limits never bite: the rate limit is far above the rate, and each job locks its own key, so what is measured
is what each built-in costs a job that passes, not time spent waiting.
"""

from __future__ import annotations

from typing import Any

from scalr_queue import task
from scalr_queue.middleware import CallNext, JobInfo, RateLimited, WithoutOverlapping


class PassThrough:
    """An empty middleware: the price of having a pipeline at all."""

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        return await call_next()


@task
async def plain(ctx: dict, n: int) -> None:
    return None


@task(middleware=[PassThrough()])
async def empty_pipeline(ctx: dict, n: int) -> None:
    return None


@task(middleware=[RateLimited("bench", max_attempts=10**9, decay_seconds=1)])
async def rate_limited(ctx: dict, n: int) -> None:
    return None


@task(middleware=[WithoutOverlapping(lambda kw: f"bench:{kw['n']}")])
async def without_overlapping(ctx: dict, n: int) -> None:
    return None


@task(unique_for=600)
async def unique(ctx: dict, n: int) -> None:
    return None


tasks = [plain, empty_pipeline, rate_limited, without_overlapping, unique]
