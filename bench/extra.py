"""scalr_queue-only figures `make bench` prints after the main table: enqueue from sync code beside the awaited call,
and processing with 1, 2 and 4 worker processes on one Redis (with Redis's own CPU, to see where it saturates).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.systems import ScalrQueue  # noqa: E402


def sync_enqueue(url: str, n: int) -> dict[str, float]:
    """Per-call time of ``enqueue_sync`` from a plain thread, beside ``await enqueue`` on a loop (same process)."""
    os.environ["REDIS_URL"], os.environ["SCALR_QUEUE_NAME"] = url, f"s{uuid.uuid4().hex[:8]}"
    import scalr_queue
    from scalr_queue.testing import reset

    reset()

    async def awaited() -> float:
        await scalr_queue.enqueue("noop")
        started = time.perf_counter()
        for _ in range(n):
            await scalr_queue.enqueue("noop")
        elapsed = time.perf_counter() - started
        await scalr_queue.close()
        return elapsed

    result: dict[str, float] = {}

    def in_thread() -> None:  # a thread without a loop, as a sync FastAPI handler's
        scalr_queue.enqueue_sync("noop")
        started = time.perf_counter()
        for _ in range(n):
            scalr_queue.enqueue_sync("noop")
        result["sync_s"] = time.perf_counter() - started
        scalr_queue.close_sync()

    async_s = asyncio.run(awaited())
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    return {
        "async_us": async_s / n * 1e6,
        "sync_us": result["sync_s"] / n * 1e6,
        "ratio": result["sync_s"] / async_s,
    }


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def scaling(url: str, n: int, workers: int, concurrency: int = 10) -> dict[str, float]:
    """Drain n queued no-op jobs with ``workers`` worker processes; jobs/s, Redis CPU share, commands per job."""
    from bench.run import counters, drain, start_worker, stop_worker

    redis = Redis.from_url(url)
    system = ScalrQueue(url, f"w{uuid.uuid4().hex[:8]}", concurrency)
    await system.open()
    await system.fill(n)
    commands_before, _ = await counters(redis)
    cpu_before = await redis_cpu(redis)
    started_at = time.perf_counter()
    processes = [start_worker(system) for _ in range(workers)]
    try:
        polls, first, last = await drain(lambda: system.remaining(redis), n, f"{workers} workers")
    finally:
        commands_after, _ = await counters(redis)
        cpu_after = await redis_cpu(redis)
        for process in processes:
            stop_worker(process)
        await system.close()
        await redis.aclose()
    return {
        "per_s": (n - 1) / max(last - first, 1e-9),
        "redis_cpu_share": (cpu_after - cpu_before) / max(last - started_at, 1e-9),
        "commands_per_job": (commands_after - commands_before - polls) / n,
    }
