"""``_priority=0..9``: among jobs due now a lower number is claimed first, FIFO within one priority; a deferral is
never shortened; the queue stays arq's (scored by run-at time), so listings, counts and retries are unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from scalr_queue import JobStatus, TaskArgumentsError, enqueue, enqueue_many, keys
from tests.apps import flow
from tests.conftest import WorkerProcess


async def _starts(redis: Redis, queue: str) -> list[str]:
    return [x.decode() for x in await redis.lrange(flow.STARTS + queue, 0, -1)]


async def _wait_for_count(redis: Redis, queue: str, count: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(found := await _starts(redis, queue)) < count:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    return found


async def test_zeros_start_before_waiting_nines(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """9s wait while 0s arrive: every 0 starts before any later-enqueued 9 still waiting; FIFO within each."""
    worker = spawn("tests.apps.flow", env={"SCALR_QUEUE_CONCURRENCY": "1"})
    worker.wait_started()
    await enqueue(flow.nap, seconds=0.5, label="first", _priority=9)  # keeps the only slot busy
    await _wait_for_count(redis, queue, 1)
    await enqueue_many([(flow.mark, {"label": f"nine-{i}", "_priority": 9}) for i in range(5)])
    for i in range(5):
        await enqueue(flow.mark, label=f"zero-{i}")  # the default priority, 0
    await enqueue(flow.mark, label="five", _priority=5)
    await enqueue(flow.mark, label="nine-late", _priority=9)
    found = await _wait_for_count(redis, queue, 14)
    assert found == [
        "start:first",
        "end:first",
        *[f"zero-{i}" for i in range(5)],
        "five",
        *[f"nine-{i}" for i in range(5)],
        "nine-late",
    ]


async def test_priority_never_shortens_a_deferral(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """A deferred priority-0 job waits for its time while priority-9 jobs due now run; it stays 'deferred'."""
    later = await enqueue(flow.mark, label="later", _defer_by=1.5)
    for i in range(3):
        await enqueue(flow.mark, label=f"nine-{i}", _priority=9)
    assert later is not None and await later.status() is JobStatus.deferred
    score = await redis.zscore(keys.queue_key(queue), later.job_id)
    assert score is not None and score > time.time() * 1000  # the queue's score is still the run-at time
    worker = spawn("tests.apps.flow", env={"SCALR_QUEUE_CONCURRENCY": "1"})
    worker.wait_started()
    found = await _wait_for_count(redis, queue, 4)
    assert found == ["nine-0", "nine-1", "nine-2", "later"]


async def test_retried_job_keeps_its_priority(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """A job put back for a retry rejoins its priority's index (it runs again: twice failed, then done); the
    indexes are empty once all ran."""
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    job = await enqueue(flow.flaky, label="p3", fail_tries=2, _priority=3)
    assert job is not None
    assert await job.result(timeout=10) == "p3"
    assert [
        e["try"] for e in worker.events if e.get("event") == "job_started" and e.get("job_id") == job.job_id
    ] == [
        1,
        2,
        3,
    ]
    assert await redis.zcard(keys.ready_key(queue, 3)) == 0
    assert await redis.zcard(keys.ready_key(queue, 0)) == 0


@pytest.mark.parametrize("bad", [-1, 10, 1.0, "1", True])
async def test_bad_priority_is_refused_at_enqueue(bad: object) -> None:
    """Out of range or not an int: TaskArgumentsError, nothing written (enqueue and enqueue_many)."""
    with pytest.raises(TaskArgumentsError, match="_priority must be a whole number from 0"):
        await enqueue(flow.mark, label="x", _priority=bad)  # type: ignore[arg-type]
    with pytest.raises(TaskArgumentsError, match="_priority"):
        await enqueue_many([(flow.mark, {"label": "x", "_priority": bad})])


async def test_zeros_arriving_under_a_backlog_of_nines_go_first(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """Under load: 100 nines queued, a worker at concurrency 2 working through them, 20 zeros arriving one by one.
    After a zero is queued, at most the 2 nines already claimed (one per slot) start before it; every later nine
    waits."""
    await enqueue_many(
        [(flow.nap, {"seconds": 0.02, "label": f"nine-{i}", "_priority": 9}) for i in range(100)]
    )
    worker = spawn("tests.apps.flow", env={"SCALR_QUEUE_CONCURRENCY": "2"})
    worker.wait_started()
    await _wait_for_count(redis, queue, 10)
    for i in range(20):
        await enqueue(flow.mark, label=f"zero-{i}")
        await redis.rpush(flow.STARTS + queue, f"queued:zero-{i}")
        await asyncio.sleep(0.03)
    found = await _wait_for_count(redis, queue, 2 * 100 + 20 + 20)
    for i in range(20):
        queued, started = found.index(f"queued:zero-{i}"), found.index(f"zero-{i}")
        nines = [x for x in found[queued:started] if x.startswith("start:nine-")]  # none if it started first
        assert len(nines) <= 2, f"zero-{i} waited behind {nines}"
    assert found.index("zero-19") < found.index("start:nine-99")
