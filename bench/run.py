"""scalr_queue beside plain arq, same machine, same Redis, same run: `make bench`.

Scenarios (medians of --repeat runs):
  enqueue     one awaited enqueue at a time (round-trip cost per job)
  process     N queued no-op jobs through one worker process at 10 at once, wall time of the worker process
Writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arq.connections import ArqRedis  # noqa: E402

import scalr_queue  # noqa: E402
from scalr_queue.client import Client  # noqa: E402
from scalr_queue.config import load_settings  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402


async def enqueue_scalr(url: str, n: int) -> float:
    client = Client(load_settings(REDIS_URL=url, name=f"bench{uuid.uuid4().hex[:8]}"))
    await client.enqueue("noop")  # connect and load the script outside the timing
    started = time.perf_counter()
    for _ in range(n):
        await client.enqueue("noop")
    took = time.perf_counter() - started
    await client.redis.delete(f"arq:queue:{client.settings.name}")
    await client.close()
    return n / took


async def enqueue_arq(url: str, n: int) -> float:
    redis = ArqRedis.from_url(url)
    queue = f"arq:queue:bench{uuid.uuid4().hex[:8]}"
    await redis.enqueue_job("noop", _queue_name=queue)
    started = time.perf_counter()
    for _ in range(n):
        await redis.enqueue_job("noop", _queue_name=queue)
    took = time.perf_counter() - started
    await redis.delete(queue)
    await redis.aclose()
    return n / took


async def fill(url: str, n: int, *, scalr: bool, queue: str) -> None:
    if scalr:
        client = Client(load_settings(REDIS_URL=url, name=queue))
        for start in range(0, n, 500):
            await asyncio.gather(*(client.enqueue("noop") for _ in range(min(500, n - start))))
        await client.close()
    else:
        redis = ArqRedis.from_url(url)
        for start in range(0, n, 500):
            await asyncio.gather(
                *(redis.enqueue_job("noop", _queue_name=queue) for _ in range(min(500, n - start)))
            )
        await redis.aclose()


def process(url: str, n: int, *, scalr: bool) -> float:
    """Jobs per second for one worker process draining n queued jobs (process start to exit)."""
    name = f"bench{uuid.uuid4().hex[:8]}"
    queue = name if scalr else f"arq:queue:{name}"
    asyncio.run(fill(url, n, scalr=scalr, queue=queue))
    env = {**os.environ, "REDIS_URL": url, "SCALR_QUEUE_NAME": name, "BENCH_ARQ_QUEUE": queue}
    command = (
        [sys.executable, "-m", "scalr_queue.worker", "bench.tasks", "--burst"]
        if scalr
        else [sys.executable, "-m", "arq", "bench.tasks.ArqSettings", "--burst"]
    )
    started = time.perf_counter()
    subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--enqueue-n", type=int, default=3000)
    parser.add_argument("--process-n", type=int, default=10_000)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with RedisServer() as server:
        version = subprocess.run([server.binary, "--version"], capture_output=True, text=True).stdout.split()[
            2
        ]
        print(
            f"redis-server {version}, python {sys.version.split()[0]}, scalr_queue {scalr_queue.__version__}"
        )
        runs: dict[str, list[float]] = {
            k: [] for k in ("enqueue_arq", "enqueue_scalr", "process_arq", "process_scalr")
        }
        for i in range(args.repeat):
            runs["enqueue_arq"].append(asyncio.run(enqueue_arq(server.url, args.enqueue_n)))
            runs["enqueue_scalr"].append(asyncio.run(enqueue_scalr(server.url, args.enqueue_n)))
            runs["process_arq"].append(process(server.url, args.process_n, scalr=False))
            runs["process_scalr"].append(process(server.url, args.process_n, scalr=True))
            print(f"run {i + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()))
    for scenario in ("enqueue", "process"):
        arq_median = statistics.median(runs[f"{scenario}_arq"])
        ours = statistics.median(runs[f"{scenario}_scalr"])
        results[scenario] = {"arq_per_s": arq_median, "scalr_queue_per_s": ours, "ratio": ours / arq_median}
    print()
    print(f"{'scenario':<44} {'plain arq':>12} {'scalr_queue':>12} {'ratio':>7}")
    labels = {
        "enqueue": f"enqueue, one awaited call at a time (n={args.enqueue_n})",
        "process": f"{args.process_n:,} no-op jobs, one worker, 10 at once",
    }
    for scenario, r in results.items():
        print(
            f"{labels[scenario]:<44} {r['arq_per_s']:>10,.0f}/s {r['scalr_queue_per_s']:>10,.0f}/s {r['ratio']:>6.2f}x"
        )
    for scenario, r in results.items():
        print(
            f"  {scenario}: arq {1e3 / r['arq_per_s']:.3f} ms/job, scalr_queue {1e3 / r['scalr_queue_per_s']:.3f} ms/job"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"runs": runs, "medians": results}, indent=2))
    print(f"\nwritten: {out / 'latest.json'}")


if __name__ == "__main__":
    main()
