"""Fault injection: real redis-server, workers as subprocesses, and the ways jobs get lost elsewhere.

Retries, timeouts, poison jobs, SIGKILL, SIGTERM, Redis restarts, bad payloads, unknown tasks, deadlines.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import scalr_queue
from scalr_queue import JobFailedError, JobStatus, PayloadTooLargeError, enqueue
from scalr_queue.client import default_client
from scalr_queue.config import reset_settings
from scalr_queue.failed import FailedStore
from scalr_queue.testing import RedisServer
from tests.conftest import WorkerProcess


def store() -> FailedStore:
    return FailedStore(default_client().redis, max_age_s=3600, max_count=1000)


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll an async or plain predicate until it is truthy; returns the seconds it took."""
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


async def _is(value: object, expected: object) -> bool:
    return await value is expected  # type: ignore[misc]


def events(worker: WorkerProcess, name: str, **match: object) -> list[dict]:
    return [
        e for e in worker.events if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
    ]


# --- retries ----------------------------------------------------------------------------------------------


async def test_any_exception_is_retried_with_backoff(spawn: Callable[..., WorkerProcess]) -> None:
    """A plain exception is tried again after the task's backoff; the third try succeeds."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("flaky", fail_times=2)
    assert job is not None
    assert await job.result(timeout=10) == 3
    retrying = events(worker, "job_retrying", job_id=job.job_id)
    assert [e["try"] for e in retrying] == [1, 2]
    assert all(e["defer_s"] == 0.1 and e["error_type"] == "ConnectionError" for e in retrying)
    assert events(worker, "job_failed", job_id=job.job_id) == []


async def test_timeouts_are_retried(spawn: Callable[..., WorkerProcess]) -> None:
    """A try that runs past its timeout is cancelled and tried again."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("slow_then_fast")
    assert job is not None
    assert await job.result(timeout=10) == 2
    [retry] = events(worker, "job_retrying", job_id=job.job_id)
    assert retry["error_type"] == "JobTimeoutError"


async def test_non_retryable_error_fails_after_one_try(spawn: Callable[..., WorkerProcess]) -> None:
    """NonRetryableError ends the job at once, with its own reason, though tries remain."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("give_up")
    assert job is not None
    with pytest.raises(JobFailedError, match="NonRetryableError: no point trying again"):
        await job.result(timeout=10)
    assert len(events(worker, "job_started", job_id=job.job_id)) == 1
    failed = await store().get(job.job_id)
    assert failed is not None
    assert (failed.reason, failed.tries, failed.max_tries) == ("non_retryable", 1, 5)


async def test_retry_until_sends_a_late_job_to_the_failed_store(spawn: Callable[..., WorkerProcess]) -> None:
    """A job whose next try would fall after its retry_until deadline is failed instead of retried."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("past_deadline")
    assert job is not None
    with pytest.raises(JobFailedError, match="RuntimeError: still failing"):
        await job.result(timeout=10)
    failed = await store().get(job.job_id)
    assert failed is not None
    assert (failed.reason, failed.tries) == ("retry_until_passed", 1)


async def test_payload_over_the_bound_fails_at_enqueue(redis, queue: str) -> None:  # type: ignore[no-untyped-def]
    """A payload over SCALR_QUEUE_MAX_PAYLOAD is refused with advice to pass ids; nothing is written."""
    with pytest.raises(PayloadTooLargeError, match="pass ids"):
        await enqueue("untyped", value="x" * 600_000)
    assert await redis.zcard(f"arq:queue:{queue}") == 0


# --- workers that die ---------------------------------------------------------------------------------------


async def test_sigkill_mid_job_runs_again_on_another_worker(
    spawn: Callable[..., WorkerProcess], redis
) -> None:  # type: ignore[no-untyped-def]
    """The job of a SIGKILLed worker runs again on a second worker within 15 s (default lease), measured."""
    label = f"kill-{time.time_ns()}"
    first = spawn("tests.apps.lifecycle")
    first.wait_started()
    job = await enqueue("traced_sleep", seconds=3, label=label)
    assert job is not None
    await wait_until(lambda: redis.llen(f"starts:{label}"), 10, "first start")
    second = spawn("tests.apps.lifecycle")
    second.wait_started()
    first.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait()
    started = second.wait_for(
        lambda e: e.get("event") == "job_started" and e.get("job_id") == job.job_id, timeout=20
    )
    recovery_s = time.monotonic() - killed_at
    print(f"re-run started {recovery_s:.2f} s after SIGKILL")
    assert recovery_s < 15
    assert started["try"] == 2
    assert await job.result(timeout=10) == label


