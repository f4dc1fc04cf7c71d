"""Worker module for the workflow tests (abort, priorities, every): tasks record when they start and finish."""

from __future__ import annotations

import asyncio
import os
import time

from scalr_queue import task

STARTS = "test:flow:starts:"  # + queue: a list of labels, in the order their jobs started


def _queue() -> str:
    return os.environ.get("SCALR_QUEUE_NAME", "default")


@task(max_tries=5, backoff=0.1)
async def nap(ctx: dict, seconds: float, label: str = "") -> float:
    """Records its start, then sleeps; its end is recorded only if it was not cancelled."""
    await ctx["redis"].rpush(STARTS + _queue(), f"start:{label}")
    await asyncio.sleep(seconds)
    await ctx["redis"].rpush(STARTS + _queue(), f"end:{label}")
    return seconds


@task(max_tries=1)
async def mark(ctx: dict, label: str) -> str:
    """Records its label as it starts (the start order of a queue's jobs)."""
    await ctx["redis"].rpush(STARTS + _queue(), label)
    return label


async def tick(ctx: dict, label: str = "tick") -> None:
    """Records a run of a repeating job, with the time it ran."""
    await ctx["redis"].rpush(STARTS + _queue(), f"{label}:{time.time():.3f}")


tasks = [nap, mark, tick]


@task(max_tries=1)
async def fail_for_good(ctx: dict, label: str) -> None:
    """Records its start, then fails for good."""
    await ctx["redis"].rpush(STARTS + _queue(), label)
    raise RuntimeError(f"{label} failed")


tasks += [fail_for_good]


@task(max_tries=1)
async def noop(ctx: dict) -> None:
    """Does nothing (a batch's filler)."""


@task(max_tries=3, backoff=0.05)
async def flaky(ctx: dict, label: str, fail_tries: int) -> str:
    """Fails its first ``fail_tries`` tries (3 or more: fails for good), recording each try as label:try."""
    await ctx["redis"].rpush(STARTS + _queue(), f"{label}:{ctx['job_try']}")
    if ctx["job_try"] <= fail_tries:
        raise RuntimeError(f"{label} try {ctx['job_try']} failed")
    return label


@task(max_tries=1)
async def callback(ctx: dict, label: str) -> str:
    """A batch's then/catch: records its label and the batch id its ctx carries."""
    await ctx["redis"].rpush(STARTS + _queue(), f"{label}:{ctx.get('batch_id')}")
    return label


tasks += [noop, flaky, callback]
