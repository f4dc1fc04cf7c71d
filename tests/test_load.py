"""Load with a crash: 4 worker processes, 20,000 jobs, one worker SIGKILLed mid-run; nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from scalr_queue.client import default_client
from scalr_queue.failed import FailedStore
from tests.conftest import WorkerProcess

JOBS = 20_000


async def test_twenty_thousand_jobs_four_workers_one_killed(
    spawn: Callable[..., WorkerProcess], redis, queue: str
) -> None:  # type: ignore[no-untyped-def]
    """Every job completes; the only jobs that ran twice are ones the killed worker held."""
    workers = [spawn("tests.apps.lifecycle", env={"SCALR_QUEUE_LOG_LEVEL": "WARNING"}) for _ in range(4)]
    while await redis.zcard(f"arq:workers:{queue}") < len(workers):  # each registers its heartbeat
        await asyncio.sleep(0.1)
    client = default_client()
    started = time.monotonic()
    for first in range(0, JOBS, 1000):
        await asyncio.gather(*(client.enqueue("record_run", n=n) for n in range(first, first + 1000)))
    runs_key = f"runs:arq:queue:{queue}"
    while await redis.hlen(runs_key) < JOBS * 0.3:
        await asyncio.sleep(0.1)
    victim = workers[0]
    victim.signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    deadline = killed_at + 180
    while await redis.hlen(runs_key) < JOBS or await redis.zcard(f"arq:queue:{queue}") > 0:
        assert time.monotonic() < deadline, f"only {await redis.hlen(runs_key)} of {JOBS} jobs ran"
        await asyncio.sleep(0.2)
    took = time.monotonic() - started
    runs = {k.decode(): int(v) for k, v in (await redis.hgetall(runs_key)).items()}
    held = {m.decode() for m in await redis.smembers(f"ran-by:arq:queue:{queue}:{victim.proc.pid}")}
    twice = {job_id for job_id, count in runs.items() if count > 1}
    print(f"{JOBS} jobs in {took:.1f} s; killed worker ran {len(held)}; {len(twice)} ran twice")
    assert len(runs) == JOBS
    assert max(runs.values()) <= 2
    assert twice <= held
    assert await FailedStore(client.redis, max_age_s=60, max_count=100).list(queue=queue) == []
    for worker in workers[1:]:
        assert worker.proc.poll() is None
