"""``every(seconds, task, **kwargs)``: once per period across all workers, on the multiples of the period, and a
missed period runs once after an outage, not once per missed tick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from scalr_queue import TaskArgumentsError, every, keys
from scalr_queue.worker._cron import CronScheduler
from tests.apps import basic, flow
from tests.conftest import WorkerProcess


async def test_every_second_on_three_workers_runs_once_per_tick(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """every(1, ...) on 3 worker processes for 10 s runs 10 ± 1 times, each run at (just after) a whole second."""
    workers = [spawn("tests.apps.every_app") for _ in range(3)]
    for worker in workers:
        worker.wait_started()
    await redis.delete(flow.STARTS + queue)
    await asyncio.sleep(10)
    runs = [x.decode() for x in await redis.lrange(flow.STARTS + queue, 0, -1)]
    assert 9 <= len(runs) <= 11, runs
    times = [float(r.split(":")[1]) for r in runs]
    assert len({round(t) for t in times}) == len(times), runs  # never two runs for one tick
    assert all(t - int(t) < 0.5 for t in times), runs  # on the tick, not drifting


def test_ticks_are_multiples_of_the_period_and_an_outage_runs_once() -> None:
    """The next tick is the next multiple of the period; after missing five ticks, one catch-up run is queued and
    the next run is the next tick after now."""
    entry = every(5, flow.tick, _name="t")
    start = datetime(2026, 1, 1, 12, 0, 3, 250000, tzinfo=UTC)
    entry.calculate_next(start)
    assert entry.next_run == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    entry.calculate_next(entry.next_run)
    assert entry.next_run == datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    scheduler = CronScheduler([entry], UTC, keys.queue_key("q"))
    later = entry.next_run + timedelta(seconds=27)  # five ticks missed
    assert scheduler.due(later) == [entry]  # the stale tick: queued once (by queue_run) ...

    # ... and queue_run moves to the first tick after now, not through each missed one:
    entry.calculate_next(entry.next_run)
    if entry.next_run <= later:
        entry.calculate_next(later)
    assert entry.next_run == datetime(2026, 1, 1, 12, 0, 40, tzinfo=UTC)


async def test_missed_ticks_queue_one_run(redis: Redis, queue: str) -> None:
    """A scheduler whose next run lies five periods back queues one catch-up run, then goes on from the next tick
    after now (which may be queued already, a second ahead)."""
    entry = every(1, flow.tick, _name=f"catchup-{queue}")
    scheduler = CronScheduler([entry], UTC, keys.queue_key(queue))
    now = datetime.now(tz=UTC)
    entry.next_run = now.replace(microsecond=0) - timedelta(seconds=5)
    for _ in range(3):
        for due in scheduler.due(datetime.now(tz=UTC)):
            await scheduler.queue_run(redis, due, datetime.now(tz=UTC))
    ids = [m.decode() for m in await redis.zrange(keys.queue_key(queue), 0, -1)]
    ticks = [int(job_id.rsplit(":", 1)[1]) for job_id in ids]
    assert len([t for t in ticks if t < now.timestamp() * 1000]) == 1, ids  # one catch-up, not five
    assert all(t % 1000 == 0 for t in ticks)  # on the multiples of the period
    assert entry.next_run is not None and entry.next_run > now


def test_every_checks_its_arguments() -> None:
    """Bad arguments, enqueue options and bad periods are refused when the entry is built."""
    with pytest.raises(TaskArgumentsError):
        every(10, basic.add, x=1)  # y missing
    with pytest.raises(TaskArgumentsError, match="enqueue option"):
        every(10, basic.add, x=1, y=2, _priority=1)
    with pytest.raises(TaskArgumentsError, match="period"):
        every(0, basic.add, x=1, y=2)
    entry = every(timedelta(minutes=1), basic.add, x=1, y=2)
    assert entry.name.startswith("every:add:60:") and entry.kwargs == {"x": 1, "y": 2}
