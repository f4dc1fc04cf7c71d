"""Cron jobs: each run is queued a little ahead of its time as a deferred job, once per tick across workers.

arq queues a cron run when its poll loop notices it is due, so runs start up to a poll (or, with our idle wait,
seconds) late, and two workers whose clocks differ can both run one tick. Here each worker queues the next run
about a second ahead, deferred to its exact time; the queue's wake-up token and the claim's "next due" time
make an idle worker start it on time; and a per-tick key (``arq:cron:<name>:<tick>``, set only if absent) lets
one worker queue it, however many run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, tzinfo

from arq.cron import CronJob
from redis.asyncio import Redis

from .. import keys
from .._ids import new_job_id
from .._store import store_job
from ..records import JobRecord

LOOKAHEAD_S = 1.0  # a run is queued this long before it is due
TICK_KEY_TTL_MS = 3_600_000  # how long a tick stays claimed: far longer than any clock skew between workers
EXPIRES_EXTRA_MS = 86_400_000


class CronScheduler:
    """Keeps each cron job's next run and queues it when it comes near."""

    def __init__(
        self,
        cron_jobs: Sequence[CronJob],
        tz: tzinfo | None,
        queue_key: str,
        lookahead_s: float = LOOKAHEAD_S,
    ) -> None:
        self.cron_jobs = list(cron_jobs)
        self.tz = tz
        self.queue_key = queue_key
        self.lookahead_s = lookahead_s

    def next_queue_time(self) -> float | None:
        """When (epoch seconds) the next run should be queued; None: nothing scheduled yet."""
        times = [
            cj.next_run.timestamp() - self.lookahead_s for cj in self.cron_jobs if cj.next_run is not None
        ]
        return min(times) if times else None

    def due(self, now: datetime) -> list[CronJob]:
        """The cron jobs whose next run should be queued now (arq's rule for the first run included)."""
        found = []
        for cron_job in self.cron_jobs:
            if cron_job.next_run is None:
                if cron_job.run_at_startup:
                    cron_job.next_run = now
                else:
                    cron_job.calculate_next(now)
                    continue
            if cron_job.next_run.timestamp() - self.lookahead_s <= now.timestamp():
                found.append(cron_job)
        return found

    async def queue_run(self, redis: Redis, cron_job: CronJob, now: datetime) -> bool:
        """Queue ``cron_job``'s next run (once per tick across workers), then move it to the run after."""
        run_at = cron_job.next_run
        assert run_at is not None
        tick_ms = int(run_at.timestamp() * 1000)
        now_ms = int(time.time() * 1000)
        once_key = None
        if cron_job.job_id:
            job_id = cron_job.job_id
            once_key = keys.cron_tick_key(cron_job.job_id, tick_ms)
        elif cron_job.unique:
            job_id = f"{cron_job.name}:{tick_ms}"
            once_key = keys.cron_tick_key(cron_job.name, tick_ms)
        else:
            job_id = new_job_id()
        score = max(tick_ms, now_ms)
        kwargs = getattr(
            cron_job, "kwargs", None
        )  # every(...): the task's arguments, checked when it was built
        payload = JobRecord(
            task=cron_job.name, kwargs=dict(kwargs) if kwargs else {}, enqueue_ms=now_ms
        ).encode()
        stored = await store_job(
            redis,
            job_id=job_id,
            queue=self.queue_key,
            payload=payload,
            score_ms=score,
            now_ms=now_ms,
            expires_ms=score - now_ms + EXPIRES_EXTRA_MS,
            once_key=once_key,
            once_ttl_ms=TICK_KEY_TTL_MS,
        )
        cron_job.calculate_next(run_at)
        if cron_job.next_run is not None and cron_job.next_run <= now:
            cron_job.calculate_next(now)  # runs missed during an outage: one catch-up run, not one per tick
        return bool(stored)

    def local_now(self) -> datetime:
        return datetime.now(tz=self.tz)
