"""The benchmark's tasks for saq (a peer): `saq bench.saq_tasks.settings`."""

import os
import time

from saq import Queue

queue = Queue.from_url(
    os.environ.get("REDIS_URL", "redis://localhost:6379/0"), name=os.environ.get("BENCH_QUEUE", "default")
)


async def noop(ctx: dict) -> None:
    return None


async def stamp(ctx: dict, *, sent_at: float) -> None:
    await queue.redis.rpush(os.environ["BENCH_LATENCY_KEY"], f"{(time.time() - sent_at) * 1000:.3f}")


settings = {
    "queue": queue,
    "functions": [noop, stamp],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
}
