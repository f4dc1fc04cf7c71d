"""``job.abort()`` and ``scalr-queue abort``: waiting jobs never start, running ones are cancelled on the worker
that runs them, nothing is retried, and the status, job details and failed store all say ``aborted``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from scalr_queue import JobNotFoundError, JobStatus, enqueue
from scalr_queue.client import default_client
from scalr_queue.failed import FailedStore
from tests.apps import flow
from tests.conftest import WorkerProcess, run_command
from tests.test_cli import CLI


async def _starts(redis: Redis, queue: str) -> list[str]:
    return [x.decode() for x in await redis.lrange(flow.STARTS + queue, 0, -1)]


async def _failed_reason(job_id: str) -> str | None:
    record = await FailedStore(default_client().redis, max_age_s=3600, max_count=1000).get(job_id)
    return record.reason if record else None


async def _wait_for(check: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_abort_queued_and_deferred_jobs_never_start(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """Aborted before any worker runs: status reads aborted at once; a worker then ends both without starting
    them, the failed store keeps them with reason aborted, and a job after them still runs."""
    queued = await enqueue(flow.nap, seconds=0, label="queued")
    deferred = await enqueue(flow.nap, seconds=0, label="deferred", _defer_by=30)
    assert queued is not None and deferred is not None
    assert await deferred.status() is JobStatus.deferred
    assert await queued.abort() is True
    assert await deferred.abort() is True
    assert await queued.status() is JobStatus.aborted
    assert await deferred.status() is JobStatus.aborted
    after = await enqueue(flow.nap, seconds=0, label="after")
    assert after is not None
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    assert await after.result(timeout=10) == 0
    await _wait_for(lambda: _failed_reason(deferred.job_id))
    assert await _failed_reason(queued.job_id) == "aborted"
    assert await _failed_reason(deferred.job_id) == "aborted"
    assert await _starts(redis, queue) == ["start:after", "end:after"]
    assert await queued.status() is JobStatus.aborted
    assert await deferred.status() is JobStatus.aborted
    assert not await redis.zscore("arq:abort", queued.job_id)  # the abort set is cleaned up when it ends


async def test_abort_running_job_on_another_worker_process(
    spawn: Callable[..., WorkerProcess], redis: Redis, queue: str
) -> None:
    """A running job is cancelled within about a second by the worker process running it, and not retried
    (its task allows 5 tries)."""
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    job = await enqueue(flow.nap, seconds=30, label="long")
    assert job is not None
    await _wait_for(lambda: _starts(redis, queue))
    assert await job.status() is JobStatus.in_progress
    started = time.monotonic()
    assert await job.abort() is True
    await _wait_for(lambda: _failed_reason(job.job_id), timeout=5)
    assert time.monotonic() - started < 1.5
    assert await _failed_reason(job.job_id) == "aborted"
    assert await job.status() is JobStatus.aborted
    worker.wait_for("job_aborted")
    await asyncio.sleep(0.5)
    assert await _starts(redis, queue) == ["start:long"]  # never finished, never tried again
    assert await job.abort() is False  # finished now: nothing changes


async def test_abort_of_finished_job_changes_nothing(spawn: Callable[..., WorkerProcess]) -> None:
    """A complete job stays complete; abort says False; an unknown id raises JobNotFoundError."""
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    job = await enqueue(flow.mark, label="done")
    assert job is not None
    assert await job.result(timeout=10) == "done"
    assert await job.abort() is False
    assert await job.status() is JobStatus.complete
    assert await job.result() == "done"
    with pytest.raises(JobNotFoundError):
        await type(job)("no-such-job").abort()


async def test_abort_cli(spawn: Callable[..., WorkerProcess], queue: str) -> None:
    """``scalr-queue abort ID`` aborts a waiting job; for a finished one it says so; ``scalr-queue job`` shows it."""
    job = await enqueue(flow.nap, seconds=0, label="x", _defer_by=60)
    assert job is not None
    done = run_command(CLI, "abort", job.job_id)
    assert done.returncode == 0, done.stderr
    assert "will not start" in done.stdout
    shown = run_command(CLI, "job", job.job_id)
    assert "aborted" in shown.stdout
    worker = spawn("tests.apps.flow")
    worker.wait_started()
    await _wait_for(lambda: _failed_reason(job.job_id))
    again = run_command(CLI, "abort", job.job_id)
    assert again.returncode == 0
    assert "had finished already" in again.stdout
    missing = run_command(CLI, "abort", "nope")
    assert missing.returncode == 1
    assert "no job 'nope'" in missing.stderr
