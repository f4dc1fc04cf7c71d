"""The benchmark's tasks for dramatiq (a peer): `dramatiq bench.dramatiq_tasks --processes 1 --threads N`."""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
dramatiq.set_broker(broker)
QUEUE = os.environ.get("BENCH_QUEUE", "default")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop() -> None:
    return None


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def stamp(sent_at: float) -> None:
    broker.client.rpush(os.environ["BENCH_LATENCY_KEY"], f"{(time.time() - sent_at) * 1000:.3f}")
