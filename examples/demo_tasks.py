"""The tasks the demo's worker runs: python -m scalr_queue.worker examples.demo_tasks"""

import asyncio
from datetime import datetime

from scalr_queue import task


async def add(ctx: dict, x: int, y: int) -> int:
    return x + y


async def greet(ctx: dict, name: str, when: datetime) -> str:
    return f"hello {name}, it is {when:%H:%M} (a {type(when).__name__}, rebuilt from JSON)"


@task(timeout=1, max_tries=1)
async def slow(ctx: dict, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task(max_tries=2, backoff=0.5)
async def boom(ctx: dict, message: str) -> None:
    raise ValueError(message)


tasks = [add, greet, slow, boom]
