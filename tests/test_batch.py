"""``batch(calls, then=, catch=)``: jobs dispatched together, each outcome recorded by FINISH as the job ends for
good, ``then`` queued once when all ended, ``catch`` once at the first failure for good; ``Batch(id).result()``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from scalr_queue import Batch, BatchResult, JobNotFoundError, JobStatus, TaskArgumentsError, batch, call
from scalr_queue.batches import BatchStatus
from tests.apps import flow
from tests.conftest import WorkerProcess


async def _starts(redis: Redis, queue: str) -> list[str]:
    return [x.decode() for x in await redis.lrange(flow.STARTS + queue, 0, -1)]


async def _until(
    redis: Redis, queue: str, predicate: Callable[[list[str]], bool], timeout: float = 20
) -> list[str]:
    deadline = time.monotonic() + timeout
    while not predicate(found := await _starts(redis, queue)):
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {found[-10:]}"
        await asyncio.sleep(0.05)
    return found


async def test_ten_thousand_jobs_then_runs_once(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """10,000 no-op jobs and a then: then runs once, with the batch id in its ctx, after every job succeeded."""
    started = time.monotonic()
    b = await batch([call(flow.noop) for _ in range(10_000)], then=call(flow.callback, label="then"))
    assert len(b.jobs) == 10_000 and b.then is not None and b.catch is None
    assert await b.then.status() is JobStatus.waiting
    assert (await b.result()).pending != ()
    worker = spawn(
        "tests.apps.flow", env={"SCALR_QUEUE_CONCURRENCY": "200", "SCALR_QUEUE_LOG_LEVEL": "WARNING"}
    )
    assert await b.then.result(timeout=90) == "then"
    final = await Batch(b.batch_id).wait(timeout=10)
    assert isinstance(final, BatchResult)
    assert final.total == 10_000 and len(final.succeeded) == 10_000
    assert final.failed == () and final.pending == () and final.done
    assert set(final.succeeded) == {job.job_id for job in b.jobs}
    assert final.then_id == b.then.job_id
    await asyncio.sleep(0.3)
    assert await _starts(redis, queue) == [f"then:{b.batch_id}"]
    assert await Batch(b.batch_id).status() is BatchStatus.done
    assert time.monotonic() - started < 90
    worker.stop()


async def test_failures_run_catch_once_and_then_once(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """Two jobs fail for good (after their retries), one succeeds on its second try, the rest at once: catch runs
    once, then once, both with the batch id; the result lists the failed ids; the retried job counts as succeeded,
    and only once it ended."""
    calls = [call(flow.mark, label=f"ok{i}") for i in range(5)]
    calls += [call(flow.flaky, label="bad1", fail_tries=3), call(flow.flaky, label="bad2", fail_tries=3)]
    calls += [call(flow.flaky, label="retried", fail_tries=1)]
    calls += [call(flow.nap, seconds=1.0, label="slow")]  # the batch ends well after its first failure
    b = await batch(calls, then=call(flow.callback, label="then"), catch=call(flow.callback, label="catch"))
    assert b.then is not None and b.catch is not None
    spawn("tests.apps.flow").wait_started()
    found = await _until(redis, queue, lambda s: f"then:{b.batch_id}" in s)
    await asyncio.sleep(0.5)
    found = await _starts(redis, queue)
    assert found.count(f"then:{b.batch_id}") == 1
    assert found.count(f"catch:{b.batch_id}") == 1
    assert found.index(f"catch:{b.batch_id}") < found.index(f"then:{b.batch_id}")
    assert [x for x in found if x.startswith("retried:")] == ["retried:1", "retried:2"]
    final = await Batch(b.batch_id).result()
    bad = {b.jobs[5].job_id, b.jobs[6].job_id}
    assert set(final.failed) == bad
    assert set(final.succeeded) == {job.job_id for job in b.jobs} - bad
    assert final.pending == ()
    assert await b.catch.result(timeout=5) == "catch"


async def test_no_failure_drops_catch(spawn: Callable[..., WorkerProcess], redis: Redis, queue: str) -> None:
    """Every job succeeds: the held catch job is deleted unrun, then runs; a retried job is pending until final."""
    b = await batch(
        [call(flow.flaky, label="slow", fail_tries=1)],
        then=call(flow.callback, label="then"),
        catch=call(flow.callback, label="catch"),
    )
    assert b.catch is not None and b.then is not None
    spawn("tests.apps.flow").wait_started()
    await _until(redis, queue, lambda s: "slow:1" in s)
    assert (await b.result()).pending in ((b.jobs[0].job_id,), ())
    assert await b.then.result(timeout=15) == "then"
    assert await b.catch.status() is JobStatus.not_found
    assert f"catch:{b.batch_id}" not in await _starts(redis, queue)


async def test_batch_is_checked(redis: Redis) -> None:
    """Empty, not a call, a _job_id or _depends_on in a job, a deferred callback: refused before anything is
    written; an unknown batch id has no result."""
    before = len(await redis.keys("arq:batch*"))
    with pytest.raises(TaskArgumentsError, match="at least one"):
        await batch([])
    with pytest.raises(TaskArgumentsError, match="call"):
        await batch([("mark", {"label": "x"})])  # type: ignore[list-item]
    with pytest.raises(TaskArgumentsError, match="_job_id"):
        await batch([call(flow.mark, label="x", _job_id="mine")])
    with pytest.raises(TaskArgumentsError, match="_depends_on"):
        await batch([call(flow.mark, label="x", _depends_on=["a"])])
    with pytest.raises(TaskArgumentsError, match="_defer_by"):
        await batch([call(flow.mark, label="x")], then=call(flow.callback, label="t", _defer_by=5))
    assert len(await redis.keys("arq:batch*")) == before
    with pytest.raises(JobNotFoundError):
        await Batch("0" * 32).result()
    assert await Batch("0" * 32).status() is BatchStatus.not_found


async def test_cli_job_names_its_batch_and_chain(queue: str) -> None:
    """``scalr-queue job ID``: a batch job names its batch, a held then callback reads waiting for the batch, a
    chain link its chain and place, a link behind another waiting for 1 dependency; ``jobs --state waiting``
    explains why it cannot list them."""
    from scalr_queue import chain
    from tests.test_cli import cli

    b = await batch([call(flow.mark, label="x")], then=call(flow.callback, label="then"))
    assert b.then is not None
    out = cli("job", b.jobs[0].job_id).stdout
    assert f"batch:       {b.batch_id} (job)" in out and "state:       queued" in out
    out = cli("job", b.then.job_id).stdout
    assert "state:       waiting" in out and f"until batch {b.batch_id}" in out
    assert f"batch:       {b.batch_id} (then)" in out
    c = await chain(call(flow.mark, label="a"), call(flow.mark, label="b"))
    out = cli("job", c.jobs[1].job_id).stdout
    assert f"chain:       {c.jobs[0].job_id} (link 2 of 2)" in out
    assert "waiting:     for 1 job(s) it depends on" in out
    refused = cli("jobs", "--state", "waiting")
    assert refused.returncode != 0 and "scalr-queue job ID" in refused.stdout + refused.stderr
