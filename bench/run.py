"""scalr_queue beside plain arq (with its defaults) and the peers that are installed (saq, dramatiq: the `bench`
extra), on one machine, against one throwaway Redis, in one run: `make bench`.

Scenarios, each repeated (--repeat, default 3) and reported as medians:
  enqueue        one awaited enqueue at a time, on asyncio's own loop, then again on uvloop (dramatiq's
                 synchronous send is the same call both times)
  enqueue_many   20,000 jobs, as fast as each allows (scalr_queue: enqueue_many; arq, saq: 1,000 concurrent
                 calls at a time; dramatiq: its synchronous send)
  process c=10   N queued no-op jobs drained by one worker process running 10 at once (first finish to empty)
  process c=100  the same at 100 at once
  latency        from the producer's enqueue call to the task's start, jobs sent one by one at a steady rate to
                 an idle running worker (the task gets the producer's clock as an argument)
  due time       (scalr_queue and arq, once) how late after its due time a deferred job, a retry (arq's Retry with
                 a defer) and a cron run start on an idle worker: p50/p99 over --due-n samples each
From the c=10 run: Redis commands and socket reads (≈ round trips) per job, the worker's CPU per job and peak
RSS; from the latency run: Redis commands per second while the worker idles. Writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scalr_queue  # noqa: E402
from bench.systems import System, available  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402

POLL_S = 0.02


def queue_name() -> str:
    return f"b{uuid.uuid4().hex[:8]}"


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop, which uvicorn runs a FastAPI app on when it is installed (``uvicorn[standard]``)."""
    import uvloop

    return uvloop.new_event_loop


async def enqueue_one_at_a_time(kind: type[System], url: str, n: int) -> dict[str, float]:
    system = kind(url, queue_name())
    await system.open()
    await system.enqueue("noop")
    started = time.perf_counter()
    for _ in range(n):
        await system.enqueue("noop")
    rate = n / (time.perf_counter() - started)
    await system.close()
    return {"per_s": rate}


async def enqueue_many(kind: type[System], url: str, n: int) -> dict[str, float]:
    system = kind(url, queue_name())
    await system.open()
    started = time.perf_counter()
    await system.fill(n)
    rate = n / (time.perf_counter() - started)
    await system.close()
    return {"per_s": rate}


async def counters(redis: Redis) -> tuple[int, int]:
    stats = await redis.info("stats")
    return int(stats["total_commands_processed"]), int(stats["total_reads_processed"])


