"""The benchmark's tasks for taskiq (a peer), on taskiq-redis's stream broker:
`taskiq worker bench.taskiq_tasks:broker --workers 1 --max-async-tasks N`.

The consumer group starts at the stream's beginning (``consumer_id="0"``), so jobs queued before the worker started
are read too, as with every other system in the benchmark.
"""

import os
import time

from redis.asyncio import Redis
from taskiq_redis import RedisStreamBroker

URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
STREAM = f"taskiq:{os.environ.get('BENCH_QUEUE', 'default')}"
broker = RedisStreamBroker(url=URL, queue_name=STREAM, consumer_id="0")
_redis: Redis | None = None


@broker.task
async def noop() -> None:
    return None


@broker.task
async def stamp(sent_at: float) -> None:
    global _redis
    if _redis is None:
        _redis = Redis.from_url(URL)
    await _redis.rpush(os.environ["BENCH_LATENCY_KEY"], f"{(time.time() - sent_at) * 1000:.3f}")
