"""Tasks for the fault suite: they leave traces in Redis so a test can see what ran where, and how often."""

from __future__ import annotations

import os
import time

from tests.apps.basic import add
from tests.apps.lifecycle import record_run, traced_sleep


async def blocks_the_loop(ctx: dict, seconds: float, label: str, first_try_only: bool = False) -> str:
    """Calls blocking code on the event loop (what a task must not do): the worker's loop stalls meanwhile."""
    await ctx["redis"].rpush(f"starts:{label}", f"{os.getpid()}:{ctx['job_try']}")
    if ctx["job_try"] == 1 or not first_try_only:
        time.sleep(seconds)
    await ctx["redis"].rpush(f"finishes:{label}", str(os.getpid()))
    return f"{label}@{os.getpid()}"


async def echo(ctx: dict, value: object = None) -> object:
    return value


tasks = [add, traced_sleep, record_run, blocks_the_loop, echo]
