"""What priorities, dependencies and batches cost a job, beside plain jobs: `make bench` runs it.

For each variant: enqueue N no-op jobs (jobs/s, Redis commands per job at enqueue), then drain them with one worker
process running 10 at once (jobs/s from first finish to empty, Redis commands and socket reads per job). Commands
run inside Lua scripts count (Redis counts each one). Repeated, medians shown. Variants:

- plain: ``enqueue_many``, 1,000 jobs per call;
- priorities: the same, ``_priority`` 0..9 in turn;
- depends: the same, each job after the first 1,000 with ``_depends_on`` the job 1,000 before it (so 1,000 run side
  by side and each release is one FINISH of a dependency);
- batch: one ``batch([...], then=call(...))`` of all N (the then job is one more job to drain).
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
from typing import Any

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import counters, stop_worker  # noqa: E402
from bench.workflow_tasks import noop  # noqa: E402
from scalr_queue import batch, call  # noqa: E402
from scalr_queue.client import Client  # noqa: E402
from scalr_queue.config import load_settings  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402

VARIANTS = [
    ("plain jobs", "plain"),
    ("priorities 0-9", "priorities"),
    ("each on one earlier job (_depends_on)", "depends"),
    ("one batch, with then", "batch"),
]
POLL_S = 0.02
CHUNK = 1000


async def _enqueue(client: Client, variant: str, n: int, tag: str) -> None:
    if variant == "batch":
        await batch([call(noop, n=i) for i in range(n)], then=call(noop, n=-2), client=client)
        return
    for first in range(0, n, CHUNK):
        jobs: list[tuple[Any, dict[str, Any]]] = []
        for i in range(first, min(first + CHUNK, n)):
            kwargs: dict[str, Any] = {"n": i}
            if variant == "priorities":
                kwargs["_priority"] = i % 10
            elif variant == "depends":
                kwargs["_job_id"] = f"{tag}:{i}"
                if i >= CHUNK:
                    kwargs["_depends_on"] = [f"{tag}:{i - CHUNK}"]
            jobs.append((noop, kwargs))
        await client.enqueue_many(jobs)


async def one(url: str, variant: str, n: int) -> dict[str, float]:
    queue = f"w{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    client = Client(load_settings(REDIS_URL=url, name=queue, tasks="bench.workflow_tasks"))
    await client.enqueue(noop, n=-1)  # the pool opened and the scripts loaded: not part of the figures
    await redis.delete(f"arq:queue:{queue}")
    before, _ = await counters(redis)
    started = time.perf_counter()
    await _enqueue(client, variant, n, queue)
    enqueue_s = time.perf_counter() - started
    after, _ = await counters(redis)
    enqueue_commands = (after - before - 1) / n
    await client.close()
    commands_before, reads_before = await counters(redis)
    worker = subprocess.Popen(
        [sys.executable, "-m", "scalr_queue.worker", "bench.workflow_tasks"],
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
    polls, first_done, last_done = 0, None, None
    total = n + (1 if variant == "batch" else 0)  # the then job is released into the queue at the end
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        left = await redis.zcard(f"arq:queue:{queue}")
        polls += 1
        moment = time.perf_counter()
        if first_done is None and 0 < left < n:
            first_done = moment
        if left == 0 and first_done is not None:
            last_done = moment
            break
        await asyncio.sleep(POLL_S)
    commands_after, reads_after = await counters(redis)
    stop_worker(worker)
    await redis.aclose()
    if first_done is None or last_done is None:
        raise RuntimeError(f"{variant}: {n} jobs not drained")
    return {
        "enqueue_per_s": n / enqueue_s,
        "enqueue_commands_per_job": enqueue_commands,
        "per_s": (total - 1) / max(last_done - first_done, 1e-9),
        "commands_per_job": (commands_after - commands_before - polls - 1) / total,
        "reads_per_job": (reads_after - reads_before - polls - 1) / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    found: dict[str, list[dict[str, float]]] = {}
    with RedisServer() as server:
        for _ in range(args.repeat):
            for _label, variant in VARIANTS:
                found.setdefault(variant, []).append(asyncio.run(one(server.url, variant, args.n)))
    print(f"\nworkflow cost, {args.n:,} no-op jobs, one worker at 10 at once, medians of {args.repeat} runs")
    columns = [
        ("enqueue/s", "enqueue_per_s", "{:,.0f}"),
        ("cmds/job at enqueue", "enqueue_commands_per_job", "{:.2f}"),
        ("jobs/s", "per_s", "{:,.0f}"),
        ("cmds/job in worker", "commands_per_job", "{:.2f}"),
        ("reads/job", "reads_per_job", "{:.2f}"),
    ]
    print(f"{'':<40}" + "".join(f"{title:>21}" for title, _, _ in columns))
    for label, variant in VARIANTS:
        runs = found[variant]
        cells = [fmt.format(statistics.median(r[key] for r in runs)) for _, key, fmt in columns]
        print(f"{label:<40}" + "".join(f"{c:>21}" for c in cells))


if __name__ == "__main__":
    main()