async def test_poison_job_ends_in_failed_store_after_max_tries(
    spawn: Callable[..., WorkerProcess], redis
) -> None:  # type: ignore[no-untyped-def]
    """A job that kills its worker on every try is failed after max_tries (3), not re-run forever."""
    label = f"poison-{time.time_ns()}"
    job = await enqueue("kills_its_worker", label=label)
    assert job is not None
    deaths = 0
    deadline = time.monotonic() + 60
    while await store().get(job.job_id) is None:
        assert time.monotonic() < deadline, "the poison job was never failed"
        worker = spawn("tests.apps.lifecycle", env={"SCALR_QUEUE_LEASE": "1"})
        worker.wait_started()
        while worker.proc.poll() is None and await store().get(job.job_id) is None:
            await asyncio.sleep(0.1)
        if worker.proc.poll() is not None:
            deaths += 1
        worker.stop()
    failed = await store().get(job.job_id)
    assert failed is not None
    assert failed.reason == "max_tries_exceeded"
    assert deaths == 3
    assert await redis.llen(f"starts:{label}") == 3
    with pytest.raises(JobFailedError, match="try 4 of at most 3: every earlier try was cut short"):
        await job.result(timeout=1)


# --- shutdown -----------------------------------------------------------------------------------------------


async def test_sigterm_finishes_short_job_and_requeues_long_one(
    spawn: Callable[..., WorkerProcess], redis
) -> None:  # type: ignore[no-untyped-def]
    """On SIGTERM a short job finishes, a long one is cancelled after the grace and queued again at once,
    without using a try; the process exits 0 within the grace."""
    label = f"term-{time.time_ns()}"
    worker = spawn("tests.apps.lifecycle", env={"SCALR_QUEUE_SHUTDOWN_GRACE": "2"})
    worker.wait_started()
    short = await enqueue("traced_sleep", seconds=0.8, label=f"{label}-short")
    long = await enqueue("traced_sleep", seconds=60, label=f"{label}-long")
    assert short is not None and long is not None
    await wait_until(lambda: redis.llen(f"starts:{label}-long"), 10, "long job start")
    await wait_until(lambda: redis.llen(f"starts:{label}-short"), 10, "short job start")
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    took = time.monotonic() - sent
    assert took < 2 + 2  # the grace plus process teardown
    assert await short.result(timeout=1) == f"{label}-short"
    assert await long.status() is JobStatus.queued  # back in the queue now, not after a lease
    assert await redis.exists(f"arq:in-progress:{long.job_id}") == 0
    assert int(await redis.get(f"arq:retry:{long.job_id}") or 0) == 0  # the cancelled try was handed back
    assert events(worker, "job_released", job_id=long.job_id, reason="worker_stopping")
    successor = spawn("tests.apps.lifecycle")
    started = successor.wait_for(lambda e: e.get("event") == "job_started" and e.get("job_id") == long.job_id)
    assert started["try"] == 1


async def test_sigint_is_a_graceful_stop_too(spawn: Callable[..., WorkerProcess]) -> None:
    """Ctrl-C in a terminal stops the same way, exit code 0."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 0
    assert events(worker, "worker_stopped")


# --- Redis trouble ------------------------------------------------------------------------------------------


async def test_worker_rides_out_a_redis_restart_with_aof(
    spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarts (AOF on): the worker reconnects in the same process and no job is lost."""
    with RedisServer(appendonly=True) as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        reset_settings()
        await scalr_queue.close()
        worker = spawn("tests.apps.basic", env={"REDIS_URL": server.url})
        worker.wait_started()
        before = [await enqueue("add", x=i, y=0, _defer_by=1.5) for i in range(20)]
        await scalr_queue.close()
        time.sleep(0.3)
        server.stop()
        time.sleep(1.0)
        server.start()
        worker.wait_for("redis_reconnected", timeout=20)
        assert worker.proc.poll() is None
        after = await enqueue("add", x=100, y=1)
        assert after is not None
        assert [await j.result(timeout=15) for j in before if j] == list(range(20))
        assert await after.result(timeout=10) == 101
        assert events(worker, "redis_unavailable")
        await scalr_queue.close()


