"""Tasks for the benchmark, as a scalr_queue worker module and as plain arq WorkerSettings (arq's defaults)."""

import os
import time


async def noop(ctx: dict) -> None:
    return None


async def stamp(ctx: dict, sent_at: float) -> None:
    """Records how long the job waited from the producer's call to its start (ms), for the latency scenario.

    ``sent_at`` is the producer's clock just before it enqueued; arq's own enqueue time is whole milliseconds,
    too coarse for sub-millisecond latencies.
    """
    waited_ms = (time.time() - sent_at) * 1000
    await ctx["redis"].rpush(os.environ["BENCH_LATENCY_KEY"], f"{waited_ms:.3f}")


tasks = [noop, stamp]


def _redis_settings() -> object:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


class ArqSettings:
    """Plain arq with its defaults (pickle, 0.5 s polling), on the benchmark's queue and concurrency."""

    functions = [noop, stamp]
    queue_name = os.environ.get("BENCH_ARQ_QUEUE", "arq:queue")
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    redis_settings = _redis_settings()
