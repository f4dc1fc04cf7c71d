"""``_depends_on=[jobs or ids]``: a job starts only after every dependency succeeded; a dependency that fails for
good fails it with reason ``dependency_failed``, and its own dependents in turn; released by FINISH, no polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from scalr_queue import JobNotFoundError, JobStatus, TaskArgumentsError, chain, enqueue
from scalr_queue.client import default_client
from scalr_queue.failed import FailedStore
from tests.apps import flow
from tests.conftest import WorkerProcess


async def _starts(redis: Redis, queue: str) -> list[str]:
    return [x.decode() for x in await redis.lrange(flow.STARTS + queue, 0, -1)]


async def _reason(job_id: str, timeout: float = 15) -> str:
    store = FailedStore(default_client().redis, max_age_s=3600, max_count=1000)
    deadline = time.monotonic() + timeout
    while (record := await store.get(job_id)) is None:
        assert time.monotonic() < deadline, f"{job_id} not in the failed store"
        await asyncio.sleep(0.05)
    return record.reason


async def test_fan_in_waits_for_every_dependency(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """aggregate depends on a and b (a Job and an id): waiting until both succeeded, then it runs, after them."""
    a = await enqueue(flow.nap, seconds=0.6, label="a")
    b = await enqueue(flow.nap, seconds=0.2, label="b")
    assert a is not None and b is not None
    after = await enqueue(flow.mark, label="aggregate", _depends_on=[a, b.job_id])
    assert after is not None
    assert await after.status() is JobStatus.waiting
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    assert await after.result(timeout=15) == "aggregate"
    found = await _starts(redis, queue)
    assert found.index("aggregate") > found.index("end:a")
    assert found.index("aggregate") > found.index("end:b")
    done = await enqueue(flow.mark, label="late", _depends_on=[a])  # a succeeded already: queued at once
    assert done is not None and await done.result(timeout=10) == "late"


async def test_failure_cascades_as_dependency_failed(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """A fails for good: B (on A) and C (on B) fail with reason dependency_failed and never start."""
    a = await enqueue(flow.fail_for_good, label="A")
    assert a is not None
    b = await enqueue(flow.mark, label="B", _depends_on=[a])
    assert b is not None
    c = await enqueue(flow.mark, label="C", _depends_on=[b])
    assert c is not None
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    assert await _reason(b.job_id) == "dependency_failed"
    assert await _reason(c.job_id) == "dependency_failed"
    assert await _starts(redis, queue) == ["A"]
    late = await enqueue(flow.mark, label="D", _depends_on=[a])  # A failed already: fails at once
    assert late is not None
    assert await _reason(late.job_id) == "dependency_failed"


async def test_chain_runs_links_in_order_and_a_failure_stops_it(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """chain(call, call, call): each link after the previous succeeded; a failing link stops the rest."""
    from scalr_queue import call

    worker = spawn("tests.apps.flow")
    worker.wait_started()
    ok = await chain(
        call(flow.nap, seconds=0.2, label="one"), call(flow.mark, label="two"), call(flow.mark, label="three")
    )
    assert await ok.jobs[-1].result(timeout=15) == "three"
    assert await _starts(redis, queue) == ["start:one", "end:one", "two", "three"]
    assert await ok.statuses() == [JobStatus.complete] * 3
    stopped = await chain(call(flow.fail_for_good, label="bad"), call(flow.mark, label="never"))
    assert await _reason(stopped.jobs[1].job_id) == "dependency_failed"
    assert "never" not in await _starts(redis, queue)


async def test_depends_on_is_checked() -> None:
    """Not a list, a bad id, itself, or an id Redis knows nothing of: refused, nothing written."""
    with pytest.raises(TaskArgumentsError, match="_depends_on must be a list"):
        await enqueue(flow.mark, label="x", _depends_on="abc")  # type: ignore[arg-type]
    with pytest.raises(TaskArgumentsError, match="depend on itself"):
        await enqueue(flow.mark, label="x", _job_id="me", _depends_on=["me"])
    with pytest.raises(JobNotFoundError, match="_depends_on names job 'ghost'"):
        await enqueue(flow.mark, label="x", _job_id="orphan", _depends_on=["ghost"])
    assert await default_client().redis.exists("arq:job:orphan") == 0


async def test_abort_of_a_waiting_job(spawn: Callable[..., WorkerProcess], redis: Redis, queue: str) -> None:
    """A job waiting for its dependencies can be aborted: it never starts, and leaves its dependency's set."""
    first = await enqueue(flow.nap, seconds=0.3, label="first")
    assert first is not None
    waiting = await enqueue(flow.mark, label="waiting", _depends_on=[first])
    assert waiting is not None
    assert await waiting.abort() is True
    assert await waiting.status() is JobStatus.aborted
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    assert await _reason(waiting.job_id) == "aborted"
    assert await first.result(timeout=10) == 0.3
    await asyncio.sleep(0.3)
    assert "waiting" not in await _starts(redis, queue)


async def test_a_diamond_runs_each_job_once_in_dependency_order(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """Fan-out then fan-in: B and C on A, D on B and C. D starts once, after both; A runs once."""
    a = await enqueue(flow.nap, seconds=0.2, label="A")
    assert a is not None
    b = await enqueue(flow.nap, seconds=0.3, label="B", _depends_on=[a])
    c = await enqueue(flow.nap, seconds=0.1, label="C", _depends_on=[a])
    assert b is not None and c is not None
    d = await enqueue(flow.mark, label="D", _depends_on=[b, c])
    assert d is not None
    for worker in [spawn("tests.apps.flow") for _ in range(2)]:
        worker.wait_started()
    assert await d.result(timeout=20) == "D"
    found = await _starts(redis, queue)
    assert found.count("start:A") == 1 and found.count("D") == 1
    assert found.index("start:B") > found.index("end:A") and found.index("start:C") > found.index("end:A")
    assert found.index("D") > found.index("end:B") and found.index("D") > found.index("end:C")


async def test_a_chain_whose_middle_link_fails_after_its_tries_stops_there(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """chain(one, two, three) where two fails all 3 of its tries: one complete, two failed after 3 tries, three
    never runs (failed with reason dependency_failed)."""
    from scalr_queue import call

    worker = spawn("tests.apps.flow")
    worker.wait_started()
    handle = await chain(
        call(flow.mark, label="one"),
        call(flow.flaky, label="two", fail_tries=3),
        call(flow.mark, label="three"),
    )
    first, middle, last = handle.jobs
    assert await _reason(last.job_id, timeout=20) == "dependency_failed"
    assert await _reason(middle.job_id) == "raised"
    found = await _starts(redis, queue)
    assert found == ["one", "two:1", "two:2", "two:3"]
    assert await handle.statuses() == [JobStatus.complete, JobStatus.failed, JobStatus.failed]
    assert await first.result(timeout=1) == "one"
