"""Tasks behind the built-in middleware and uniqueness, for tests/test_middleware.py.

Every key comes from the job's ``label`` argument, so tests sharing one Redis never share a limit or a lock. Each
run leaves its trace in Redis (``starts:<label>`` and friends) with the worker's own clock, for the test to judge.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from scalr_queue import NonRetryableError, task
from scalr_queue.middleware import CallNext, JobInfo, RateLimited, Released, WithoutOverlapping


def by_label(kwargs: Any) -> str:
    return f"test:{kwargs['label']}"


class Before:
    """Reads the clock before the middleware inside it runs: the rate limit decided its start after this."""

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        job.ctx["test_before"] = time.time()
        return await call_next()


class Stamp:
    """Notes when the rate limit let the job start: after ``Before`` read the clock, before this reads it."""

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        at = f"{job.ctx['test_before']:.6f}:{time.time():.6f}"
        await job.ctx["redis"].rpush(f"starts:{job.kwargs['label']}", f"{at}:{job.job_id}")
        return await call_next()


class Trail:
    """Worker-wide or per task: writes ``<name>:before`` and ``<name>:after`` to the job's trail."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        trail = f"trail:{job.kwargs['label']}"
        await job.ctx["redis"].rpush(trail, f"{self.name}:before")
        result = await call_next()
        await job.ctx["redis"].rpush(trail, f"{self.name}:after")
        return result


class HoldBackOnce:
    """Releases a job's first look for a moment (without using its try), then lets it run."""

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        if await job.ctx["redis"].incr(f"looks:{job.kwargs['label']}") == 1:
            return Released(0.2, "tenant_busy", job.kwargs["label"])
        return await call_next()


class Broken:
    """A middleware with a bug: the error is the job's, counted like a task error, and logged as this layer's."""

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any:
        raise KeyError("tenant")


middleware = [Trail("worker")]  # worker-wide: outside every task's own


@task(middleware=[Before(), RateLimited(by_label, max_attempts=10, decay_seconds=1), Stamp()])
async def limited(ctx: dict, label: str, n: int) -> int:
    return n


@task(middleware=[WithoutOverlapping(by_label)])
async def exclusive(ctx: dict, label: str, n: int, seconds: float = 0.1) -> int:
    redis = ctx["redis"]
    await redis.rpush(f"intervals:{label}", f"start:{time.time():.6f}:{n}:{os.getpid()}")
    await asyncio.sleep(seconds)
    await redis.rpush(f"intervals:{label}", f"end:{time.time():.6f}:{n}:{os.getpid()}")
    return n


@task(middleware=[WithoutOverlapping(by_label)], max_tries=1)
async def exclusive_once(ctx: dict, label: str, n: int, seconds: float = 0.1) -> int:
    """``exclusive`` with one try and the same key: a lock is shared by every task that names it."""
    return await exclusive.fn(ctx, label, n, seconds)


@task(middleware=[Trail("outer"), Trail("inner")])
async def layered(ctx: dict, label: str) -> str:
    await ctx["redis"].rpush(f"trail:{label}", "task")
    return "ran"


@task(middleware=[HoldBackOnce()])
async def held_back(ctx: dict, label: str) -> int:
    return ctx["job_try"]


@task(middleware=[Broken()], max_tries=1)
async def broken_layer(ctx: dict, label: str) -> None:
    raise AssertionError("never reached: the middleware raises first")


@task(unique_for=60)
async def unique_report(ctx: dict, label: str, seconds: float = 0.0) -> str:
    await asyncio.sleep(seconds)
    return label


@task(unique_id=lambda kw: kw["label"], unique_until_processing=True)
async def unique_until_start(ctx: dict, label: str, seconds: float = 0.0, n: int = 0) -> int:
    await asyncio.sleep(seconds)
    return n


async def note_failure(ctx: dict, record: Any) -> None:
    await ctx["redis"].rpush(f"on_failure:{record.kwargs['label']}", f"{record.job_id}:{record.reason}")


@task(max_tries=2, on_failure=note_failure, backoff=0)
async def doomed(ctx: dict, label: str, n: int) -> None:
    raise RuntimeError(f"job {n} fails every try")


@task(max_tries=2, on_failure=note_failure)
async def refuses(ctx: dict, label: str) -> None:
    raise NonRetryableError("bad input: no point trying again")


@task(max_tries=1, on_failure=note_failure)
async def hangs(ctx: dict, label: str) -> None:
    await ctx["redis"].rpush(f"hangs:{label}", str(os.getpid()))
    await asyncio.sleep(3600)


async def failing_hook(ctx: dict, record: Any) -> None:
    await ctx["redis"].incr(f"hook_calls:{record.kwargs['label']}")
    raise RuntimeError("the hook itself fails")


@task(max_tries=1, on_failure=failing_hook)
async def doomed_bad_hook(ctx: dict, label: str) -> None:
    raise RuntimeError("fails")


tasks = [
    limited,
    exclusive,
    exclusive_once,
    layered,
    held_back,
    broken_layer,
    unique_report,
    unique_until_start,
    doomed,
    refuses,
    hangs,
    doomed_bad_hook,
]
