"""A cron entry that fires every second, noting each run, to check one run per tick across many workers."""

from __future__ import annotations

import os

from arq import cron


async def each_second(ctx: dict) -> None:
    await ctx["redis"].rpush(f"ticks:{ctx['scalr_queue'].queue}", f"{ctx['job_id']}|{os.getpid()}")


async def noop(ctx: dict) -> None:
    return None


tasks = [noop]
cron_jobs = [cron(each_second, second=set(range(60)))]
