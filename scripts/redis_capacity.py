"""How much Redis one job costs, to size how many workers one Redis serves.

    python scripts/redis_capacity.py [--jobs 20000] [--workers 1 2 4] [--concurrency 100]

For each worker count: queue the jobs with enqueue_many, start that many worker processes (tests.apps.basic's
no-op ``add``), wait until every job has a result, and read the server's own counters (INFO cpu, INFO stats) over
the processing only: Redis CPU seconds, commands, and jobs per second. Redis runs one command at a time on one core,
so its CPU per job bounds what one server can take, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from scalr_queue import Client  # noqa: E402
from scalr_queue.config import Settings  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402


def counters(admin: redis.Redis) -> tuple[float, int]:
    cpu = admin.info("cpu")
    stats = admin.info("stats")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), int(stats["total_commands_processed"])


def one_run(jobs: int, workers: int, concurrency: int) -> dict[str, float]:
    with RedisServer() as server:
        admin = redis.Redis(port=server.port)
        queue = f"cap{workers}"
        client = Client(Settings(REDIS_URL=server.url, name=queue))  # type: ignore[call-arg]

        async def fill() -> None:
            for start in range(0, jobs, 5000):
                await client.enqueue_many(
                    [("add", {"x": i, "y": 1}) for i in range(start, min(start + 5000, jobs))]
                )
            await client.close()

        asyncio.run(fill())
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "SCALR_QUEUE_NAME": queue,
            "SCALR_QUEUE_CONCURRENCY": str(concurrency),
            "SCALR_QUEUE_LOG_LEVEL": "WARNING",
        }
        cpu0, commands0 = counters(admin)
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        while admin.zcard(f"arq:queue:{queue}") > 0:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        cpu1, commands1 = counters(admin)
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        admin.close()
    return {
        "jobs/s": jobs / elapsed,
        "Redis CPU ms per 1,000 jobs": (cpu1 - cpu0) * 1e6 / jobs,
        "Redis CPU busy (share of one core)": (cpu1 - cpu0) / elapsed,
        "commands per job": (commands1 - commands0) / jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; {args.jobs:,} no-op jobs, {args.concurrency} at once per worker")
    for workers in args.workers:
        figures = one_run(args.jobs, workers, args.concurrency)
        shown = ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
        print(f"{workers} worker process(es): {shown}", flush=True)


if __name__ == "__main__":
    main()