def start_worker(system: System, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        system.worker(),
        cwd=ROOT,
        env=system.env(**env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen[bytes], grace_s: float = 60) -> tuple[float, float]:
    """SIGTERM, wait (SIGKILL after ``grace_s``, reported); the worker's CPU seconds and peak RSS (MiB)."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            print(f"worker {process.args} did not stop within {grace_s:g} s of SIGTERM: killed", flush=True)
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


async def drain(
    remaining: Callable[[], Awaitable[int]], n: int, what: str, timeout_s: float = 600
) -> tuple[int, float, float]:
    """Poll ``remaining()`` until nothing is left: how many polls, when the first job was done, when the last."""
    polls, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = await remaining()
        polls += 1
        moment = time.perf_counter()
        if first is None and left < n:
            first = moment
        if left == 0:
            last = moment
            break
        await asyncio.sleep(POLL_S)
    if first is None or last is None:
        raise RuntimeError(f"{what} did not drain {n} jobs")
    return polls, first, last


async def process(kind: type[System], url: str, n: int, concurrency: int) -> dict[str, float]:
    """Drain n queued no-op jobs with one worker process; rate from the first finished job to an empty queue."""
    redis = Redis.from_url(url)
    idle = kind(url, queue_name(), concurrency)
    await idle.open()
    baseline = start_worker(idle)
    await asyncio.sleep(2.5)  # started and idle: its start-up CPU is the baseline
    baseline_cpu, _ = stop_worker(baseline)
    await idle.close()
    system = kind(url, queue_name(), concurrency)
    await system.open()
    await system.fill(n)
    commands_before, reads_before = await counters(redis)
    worker = start_worker(system)
    try:
        polls, first, last = await drain(lambda: system.remaining(redis), n, kind.name)
    finally:
        commands_after, reads_after = await counters(redis)
        cpu, rss = stop_worker(worker)
        await system.close()
        await redis.aclose()
    overhead = polls * (2 if kind.name == "saq" else 1) + 1
    return {
        "per_s": (n - 1) / max(last - first, 1e-9),
        "commands_per_job": (commands_after - commands_before - overhead) / n,
        "reads_per_job": (reads_after - reads_before - polls - 1) / n,
        "cpu_ms_per_job": max(cpu - baseline_cpu, 0) * 1000 / n,
        "rss_mib": rss,
    }


async def latency(kind: type[System], url: str, n: int, rate: float) -> dict[str, float]:
    """Producer-call-to-task-start times at a steady rate to a running, idle worker; and its idle Redis load."""
    key = f"latency:{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    system = kind(url, queue_name(), 10)
    await system.open()
    worker = start_worker(system, BENCH_LATENCY_KEY=key)
    try:
        await asyncio.sleep(3)  # started and settled
        idle_before, _ = await counters(redis)
        await asyncio.sleep(5)
        idle_after, _ = await counters(redis)
        started = time.perf_counter()
        for i in range(n):
            await system.enqueue("stamp", sent_at=time.time())
            await asyncio.sleep(max(started + (i + 1) / rate - time.perf_counter(), 0))
        deadline = time.monotonic() + 30
        while await redis.llen(key) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        waits = sorted(float(v) for v in await redis.lrange(key, 0, -1))
    finally:
        stop_worker(worker)
        await system.close()
        await redis.aclose()
    q = statistics.quantiles(waits, n=100)
    return {
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "idle_commands_per_s": (idle_after - idle_before - 1) / 5,
    }


async def due_time(kind: type[System], url: str, n: int) -> dict[str, float]:
    """Lateness after the due time of deferred jobs, retries and cron runs, on one idle worker."""
    key = f"due:{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    system = kind(url, queue_name(), 10)
    await system.open()
    ours = kind.name == "scalr_queue"
    command = [sys.executable, "-m"] + (
        ["scalr_queue.worker", "bench.due_tasks"] if ours else ["arq", "bench.due_tasks.ArqSettings"]
    )
    worker = subprocess.Popen(
        command,
        cwd=ROOT,
        env=system.env(BENCH_DUE_KEY=key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rng = random.Random(7)
    try:
        await asyncio.sleep(3)  # started and idle
        for i in range(2 * n):  # one job at a time: the worker is idle when each falls due
            delay = rng.uniform(0.05, 0.25)
            kind_key = f"{key}:deferred" if i % 2 == 0 else f"{key}:retry"
            before = await redis.llen(kind_key)
            if i % 2 == 0:
                await system.enqueue("deferred", due_at=time.time() + delay, _defer_by=delay)
            else:
                await system.enqueue("retried", delay=delay)
            deadline = time.monotonic() + 10
            while await redis.llen(kind_key) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.02, 0.1))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = [await redis.llen(f"{key}:{k}") for k in ("deferred", "retry", "cron")]
            if min(counts) >= n:
                break
            await asyncio.sleep(0.2)
        found = {
            k: sorted(float(v) for v in await redis.lrange(f"{key}:{k}", 0, n - 1))
            for k in ("deferred", "retry", "cron")
        }
    finally:
        stop_worker(worker)
        await system.close()
        await redis.aclose()
    out: dict[str, float] = {}
    for name, values in found.items():
        if len(values) < 2:
            raise RuntimeError(f"{kind.name}: only {len(values)} {name} samples")
        q = statistics.quantiles(values, n=100)
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"], out[f"{name}_n"] = q[49], q[98], len(values)
    return out


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
    parser.add_argument(
        "--due-n", type=int, default=200, help="samples of each kind in the due-time scenario"
    )
    parser.add_argument("--no-peers", action="store_true", help="only plain arq and scalr_queue")
    parser.add_argument(
        "--only", choices=["throughput", "due_time", "observability"], help="run only these scenarios"
    )
    args = parser.parse_args()
    if args.only == "observability":  # metrics and tracing on beside off: bench/observability.py
        from bench.observability import run_all

        run_all(args.process_n, args.repeat)
        return
    kinds = available()[:2] if args.no_peers else available()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {k.name: {} for k in kinds}
    with RedisServer() as server:
        version = subprocess.run([server.binary, "--version"], capture_output=True, text=True).stdout.split()[
            2
        ][2:]
        names = ", ".join(k.name for k in kinds)
        print(
            f"redis-server {version}, python {sys.version.split()[0]}, scalr_queue {scalr_queue.__version__}, {os.cpu_count()} CPUs; {names}"
        )
        for repetition in range(args.repeat if args.only != "due_time" else 0):
            for kind in kinds:
                found = runs[kind.name]
                found.setdefault("enqueue", []).append(
                    asyncio.run(enqueue_one_at_a_time(kind, server.url, args.enqueue_n))
                )
                with asyncio.Runner(loop_factory=uvloop_factory()) as on_uvloop:  # as under uvicorn[standard]
                    found.setdefault("enqueue_uvloop", []).append(
                        on_uvloop.run(enqueue_one_at_a_time(kind, server.url, args.enqueue_n))
                    )
                found.setdefault("enqueue_many", []).append(
                    asyncio.run(enqueue_many(kind, server.url, args.many_n))
                )
                found.setdefault("process_c10", []).append(
                    asyncio.run(process(kind, server.url, args.process_n, 10))
                )
                found.setdefault("process_c100", []).append(
                    asyncio.run(process(kind, server.url, args.process_n, 100))
                )
                found.setdefault("latency", []).append(
                    asyncio.run(latency(kind, server.url, args.latency_n, args.latency_rate))
                )
                server_flush(server)
            print(f"run {repetition + 1}/{args.repeat} done", flush=True)
        if args.only != "due_time":
            extra = run_extra(server, args)
        if args.only != "throughput":
            for kind in kinds[:2]:  # arq and scalr_queue: the peers' schedulers are not compared here
                runs[kind.name]["due_time"] = [asyncio.run(due_time(kind, server.url, args.due_n))]
                server_flush(server)
            print("due-time scenario done", flush=True)
    medians = {name: {scenario: median(r) for scenario, r in by.items()} for name, by in runs.items() if by}
    if args.only != "due_time":
        report(medians, args)
        report_extra(extra)
    if args.only != "throughput":
        report_due_time(medians)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "runs": runs,
                "medians": medians,
                "extra": extra if args.only != "due_time" else {},
            },
            indent=2,
        )
    )
    print(f"\nwritten: {out / 'latest.json'}")


def run_extra(server: RedisServer, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """scalr_queue alone: sync enqueue beside awaited, and 1, 2, 4 worker processes (medians of --repeat)."""
    from bench import extra

    found: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        found.setdefault("sync_enqueue", []).append(extra.sync_enqueue(server.url, args.enqueue_n))
        server_flush(server)
        for workers in (1, 2, 4):
            found.setdefault(f"workers_{workers}", []).append(
                asyncio.run(extra.scaling(server.url, args.process_n, workers))
            )
            server_flush(server)
    print("sync enqueue and worker scaling done", flush=True)
    return {name: median(r) for name, r in found.items()}


def report_extra(extra: dict[str, dict[str, float]]) -> None:
    s = extra["sync_enqueue"]
    print(
        f"\nscalr_queue from sync code: enqueue_sync {s['sync_us']:.1f} µs/call beside await enqueue "
        f"{s['async_us']:.1f} µs/call ({s['ratio']:.2f}x; target <= 1.5x)"
    )
    print(
        f"{'worker processes (10 at once each), one Redis':<54}{'jobs/s':>13}{'Redis CPU':>13}{'cmds/job':>13}"
    )
    for workers in (1, 2, 4):
        w = extra[f"workers_{workers}"]
        print(
            f"{workers:<54}{w['per_s']:>13,.0f}{w['redis_cpu_share'] * 100:>12.0f}%{w['commands_per_job']:>13.2f}"
        )


def server_flush(server: RedisServer) -> None:
    """Between systems: start the next from an empty Redis (old results and keys would skew its figures)."""
    subprocess.run(["redis-cli", "-p", str(server.port), "flushall"], capture_output=True, check=False)


ROWS = [
    ("enqueue, one awaited call at a time (jobs/s)", "enqueue", "per_s", True),
    ("the same, producer on uvloop (jobs/s)", "enqueue_uvloop", "per_s", True),
    ("enqueue_many / fastest bulk enqueue, {many} jobs (jobs/s)", "enqueue_many", "per_s", True),
    ("process {n} no-op jobs, 10 at once (jobs/s)", "process_c10", "per_s", True),
    ("process {n} no-op jobs, 100 at once (jobs/s)", "process_c100", "per_s", True),
    ("latency p50 at {rate} jobs/s (ms)", "latency", "p50_ms", False),
    ("latency p95 (ms)", "latency", "p95_ms", False),
    ("latency p99 (ms)", "latency", "p99_ms", False),
    ("Redis commands per job (c=10)", "process_c10", "commands_per_job", False),
    ("Redis socket reads per job, ≈ round trips (c=10)", "process_c10", "reads_per_job", False),
    ("worker CPU per job (ms, c=10)", "process_c10", "cpu_ms_per_job", False),
    ("Redis commands per second, idle worker", "latency", "idle_commands_per_s", False),
]


def report(m: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    names = list(m)
    width = 54
    print(
        f"\n{'medians of ' + str(args.repeat) + ' runs':<{width}}"
        + "".join(f"{n:>13}" for n in names)
        + f"{'vs arq':>9}{'vs best peer':>14}"
    )
    for label, scenario, key, higher_is_better in ROWS:
        text = label.format(many=f"{args.many_n:,}", n=f"{args.process_n:,}", rate=f"{args.latency_rate:g}")
        values = {name: m[name][scenario][key] for name in names}
        ours, arq = values["scalr_queue"], values["arq"]
        peers = [values[n] for n in names if n not in ("arq", "scalr_queue")]
        best = (max(peers) if higher_is_better else min(peers)) if peers else None
        vs_best = f"{ours / best:>13.2f}x" if best else f"{'-':>14}"
        print(
            f"{text:<{width}}"
            + "".join(f"{values[n]:>13,.2f}" for n in names)
            + f"{ours / arq:>8.2f}x"
            + vs_best
        )


DUE_ROWS = [
    ("deferred job, p50 / p99 lateness (ms)", "deferred"),
    ("retry (arq's Retry with a defer), p50 / p99 (ms)", "retry"),
    ("cron run, p50 / p99 (ms)", "cron"),
]


def report_due_time(m: dict[str, dict[str, dict[str, float]]]) -> None:
    """How late after its due time each kind of job starts on an idle worker (target: p50 <= 50, p99 <= 100)."""
    names = [n for n in m if "due_time" in m[n]]
    width = 54
    print(f"\n{'due-time accuracy, idle worker':<{width}}" + "".join(f"{n:>26}" for n in names))
    for label, kind in DUE_ROWS:
        cells = []
        for name in names:
            d = m[name]["due_time"]
            cells.append(f"{d[kind + '_p50_ms']:.1f} / {d[kind + '_p99_ms']:.1f} (n={d[kind + '_n']:.0f})")
        print(f"{label:<{width}}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