async def test_eviction_policy_warning_and_config_refusal(
    spawn: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that may evict keys gets a warning at start; one that refuses CONFIG is skipped quietly."""
    with RedisServer(maxmemory_policy="allkeys-lru") as evicting:
        worker = spawn("tests.apps.basic", env={"REDIS_URL": evicting.url})
        warning = worker.wait_for("redis_may_evict_jobs")
        assert warning["maxmemory_policy"] == "allkeys-lru"
        assert warning["level"] == "warning"
        worker.stop()
    with RedisServer(extra_args=("--rename-command", "CONFIG", '""')) as locked:
        worker = spawn("tests.apps.basic", env={"REDIS_URL": locked.url})
        worker.wait_started()
        time.sleep(0.3)
        assert not events(worker, "redis_may_evict_jobs")
        assert worker.proc.poll() is None
        worker.stop()


# --- bad payloads and unknown tasks -------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


async def test_garbage_and_pickle_payloads_fail_and_worker_keeps_serving(
    spawn: Callable[..., WorkerProcess],
    redis,
    queue: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A code-running pickle is never unpickled; garbage too: both land in the failed store, the worker goes on."""
    marker = tmp_path / "pwned"
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    now_ms = int(time.time() * 1000)
    for job_id, raw in (("evil-pickle", pickle.dumps(_RunsCode(marker))), ("garbage", b"\x00\xffnot json")):
        await redis.set(f"arq:job:{job_id}", raw, px=60_000)
        await redis.zadd(f"arq:queue:{queue}", {job_id: now_ms})
    for job_id in ("evil-pickle", "garbage"):
        await wait_until(lambda job_id=job_id: store().get(job_id), 10, f"{job_id} recorded")
        failed = await store().get(job_id)
        assert failed is not None
        assert failed.reason == "undecodable_payload"
        assert failed.extra["payload_preview"]
    assert not marker.exists()
    good = await enqueue("add", x=2, y=2)
    assert good is not None
    assert await good.result(timeout=10) == 4
    assert worker.proc.poll() is None


async def test_unknown_task_waits_out_the_rollout_window_then_fails(
    spawn: Callable[..., WorkerProcess],
) -> None:
    """An old worker puts back a task it does not know for the rollout window; after it, the job fails."""
    worker = spawn("tests.apps.basic", env={"SCALR_QUEUE_ROLLOUT_WINDOW": "3"})
    worker.wait_started()
    job = await enqueue("shiny_new_task", x=1)
    assert job is not None
    worker.wait_for(
        lambda e: (
            e.get("event") == "job_released"
            and e.get("job_id") == job.job_id
            and e.get("reason") == "unknown_task"
        )
    )
    await wait_until(
        lambda: _is(job.status(), JobStatus.deferred), 5, "put back, deferred"
    )  # logged, then written
    assert await store().get(job.job_id) is None
    await wait_until(lambda: store().get(job.job_id), 10, "failed after the window")
    failed = await store().get(job.job_id)
    assert failed is not None
    assert failed.reason == "unknown_task"
    assert failed.task == "shiny_new_task"


async def test_newer_worker_takes_the_unknown_task_during_the_rollout(
    spawn: Callable[..., WorkerProcess],
) -> None:
    """During a rollout, a job the old worker put back is run by the new worker that knows it."""
    old = spawn("tests.apps.basic")
    old.wait_started()
    job = await enqueue("shiny_new_task", x=2)
    assert job is not None
    old.wait_for(
        lambda e: (
            e.get("event") == "job_released"
            and e.get("job_id") == job.job_id
            and e.get("reason") == "unknown_task"
        )
    )
    new = spawn("tests.apps.newer")
    new.wait_started()
    assert await job.result(timeout=30) == 200
    assert await store().get(job.job_id) is None


async def test_expired_job_lands_in_failed_store(spawn: Callable[..., WorkerProcess]) -> None:
    """A job whose data expired before a worker took it is recorded as expired, not dropped silently."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("add", x=1, y=1, _defer_by=1.0, _expires=0.3)
    assert job is not None
    await wait_until(lambda: store().get(job.job_id), 10, "expired job recorded")
    failed = await store().get(job.job_id)
    assert failed is not None
    assert failed.reason == "expired"
