"""Tasks for the fault-injection suite: they leave traces in Redis so tests can see what ran where."""

from __future__ import annotations

import asyncio
import os
import signal

from scalr_queue import task


async def traced_sleep(ctx: dict, seconds: float, label: str) -> str:
    """Records each start (with the worker's pid) before sleeping, so a test can kill a worker mid-job."""
    await ctx["redis"].rpush(f"starts:{label}", f"{os.getpid()}:{ctx['job_try']}")
    await asyncio.sleep(seconds)
    await ctx["redis"].rpush(f"finishes:{label}", str(os.getpid()))
    return label


@task(max_tries=3)
async def kills_its_worker(ctx: dict, label: str) -> None:
    """A poison job: takes its worker down with it, on every try."""
    await ctx["redis"].rpush(f"starts:{label}", f"{os.getpid()}:{ctx['job_try']}")
    os.kill(os.getpid(), signal.SIGKILL)


@task(max_tries=1)
async def fails_while_flag(ctx: dict, flag: str) -> str:
    """Fails while the Redis key ``flag`` exists: a failure an operator can fix, then retry."""
    if await ctx["redis"].exists(flag):
        raise RuntimeError(f"{flag} is set")
    return "fixed"


async def record_run(ctx: dict, n: int, pad: str = "") -> int:
    """Counts its runs per job and remembers which worker process ran it (load test)."""
    queue = ctx["scalr_queue"].queue
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.hincrby(f"runs:{queue}", ctx["job_id"], 1)
        pipe.sadd(f"ran-by:{queue}:{os.getpid()}", ctx["job_id"])
        await pipe.execute()
    await asyncio.sleep(0.02)
    return n


tasks = [traced_sleep, kills_its_worker, fails_while_flag, record_run]
