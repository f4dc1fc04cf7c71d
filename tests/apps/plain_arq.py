"""A plain arq app, no scalr_queue: ``python -m arq tests.apps.plain_arq.WorkerSettings`` (pickle, ``arq:queue``)."""

import asyncio
import os

from arq.connections import RedisSettings


async def add(ctx: dict, x: int, y: int) -> int:
    await asyncio.sleep(0.02)  # at most 500 jobs a second: a migration can overtake this worker
    return x + y


class WorkerSettings:
    functions = [add]
    redis_settings = RedisSettings.from_dsn(os.environ["REDIS_URL"])
