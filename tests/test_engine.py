"""The worker in process, driven by arq's client: races of a retried job, early failures, ``retry_jobs``, and a
stop that leaves the calling process alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.worker import Retry
from structlog.testing import capture_logs

import scalr_queue
from scalr_queue import JobFailedError, enqueue, keys, wire
from scalr_queue.runner import Attempt
from scalr_queue.testing import RedisServer
from scalr_queue.worker import Worker, run
from scalr_queue.worker._background import LeaseKeeper
from scalr_queue.worker._stop import StopState


@pytest.fixture
async def pool(redis_server: RedisServer, queue: str) -> AsyncIterator[ArqRedis]:
    """An arq client writing JSON to this test's queue, as arq users enqueue."""
    client = ArqRedis(
        host="127.0.0.1",
        port=redis_server.port,
        job_serializer=wire.dumps,
        job_deserializer=wire.loads,
        default_queue_name=keys.queue_key(queue),
    )
    yield client
    await client.aclose(close_connection_pool=True)


async def run_burst(pool: ArqRedis, functions: list[Any], **options: Any) -> Worker:
    worker = Worker(functions, redis_pool=pool, burst=True, poll_delay=0, handle_signals=False, **options)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


async def test_a_job_retried_at_once_runs_again_at_once(pool: ArqRedis) -> None:
    """A job claimed again while its last try is still winding down (after_job_end) runs as its next try, not
    after a lease."""

    async def again(ctx: dict[str, Any]) -> int:
        if ctx["job_try"] < 3:
            raise Retry()
        return int(ctx["job_try"])

    async def slow_after_end(ctx: dict[str, Any]) -> None:
        await asyncio.sleep(0.2)  # holds the ended try in place while the loop claims the job again

    job = await pool.enqueue_job("again", _job_id="again")
    assert job is not None
    with capture_logs() as logs:
        worker = await run_burst(pool, [again], after_job_end=slow_after_end)
    assert (worker.jobs_complete, worker.jobs_retried, worker.jobs_failed) == (1, 2, 0)
    assert await job.result(timeout=1) == 3
    assert [e for e in logs if e["event"] == "lease_retaken"] == []


async def test_a_job_aborted_before_it_started_reads_back_as_aborted(pool: ArqRedis) -> None:
    """arq's Job.abort() of a queued job returns True: the worker keeps a result for it, as for any failure."""

    async def never(ctx: dict[str, Any]) -> None:
        raise AssertionError("an aborted job must not start")

    job = await pool.enqueue_job("never", _job_id="aborted")
    assert job is not None
    await pool.zadd(abort_jobs_ss, {"aborted": 1})
    worker = await run_burst(pool, [never], allow_abort_jobs=True)
    assert worker.jobs_failed == 1
    assert await job.abort(timeout=1) is True


async def test_a_job_of_an_unknown_task_keeps_its_failure(pool: ArqRedis) -> None:
    """A job that fails before reaching a task (here: no such task) keeps a result whose error reads back."""

    async def known(ctx: dict[str, Any]) -> None:
        return None

    job = await pool.enqueue_job("unknown", _job_id="lost")
    assert job is not None
    await run_burst(pool, [known])
    with pytest.raises(JobFailedError, match="no task named 'unknown'"):
        await job.result(timeout=1)


async def test_retry_jobs_false_retries_nothing(pool: ArqRedis) -> None:
    """With retry_jobs=False a plain exception and a task cancelling itself each fail on their first try."""

    async def raises(ctx: dict[str, Any]) -> None:
        raise ValueError("no second try")

    async def cancels(ctx: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    first = await pool.enqueue_job("raises")
    second = await pool.enqueue_job("cancels")
    assert first is not None and second is not None
    worker = await run_burst(pool, [raises, cancels], retry_jobs=False)
    assert (worker.jobs_complete, worker.jobs_retried, worker.jobs_failed) == (0, 0, 2)
    for job in (first, second):
        info = await job.result_info()
        assert info is not None and info.job_try == 1


def test_run_leaves_no_watchdog_behind(queue: str) -> None:
    """Once run() returns, its stop watchdog has stood down: it would end the calling process 20 s later."""

    async def put() -> None:
        assert await enqueue("add", x=1, y=2) is not None
        await scalr_queue.close()

    asyncio.run(put())
    run("tests.apps.basic", burst=True)
    watchdogs = [t for t in threading.enumerate() if t.name == "scalr_queue stop watchdog"]
    for thread in watchdogs:
        thread.join(timeout=5)
    assert not [t for t in watchdogs if t.is_alive()]


async def test_a_renewal_that_crossed_its_jobs_finish_reports_no_lost_lease(
    redis_server: RedisServer,
) -> None:
    """A job that ended here while its lease's renewal was on its way (the renewal finds its lease gone, as the
    finish removed it) is not reported as lost to another worker; a job still running here whose lease is gone is."""
    ended = Attempt("ended-job", b"ended-job", 0.0, 1, b"{}", 0, counter=1)
    running = Attempt("running-job", b"running-job", 0.0, 1, b"{}", 0, counter=1)
    looks = 0

    def attempts() -> dict[bytes, Attempt]:
        nonlocal looks
        looks += (
            1  # the first look sends both; by the reply, the ended job's try is gone (its finish was written)
        )
        return {b"ended-job": ended, b"running-job": running} if looks == 1 else {b"running-job": running}

    redis = ArqRedis(host="127.0.0.1", port=redis_server.port)
    keeper = LeaseKeeper(redis, "worker-1", lease_s=0.03, running=attempts)
    with capture_logs() as logs:
        renewing = asyncio.ensure_future(keeper.run(StopState()))
        for _ in range(200):
            if keeper.lost:
                break
            await asyncio.sleep(0.01)
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
    await redis.aclose()
    assert looks >= 2
    assert [e["job_id"] for e in logs if e["event"] == "lease_lost"] == ["running-job"]
