"""scalr_queue beside plain arq (with its defaults), same machine, same Redis, same run: `make bench`.

Scenarios, each repeated (--repeat, default 3) and reported as medians:
  enqueue        one awaited enqueue at a time
  enqueue_many   20,000 jobs through enqueue_many (arq: 1,000 concurrent enqueue_job calls at a time)
  process c=10   N queued no-op jobs drained by one worker process running 10 at once (first finish to empty)
  process c=100  the same at 100 at once
  latency        enqueue-to-start of jobs sent one by one at a steady rate to an idle running worker
Per job in the c=10 run: Redis commands and socket reads (≈ round trips) and the worker's CPU; the worker's
peak RSS; Redis commands per second while the worker idles. Writes bench/results/latest.json.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arq.connections import ArqRedis  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

import scalr_queue  # noqa: E402
from scalr_queue.client import Client  # noqa: E402
from scalr_queue.config import load_settings  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402

SYSTEMS = ("arq", "scalr_queue")
POLL_S = 0.02


def worker_command(system: str, burst: bool) -> list[str]:
    if system == "arq":
        command = [sys.executable, "-m", "arq", "bench.tasks.ArqSettings"]
    else:
        command = [sys.executable, "-m", "scalr_queue.worker", "bench.tasks"]
    return [*command, "--burst"] if burst else command


def worker_env(url: str, system: str, name: str, concurrency: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": url,
        "SCALR_QUEUE_NAME": name,
        "SCALR_QUEUE_CONCURRENCY": str(concurrency),
        "BENCH_ARQ_QUEUE": f"arq:queue:{name}",
        "BENCH_CONCURRENCY": str(concurrency),
        **extra,
    }


async def enqueue_one_at_a_time(url: str, system: str, n: int) -> float:
    name = f"b{uuid.uuid4().hex[:8]}"
    if system == "arq":
        redis = ArqRedis.from_url(url)
        call: Callable[[], Any] = lambda: redis.enqueue_job("noop", _queue_name=f"arq:queue:{name}")  # noqa: E731
    else:
        client = Client(load_settings(REDIS_URL=url, name=name))
        call = lambda: client.enqueue("noop")  # noqa: E731
    await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    rate = n / (time.perf_counter() - started)
    cleanup = redis if system == "arq" else client.redis
    await cleanup.delete(f"arq:queue:{name}")
    await (redis.aclose() if system == "arq" else client.close())
    return rate


async def fill(url: str, system: str, name: str, n: int, task: str = "noop") -> float:
    """Put n jobs on the queue as fast as the system allows; returns jobs per second."""
    started = time.perf_counter()
    if system == "arq":
        redis = ArqRedis.from_url(url)
        for first in range(0, n, 1000):
            calls = (
                redis.enqueue_job(task, _queue_name=f"arq:queue:{name}") for _ in range(min(1000, n - first))
            )
            await asyncio.gather(*calls)
        await redis.aclose()
    else:
        client = Client(load_settings(REDIS_URL=url, name=name))
        for first in range(0, n, 1000):
            await client.enqueue_many([(task, {}) for _ in range(min(1000, n - first))])
        await client.close()
    return n / (time.perf_counter() - started)


async def enqueue_many(url: str, system: str, n: int) -> float:
    name = f"b{uuid.uuid4().hex[:8]}"
    rate = await fill(url, system, name, n)
    redis = Redis.from_url(url)
    await redis.delete(f"arq:queue:{name}")
    async for key in redis.scan_iter(match="arq:job:*", count=5000):
        await redis.delete(key)
    await redis.aclose()
    return rate


async def redis_counters(redis: Redis) -> tuple[int, int]:
    stats = await redis.info("stats")
    return int(stats["total_commands_processed"]), int(stats["total_reads_processed"])


def run_worker_to_empty(url: str, system: str, name: str, concurrency: int) -> tuple[float, float]:
    """Run a burst worker; returns (CPU seconds, peak RSS in MiB) from the child's rusage."""
    process = subprocess.Popen(
        worker_command(system, burst=True),
        cwd=ROOT,
        env=worker_env(url, system, name, concurrency, SCALR_QUEUE_LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{system} worker exited with {process.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


async def process(url: str, system: str, n: int, concurrency: int) -> dict[str, float]:
    """Drain n queued no-op jobs with one worker process; rate from the first finished job to an empty queue."""
    name = f"b{uuid.uuid4().hex[:8]}"
    queue_key = f"arq:queue:{name}"
    redis = Redis.from_url(url)
    baseline_cpu, _ = await asyncio.to_thread(run_worker_to_empty, url, system, f"empty{name}", concurrency)
    await fill(url, system, name, n)
    commands_before, reads_before = await redis_counters(redis)
    worker = asyncio.create_task(asyncio.to_thread(run_worker_to_empty, url, system, name, concurrency))
    polls = 0
    first = last = None
    while True:
        left = await redis.zcard(queue_key)
        polls += 1
        now = time.perf_counter()
        if first is None and left < n:
            first = now
        if left == 0:
            last = now
            break
        await asyncio.sleep(POLL_S)
    cpu, rss = await worker
    commands_after, reads_after = await redis_counters(redis)
    await redis.aclose()
    assert first is not None and last is not None
    return {
        "per_s": (n - 1) / max(last - first, 1e-9),
        "commands_per_job": (commands_after - commands_before - polls - 1) / n,
        "reads_per_job": (reads_after - reads_before - polls - 1) / n,
        "cpu_ms_per_job": max(cpu - baseline_cpu, 0) * 1000 / n,
        "rss_mib": rss,
    }


async def latency(url: str, system: str, n: int, rate: float) -> dict[str, float]:
    """Enqueue-to-start times at a steady rate to a running, idle worker; and the idle worker's Redis load."""
    name = f"b{uuid.uuid4().hex[:8]}"
    key = f"latency:{name}"
    redis = Redis.from_url(url)
    worker = subprocess.Popen(
        worker_command(system, burst=False),
        cwd=ROOT,
        env=worker_env(url, system, name, 10, BENCH_LATENCY_KEY=key, SCALR_QUEUE_LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(3)  # started and settled
        idle_before, _ = await redis_counters(redis)
        await asyncio.sleep(5)
        idle_after, _ = await redis_counters(redis)
        if system == "arq":
            arq = ArqRedis.from_url(url)
            send: Callable[[], Any] = lambda: arq.enqueue_job("stamp", _queue_name=f"arq:queue:{name}")  # noqa: E731
        else:
            client = Client(load_settings(REDIS_URL=url, name=name))
            send = lambda: client.enqueue("stamp")  # noqa: E731
        started = time.perf_counter()
        for i in range(n):
            await send()
            await asyncio.sleep(max(started + (i + 1) / rate - time.perf_counter(), 0))
        deadline = time.monotonic() + 30
        while await redis.llen(key) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        waits = sorted(float(v) for v in await redis.lrange(key, 0, -1))
        await (arq.aclose() if system == "arq" else client.close())
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await redis.aclose()
    q = statistics.quantiles(waits, n=100)
    return {
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "idle_commands_per_s": (idle_after - idle_before - 1) / 5,
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--enqueue-n", type=int, default=3000)
    parser.add_argument("--many-n", type=int, default=20_000)
    parser.add_argument("--process-n", type=int, default=10_000)
    parser.add_argument("--latency-n", type=int, default=1000)
    parser.add_argument(
        "--latency-rate", type=float, default=200.0, help="jobs per second in the latency scenario"
    )
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {} for s in SYSTEMS}
    with RedisServer() as server:
        version = subprocess.run([server.binary, "--version"], capture_output=True, text=True).stdout.split()[
            2
        ][2:]
        print(
            f"redis-server {version}, python {sys.version.split()[0]}, scalr_queue {scalr_queue.__version__}, {os.cpu_count()} CPUs"
        )
        for repetition in range(args.repeat):
            for system in SYSTEMS:
                found = runs[system]
                found.setdefault("enqueue", []).append(
                    {"per_s": asyncio.run(enqueue_one_at_a_time(server.url, system, args.enqueue_n))}
                )
                found.setdefault("enqueue_many", []).append(
                    {"per_s": asyncio.run(enqueue_many(server.url, system, args.many_n))}
                )
                found.setdefault("process_c10", []).append(
                    asyncio.run(process(server.url, system, args.process_n, 10))
                )
                found.setdefault("process_c100", []).append(
                    asyncio.run(process(server.url, system, args.process_n, 100))
                )
                found.setdefault("latency", []).append(
                    asyncio.run(latency(server.url, system, args.latency_n, args.latency_rate))
                )
            print(f"run {repetition + 1}/{args.repeat} done")
    medians = {system: {scenario: median(r) for scenario, r in runs[system].items()} for system in SYSTEMS}
    report(medians, args)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps({"args": vars(args), "runs": runs, "medians": medians}, indent=2)
    )
    print(f"\nwritten: {out / 'latest.json'}")


def report(m: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    a, s = m["arq"], m["scalr_queue"]
    rows = [
        ("enqueue, one awaited call at a time (jobs/s)", a["enqueue"]["per_s"], s["enqueue"]["per_s"]),
        (
            f"enqueue_many, {args.many_n:,} jobs (jobs/s)",
            a["enqueue_many"]["per_s"],
            s["enqueue_many"]["per_s"],
        ),
        (
            f"process {args.process_n:,} no-op jobs, 10 at once (jobs/s)",
            a["process_c10"]["per_s"],
            s["process_c10"]["per_s"],
        ),
        (
            f"process {args.process_n:,} no-op jobs, 100 at once (jobs/s)",
            a["process_c100"]["per_s"],
            s["process_c100"]["per_s"],
        ),
        (f"latency p50 at {args.latency_rate:g} jobs/s (ms)", a["latency"]["p50_ms"], s["latency"]["p50_ms"]),
        ("latency p95 (ms)", a["latency"]["p95_ms"], s["latency"]["p95_ms"]),
        ("latency p99 (ms)", a["latency"]["p99_ms"], s["latency"]["p99_ms"]),
        (
            "Redis commands per job (c=10)",
            a["process_c10"]["commands_per_job"],
            s["process_c10"]["commands_per_job"],
        ),
        (
            "Redis socket reads per job (≈ round trips, c=10)",
            a["process_c10"]["reads_per_job"],
            s["process_c10"]["reads_per_job"],
        ),
        (
            "worker CPU per job (ms, c=10)",
            a["process_c10"]["cpu_ms_per_job"],
            s["process_c10"]["cpu_ms_per_job"],
        ),
        ("worker peak RSS (MiB)", a["process_c10"]["rss_mib"], s["process_c10"]["rss_mib"]),
        (
            "Redis commands per second, idle worker",
            a["latency"]["idle_commands_per_s"],
            s["latency"]["idle_commands_per_s"],
        ),
    ]
    print(
        f"\n{'scenario (medians of ' + str(args.repeat) + ')':<58} {'plain arq':>12} {'scalr_queue':>12} {'ratio':>8}"
    )
    for label, arq_value, ours in rows:
        print(
            f"{label:<58} {arq_value:>12,.2f} {ours:>12,.2f} {ours / arq_value if arq_value else float('nan'):>7.2f}x"
        )


if __name__ == "__main__":
    main()
