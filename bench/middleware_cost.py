"""What each built-in middleware costs a job, beside no middleware and an empty pipeline: `make bench` runs it.

For each variant: enqueue N jobs with enqueue_many (jobs/s, Redis commands per job at enqueue), then drain them
with one worker process running 10 at once (jobs/s from first finish to empty, Redis commands and socket reads per
job, worker CPU per job). Commands run inside Lua scripts count (Redis counts each one). Repeated, medians shown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import counters, drain, stop_worker  # noqa: E402
from scalr_queue.client import Client  # noqa: E402
from scalr_queue.config import load_settings  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402

VARIANTS = [
    ("no middleware", "plain"),
    ("empty pipeline (one pass-through middleware)", "empty_pipeline"),
    ("RateLimited (never over the limit)", "rate_limited"),
    ("WithoutOverlapping (uncontended key)", "without_overlapping"),
    ("unique job (unique_for)", "unique"),
]


async def one(url: str, task: str, n: int) -> dict[str, float]:
    queue = f"m{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    client = Client(load_settings(REDIS_URL=url, name=queue, tasks="bench.middleware_tasks"))
    await client.enqueue(task, n=-1)  # the pool opened and the task known: not part of the figures
    await redis.delete(f"arq:queue:{queue}")
    before, _ = await counters(redis)
    started = time.perf_counter()
    for first in range(0, n, 1000):
        await client.enqueue_many([(task, {"n": i}) for i in range(first, min(first + 1000, n))])
    enqueue_s = time.perf_counter() - started
    after, _ = await counters(redis)
    enqueue_commands = (after - before - 1) / n
    await client.close()
    commands_before, reads_before = await counters(redis)
    worker = subprocess.Popen(
        [sys.executable, "-m", "scalr_queue.worker", "bench.middleware_tasks"],
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_URL": url,
            "SCALR_QUEUE_NAME": queue,
            "SCALR_QUEUE_CONCURRENCY": "10",
            "SCALR_QUEUE_LOG_LEVEL": "WARNING",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        polls, first_done, last_done = await drain(lambda: redis.zcard(f"arq:queue:{queue}"), n, task, 300)
    finally:
        commands_after, reads_after = await counters(redis)
        cpu_s, _ = stop_worker(worker)
        await redis.aclose()
    return {
        "enqueue_per_s": n / enqueue_s,
        "enqueue_commands_per_job": enqueue_commands,
        "per_s": (n - 1) / max(last_done - first_done, 1e-9),
        "commands_per_job": (commands_after - commands_before - polls - 1) / n,
        "reads_per_job": (reads_after - reads_before - polls - 1) / n,
        "cpu_ms_per_job": cpu_s * 1000 / n,  # start-up included: the same for every variant
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    found: dict[str, list[dict[str, float]]] = {}
    with RedisServer() as server:
        for _ in range(args.repeat):
            for _label, task in VARIANTS:
                found.setdefault(task, []).append(asyncio.run(one(server.url, task, args.n)))
    print(
        f"\nmiddleware cost, {args.n:,} no-op jobs, one worker at 10 at once, medians of {args.repeat} runs"
    )
    columns = [
        ("enqueue/s", "enqueue_per_s", "{:,.0f}"),
        ("cmds/job at enqueue", "enqueue_commands_per_job", "{:.2f}"),
        ("jobs/s", "per_s", "{:,.0f}"),
        ("cmds/job in worker", "commands_per_job", "{:.2f}"),
        ("reads/job", "reads_per_job", "{:.2f}"),
        ("CPU ms/job", "cpu_ms_per_job", "{:.3f}"),
    ]
    print(f"{'':<46}" + "".join(f"{title:>21}" for title, _, _ in columns))
    for label, task in VARIANTS:
        runs = found[task]
        cells = [fmt.format(statistics.median(r[key] for r in runs)) for _, key, fmt in columns]
        print(f"{label:<46}" + "".join(f"{c:>21}" for c in cells))


if __name__ == "__main__":
    main()
