"""Per-worker liveness: each worker beats every few seconds with a short expiry; the probe asks for a live one.

arq keeps one health key per queue that lives an hour and is deleted when any worker exits, so a dead
worker looks healthy for an hour and a clean stop makes live siblings look dead. Here each worker owns its
own record (``arq:worker:<id>``, JSON) and its own member of ``arq:workers:<queue>`` scored by the moment
its heartbeat runs out; nobody else touches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis

from . import keys
from ._aio import cancel_until_done
from ._lua import scripts
from .config import Settings
from .connection import REDIS_DOWN_ERRORS, create_redis, describe_error, redis_call
from .exceptions import RedisUnavailableError
from .logs import get_logger
from .stats import QueueCounts, queue_counts

log = get_logger("scalr_queue.health")

MISSED_BEATS = 3  # a worker is dead once this many heartbeats are missing
SWEEP_EVERY = 6  # beats between sweeps of dead workers from the queue's set (30 s by default)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerState:
    """What one worker process knows about itself: in its jobs' ``ctx["scalr_queue"]``, and in its heartbeat."""

    worker_id: str
    queue: str
    tasks: list[str]
    running: dict[str, str] = field(default_factory=dict)  # job id -> task name
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0  # put back without using a try (rate limits, locks): not runs
    started_at: float = field(default_factory=time.time)
    lease_s: float = 10.0  # how long its leases (and WithoutOverlapping locks) last unrenewed


class Heartbeat:
    """Writes this worker's record every ``interval`` seconds until stopped, then removes it."""

    def __init__(self, redis: ArqRedis, state: WorkerState, interval: float) -> None:
        self.redis = redis
        self.state = state
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._beats = 0

    @property
    def ttl_ms(self) -> int:
        return int(self.interval * MISSED_BEATS * 1000)

    def record(self) -> dict[str, Any]:
        s = self.state
        return {
            "worker_id": s.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": keys.queue_name(s.queue),
            "tasks": s.tasks,
            "started_at": s.started_at,
            "beat_at": time.time(),
            "running": [{"job_id": job_id, "task": name} for job_id, name in s.running.items()],
            "succeeded": s.succeeded,
            "failed": s.failed,
            "retried": s.retried,
        }

    async def beat(self) -> None:
        """One call: the record, the worker's member of the queue's set, dead members swept."""
        await scripts(self.redis).heartbeat(
            keys=[keys.worker_key(self.state.worker_id), keys.workers_key(self.state.queue), keys.QUEUES_KEY],
            args=[
                json.dumps(self.record()),
                self.ttl_ms,
                self.state.worker_id,
                int(time.time() * 1000),
                keys.queue_name(self.state.queue),
                1 if self._beats % SWEEP_EVERY == 0 else 0,
            ],
        )
        self._beats += 1

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception as exc:  # never let the heartbeat stop: the worker would look dead
                if not failing:
                    log.warning("heartbeat_failed", error=describe_error(exc))
                failing = True
            else:
                failing = False

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scalr_queue heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_until_done([self._task], 2.0)
            self._task = None
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.worker_key(self.state.worker_id))
                pipe.zrem(keys.workers_key(self.state.queue), self.state.worker_id)
                await pipe.execute()


@dataclass
class HealthReport:
    """What the probe found for one queue."""

    queue: str
    host: str
    any_host: bool
    workers: list[dict[str, Any]] = field(default_factory=list)
    counts: QueueCounts | None = None
    error: str | None = None

    @property
    def serving(self) -> list[dict[str, Any]]:
        """The live workers that count: all of them with ``any_host``, else those on this host."""
        return [w for w in self.workers if self.any_host or w.get("host") == self.host]

    @property
    def healthy(self) -> bool:
        return self.error is None and bool(self.serving)

    def lines(self) -> list[str]:
        if self.error:
            return [f"unhealthy: {self.error}"]
        where = "" if self.any_host else f" on host {self.host}"
        head = (
            f"healthy: {len(self.serving)} live worker(s){where} serve queue {self.queue!r}"
            if self.healthy
            else f"unhealthy: no live worker{where} serves queue {self.queue!r}"
            + (f" ({len(self.workers)} live elsewhere)" if self.workers else "")
        )
        c = self.counts or QueueCounts(0, 0, 0)
        out = [
            head,
            f"queue {self.queue!r}: {c.queued} queued, {c.in_progress} in progress, {c.deferred} deferred",
        ]
        for w in self.serving:
            running = ", ".join(f"{r['task']}({r['job_id']})" for r in w.get("running", []))
            out.append(
                f"worker {w['worker_id']}: {len(w.get('running', []))} in progress"
                + (f" [{running}]" if running else "")
                + f", {w.get('succeeded', 0)} succeeded, {w.get('failed', 0)} failed,"
                f" last beat {time.time() - w.get('beat_at', 0):.1f}s ago"
            )
        return out


async def live_workers(redis: Redis, queue: str) -> list[dict[str, Any]]:
    """The heartbeat records of the workers whose heartbeat has not run out."""
    now_ms = int(time.time() * 1000)
    ids = await redis.zrangebyscore(keys.workers_key(queue), now_ms, "+inf")
    if not ids:
        return []
    records = await redis.mget([keys.worker_key(i.decode(errors="backslashreplace")) for i in ids])
    found = []
    for raw in records:
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("worker_id"), str):
            found.append(record)
    return found


async def check(settings: Settings, queue: str, *, any_host: bool = False) -> HealthReport:
    """Probe Redis for a live worker serving ``queue``; never waits longer than ``redis_timeout``."""
    report = HealthReport(queue=keys.queue_name(queue), host=socket.gethostname(), any_host=any_host)
    redis = create_redis(settings)
    try:
        async with redis_call(settings):
            report.workers = await live_workers(redis, queue)
            report.counts = await queue_counts(redis, queue)
    except RedisUnavailableError as exc:
        report.error = str(exc)
    finally:
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await redis.aclose(close_connection_pool=True)
    return report
