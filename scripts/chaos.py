"""The fault suite at scale (`make chaos`): real workers, real redis-servers, faults injected while jobs flow.

Each scenario queues jobs whose task counts its runs in Redis (``runs:<queue>``, job id -> runs), injects its
fault, waits for the queue to drain (bounded), and reports, per scenario:
  enqueued   enqueues acknowledged (returned a job)
  completed  distinct jobs that ran to success
  failed     jobs in the failed store (only the poison scenario puts any there, on purpose)
  lost       acknowledged jobs that neither completed nor failed
  duplicated jobs that ran more than once; "explained" counts those a SIGKILLed worker was running, and those a
             worker logged as taken over by another (its lease ran out: a stalled loop, a long outage) or as
             retried (the task's own Redis call failed in the outage). At least once delivery: they run again
  stuck      jobs still queued or running when the scenario's time ran out
A scenario passes when nothing is lost or stuck and every duplicate is explained. Exit code 1 if any fails.
Minutes, bounded: a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scalr_queue import RedisFullError, RedisUnavailableError  # noqa: E402
from scalr_queue.client import Client  # noqa: E402
from scalr_queue.config import load_settings  # noqa: E402
from scalr_queue.testing import RedisServer  # noqa: E402

LOG_DIR = ROOT / "build" / "chaos"


def taken_over(log_dir: Path) -> set[str]:
    """Jobs a worker said another worker took over (its lease ran out: a stalled loop, a long outage), and jobs
    whose try failed and was retried (the task's own Redis call hit the outage): they run again by design."""
    found: set[str] = set()
    for log in log_dir.glob("worker-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if '"lease_lost"' in line or '"job_outcome_dropped"' in line or '"job_retrying"' in line:
                try:
                    found.add(str(json.loads(line)["job_id"]))
                except (ValueError, KeyError):
                    continue
    return found


@dataclass
class Outcome:
    name: str
    enqueued: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    explained: int = 0
    stuck: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.stuck == 0 and self.duplicated <= self.explained


class Worker:
    """A worker subprocess; its output goes to a log file (read for killed-while-running job ids)."""

    def __init__(self, url: str, queue: str, log_dir: Path, **env: str) -> None:
        self.log = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        full_env = {
            **os.environ,
            "REDIS_URL": url,
            "SCALR_QUEUE_NAME": queue,
            "SCALR_QUEUE_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scalr_queue.worker", env.get("APP", "tests.apps.lifecycle")],
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.events("worker_started"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def running_job_ids(self) -> set[str]:
        """Jobs started and not finished in this worker's log (what a SIGKILL would cut short)."""
        started = {str(e["job_id"]) for e in self.events("job_started")}
        ended = set()
        for name in ("job_succeeded", "job_failed", "job_retrying", "job_released"):
            ended |= {str(e["job_id"]) for e in self.events(name)}
        return started - ended

    def kill(self) -> set[str]:
        """SIGKILL; returns the jobs it was running (by its log, a moment before)."""
        running = self.running_job_ids()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return running | self.running_job_ids()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


async def count(url: str, queue: str, job_ids: list[str], outcome: Outcome, timeout: float) -> None:
    """Wait (bounded) for the queue to drain, then count completed, failed, lost, duplicated, stuck."""
    redis = Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if await redis.zcard(f"arq:queue:{queue}") == 0:
                break
            await asyncio.sleep(0.2)
        runs = {k.decode(): int(v) for k, v in (await redis.hgetall(f"runs:arq:queue:{queue}")).items()}
        if not runs:  # tasks that cannot write (a full Redis): a success result counts as one run
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.get(f"arq:result:{job_id}")
                results = await pipe.execute()
            runs = {j: 1 for j, r in zip(job_ids, results, strict=True) if r and json.loads(r).get("s")}
        failed = {m.decode() for m in await redis.zrange("arq:failed", 0, -1)}
        waiting = {m.decode() for m in await redis.zrange(f"arq:queue:{queue}", 0, -1)}
    finally:
        await redis.aclose()
    ids = set(job_ids)
    outcome.completed = len(ids & set(runs))
    outcome.failed = len(ids & failed)
    outcome.stuck = len(ids & waiting)
    outcome.lost = len(ids - set(runs) - failed - waiting)
    twice = [job_id for job_id in ids if runs.get(job_id, 0) > 1]
    outcome.duplicated = len(twice)
    outcome.explained += len(set(twice) & taken_over(LOG_DIR))
    if twice:
        outcome.notes.append(f"ran more than once: {', '.join(twice[:5])}{' ...' if len(twice) > 5 else ''}")


async def enqueue_all(url: str, queue: str, n: int, task: str = "record_run", **kwargs: object) -> list[str]:
    client = Client(load_settings(REDIS_URL=url, name=queue))
    try:
        ids = []
        for start in range(0, n, 1000):
            jobs = await client.enqueue_many(
                [(task, {"n": i, **kwargs}) for i in range(start, min(start + 1000, n))]
            )
            ids += [j.job_id for j in jobs if j is not None]
        return ids
    finally:
        await client.close()


# --- scenarios ------------------------------------------------------------------------------------------------


async def load_with_sigkills(log_dir: Path, n: int) -> Outcome:
    """3 workers drain n jobs; one is SIGKILLed twice (and restarted) while they run."""
    outcome = Outcome(f"3 workers, {n:,} jobs, 2 SIGKILLs")
    with RedisServer() as server:
        queue = f"c{uuid.uuid4().hex[:8]}"
        ids = await enqueue_all(server.url, queue, n)
        outcome.enqueued = len(ids)
        workers = [Worker(server.url, queue, log_dir) for _ in range(3)]
        for w in workers:
            w.wait_started()
        killed: set[str] = set()
        for _ in range(2):
            await asyncio.sleep(3)
            killed |= workers[0].kill()
            workers[0] = Worker(server.url, queue, log_dir)
            workers[0].wait_started()
        await count(server.url, queue, ids, outcome, timeout=240)
        outcome.explained += len(killed)
        for w in workers:
            w.stop()
    return outcome


async def redis_restart(log_dir: Path, n: int) -> Outcome:
    """Redis (AOF, fsync always) is stopped for 2 s and started again while 2 workers drain n jobs."""
    outcome = Outcome(f"Redis restart (AOF) under load, {n:,} jobs")
    with RedisServer(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        queue = f"c{uuid.uuid4().hex[:8]}"
        ids = await enqueue_all(server.url, queue, n)
        outcome.enqueued = len(ids)
        workers = [Worker(server.url, queue, log_dir) for _ in range(2)]
        for w in workers:
            w.wait_started()
        await asyncio.sleep(2)
        server.stop()
        await asyncio.sleep(2)
        server.start()
        await count(server.url, queue, ids, outcome, timeout=180)
        alive = sum(w.proc.poll() is None for w in workers)
        outcome.notes.append(f"{alive}/2 workers alive after the restart")
        if alive < 2:
            outcome.stuck += 1
        for w in workers:
            w.stop()
    return outcome


async def redis_stall(log_dir: Path, n: int) -> Outcome:
    """Redis stops answering for 4 s (DEBUG SLEEP) while 2 workers drain n jobs and a producer keeps enqueuing."""
    outcome = Outcome(f"Redis stall (4 s) under load, {n:,} jobs")
    with RedisServer(extra_args=("--enable-debug-command", "yes")) as server:
        queue = f"c{uuid.uuid4().hex[:8]}"
        ids = await enqueue_all(server.url, queue, n)
        workers = [Worker(server.url, queue, log_dir) for _ in range(2)]
        for w in workers:
            w.wait_started()
        await asyncio.sleep(1)
        client = Client(load_settings(REDIS_URL=server.url, name=queue, redis_timeout=1))
        other = Redis.from_url(server.url)
        stall = asyncio.ensure_future(other.execute_command("DEBUG", "SLEEP", "4"))
        unknown = 0
        for i in range(20):
            try:
                job = await client.enqueue("record_run", n=-i, _job_id=f"during-stall-{queue}-{i}")
                if job is not None:
                    ids.append(job.job_id)
            except RedisUnavailableError:
                unknown += 1  # outcome unknown: retried below with the same id, which is safe
            await asyncio.sleep(0.1)
        await stall
        await other.aclose()
        for i in range(20):
            job_id = f"during-stall-{queue}-{i}"
            if job_id not in ids:
                await client.enqueue("record_run", n=-i, _job_id=job_id)
                ids.append(job_id)
        await client.close()
        outcome.enqueued = len(ids)
        outcome.notes.append(f"{unknown} enqueues during the stall answered 'outcome unknown'; retried by id")
        await count(server.url, queue, ids, outcome, timeout=120)
        for w in workers:
            w.stop()
    return outcome


async def sigterm_cycles(log_dir: Path, cycles: int) -> Outcome:
    """Start a c=100 worker, drain 500 jobs, SIGTERM; again and again. Half the cycles use the trap that stops
    the worker exactly as a BLPOP send completes (tests/apps/sigterm_race.py), on asyncio and uvloop."""
    outcome = Outcome(f"{cycles} SIGTERM cycles (c=100, 500 jobs each)")
    with RedisServer() as server:
        queue = f"c{uuid.uuid4().hex[:8]}"
        ids: list[str] = []
        hung = 0
        for cycle in range(cycles):
            trap = cycle % 2 == 1
            env = {
                "SCALR_QUEUE_CONCURRENCY": "100",
                "SCALR_QUEUE_EVENT_LOOP": ("asyncio", "uvloop")[cycle % 4 // 2],
            }
            if trap:
                env["APP"] = "tests.apps.chaos_race"
            worker = Worker(server.url, queue, log_dir, **env)
            worker.wait_started()
            ids += await enqueue_all(server.url, queue, 500)
            redis = Redis.from_url(server.url)
            # drained, or (the trap) the worker stopped itself: what it put back, the next cycle runs
            while await redis.zcard(f"arq:queue:{queue}") and worker.proc.poll() is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await redis.aclose()
            if not trap:
                worker.proc.send_signal(signal.SIGTERM)
            try:
                code = worker.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                hung += 1
                worker.proc.kill()
                worker.proc.wait()
        outcome.enqueued = len(ids)
        last = Worker(server.url, queue, log_dir)  # runs what the last trapped cycle put back
        last.wait_started()
        await count(server.url, queue, ids, outcome, timeout=60)
        last.stop()
        outcome.notes.append(f"{hung} of {cycles} workers did not exit 0 within 40 s of the stop")
        outcome.stuck += hung
    return outcome


async def poison(log_dir: Path, n: int) -> Outcome:
    """n good jobs with 200 poison records among them (wrong types, not JSON, pickles, bad ids and scores)."""
    outcome = Outcome(f"{n:,} jobs with 200 poison records")
    with RedisServer() as server:
        queue = f"c{uuid.uuid4().hex[:8]}"
        ids = await enqueue_all(server.url, queue, n)
        outcome.enqueued = len(ids)
        redis = Redis.from_url(server.url)
        now_ms = int(time.time() * 1000)
        good = {"t": None, "f": "record_run", "a": [], "k": {"n": 1}, "et": now_ms}
        kinds: list[tuple[bytes | None, float]] = [
            (json.dumps({**good, "t": "abc"}).encode(), now_ms),
            (json.dumps({**good, "f": 7}).encode(), now_ms),
            (json.dumps({**good, "k": [1]}).encode(), now_ms),
            (json.dumps({**good, "et": 1e30}).encode(), now_ms),
            (b"\x80\x04\x95garbage pickle", now_ms),
            (b"\x00\xffnot json", now_ms),
            (None, now_ms),  # the record is a hash
            (json.dumps(good).encode(), float("-inf")),
        ]
        poison_ids = []
        for i in range(200):
            raw, score = kinds[i % len(kinds)]
            job_id = f"poison-{i}".encode() + (b"-\xff" if i % 17 == 0 else b"")
            if raw is None:
                await redis.hset(b"arq:job:" + job_id, "f", "x")
            else:
                await redis.set(b"arq:job:" + job_id, raw)
            await redis.zadd(f"arq:queue:{queue}", {job_id: score})
            poison_ids.append(job_id.decode(errors="backslashreplace"))
        workers = [Worker(server.url, queue, log_dir) for _ in range(2)]
        for w in workers:
            w.wait_started()
        await count(server.url, queue, ids, outcome, timeout=120)
        recorded = {m.decode() for m in await redis.zrange("arq:failed", 0, -1)}
        await redis.aclose()
        missing = [p for p in poison_ids if p not in recorded]
        alive = sum(w.proc.poll() is None for w in workers)
        outcome.notes.append(
            f"{200 - len(missing)}/200 poison records in the failed store; {alive}/2 workers alive"
        )
        outcome.lost += len(missing)
        outcome.stuck += 2 - alive
        for w in workers:
            w.stop()
    return outcome


async def full_redis(log_dir: Path, n: int) -> Outcome:
    """Redis hits maxmemory (noeviction) with n jobs queued: producers are refused with RedisFullError (nothing
    written), 2 workers keep finishing jobs (which frees memory) until the queue is empty. The task writes nothing
    itself (a task writing to a full Redis fails like any task whose store is full): results count its runs."""
    outcome = Outcome(f"full Redis (maxmemory), {n:,} jobs")
    with RedisServer(extra_args=("--maxmemory", "500mb")) as server:
        queue = f"c{uuid.uuid4().hex[:8]}"
        ids = await enqueue_all(server.url, queue, n, task="echo", value="x" * 2000)
        redis = Redis.from_url(server.url)
        used = (await redis.info("memory"))["used_memory"]
        await redis.config_set("maxmemory", str(used - 200_000))
        client = Client(load_settings(REDIS_URL=server.url, name=queue))
        refused = 0
        for i in range(20):
            try:
                await client.enqueue("echo", n=i, value="x" * 2000)
            except RedisFullError:
                refused += 1
        await client.close()
        outcome.enqueued = len(ids)
        workers = [Worker(server.url, queue, log_dir, APP="tests.apps.chaos_full") for _ in range(2)]
        for w in workers:
            w.wait_started()
        await count(server.url, queue, ids, outcome, timeout=180)
        alive = sum(w.proc.poll() is None for w in workers)
        full_logged = sum(len(w.events("redis_full")) for w in workers)
        outcome.notes.append(
            f"{refused}/20 enqueues refused while full (RedisFullError); {alive}/2 workers alive; "
            f"redis_full logged {full_logged}x"
        )
        outcome.stuck += 2 - alive
        await redis.aclose()
        for w in workers:
            w.stop()
    return outcome


def table(outcomes: list[Outcome]) -> str:
    head = (
        "scenario",
        "enqueued",
        "completed",
        "failed",
        "lost",
        "duplicated",
        "explained",
        "stuck",
        "s",
        "ok",
    )
    rows = [
        (
            o.name,
            f"{o.enqueued:,}",
            f"{o.completed:,}",
            str(o.failed),
            str(o.lost),
            str(o.duplicated),
            str(o.explained),
            str(o.stuck),
            f"{o.seconds:.0f}",
            "yes" if o.passed else "NO",
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    notes = [f"- {o.name}: {note}" for o in outcomes for note in o.notes]
    return "\n".join(lines + (["", *notes] if notes else []))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in the SIGKILL load scenario")
    parser.add_argument("--cycles", type=int, default=100, help="SIGTERM cycles")
    parser.add_argument("--only", nargs="*", help="run only these scenarios (names of the functions)")
    args = parser.parse_args()
    log_dir = LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    scenarios: list[tuple[str, Callable[[], Awaitable[Outcome]]]] = [
        ("load_with_sigkills", lambda: load_with_sigkills(log_dir, args.jobs)),
        ("redis_restart", lambda: redis_restart(log_dir, 5_000)),
        ("redis_stall", lambda: redis_stall(log_dir, 3_000)),
        ("sigterm_cycles", lambda: sigterm_cycles(log_dir, args.cycles)),
        ("poison", lambda: poison(log_dir, 3_000)),
        ("full_redis", lambda: full_redis(log_dir, 3_000)),
    ]
    outcomes = []
    for name, run in scenarios:
        if args.only and name not in args.only:
            continue
        print(f"chaos: {name} ...", flush=True)
        started = time.monotonic()
        outcome = asyncio.run(run())
        outcome.seconds = time.monotonic() - started
        outcomes.append(outcome)
        print(f"chaos: {name}: {'ok' if outcome.passed else 'FAILED'} in {outcome.seconds:.0f} s", flush=True)
    print()
    print(table(outcomes))
    print(f"\nworker logs: {log_dir}")
    sys.exit(0 if all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    main()
