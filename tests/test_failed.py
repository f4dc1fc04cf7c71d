"""The failed store: records with their reasons, bounded retention, and list/show/retry/forget/flush (API and CLI)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scalr_queue import JobFailedError, JobStatus, enqueue
from scalr_queue.client import default_client
from scalr_queue.config import load_settings
from scalr_queue.connection import create_redis
from scalr_queue.failed import FailedJob, FailedStore
from scalr_queue.testing import RedisServer, free_port
from scalr_queue.worker import serve
from tests.conftest import WorkerProcess, run_command

CLI = str(Path(sys.executable).parent / "scalr-queue")


def store() -> FailedStore:
    return FailedStore(default_client().redis, max_age_s=3600, max_count=1000)


def record(job_id: str, queue: str = "q", task: str = "t") -> FailedJob:
    return FailedJob(
        job_id=job_id,
        task=task,
        kwargs={"x": 1},
        queue=queue,
        tries=1,
        reason="raised",
        error_type="ValueError",
        message="bad",
        traceback=None,
        enqueued_at=None,
        failed_at="2026-01-01T00:00:00.000+00:00",
    )


async def test_record_is_readable_json_under_documented_keys(redis) -> None:  # type: ignore[no-untyped-def]
    """`redis-cli get arq:failed:<id>` shows the record; `arq:failed` indexes it by failure time."""
    await store().record(record("json-1"))
    raw = await redis.get("arq:failed:json-1")
    assert json.loads(raw)["message"] == "bad"
    assert await redis.type("arq:failed") == b"zset"
    assert await redis.zscore("arq:failed", "json-1") is not None
    assert 3590 <= await redis.ttl("arq:failed:json-1") <= 3600
    await store().forget("json-1")


async def test_retention_is_bounded_by_count_and_age() -> None:
    """The oldest records go first once the count bound is passed; records older than the age bound go too."""
    with RedisServer() as server:  # a store of its own: the bounds are global, other tests write records too
        redis = create_redis(load_settings(redis_url=server.url))
        try:
            small = FailedStore(redis, max_age_s=3600, max_count=3)
            for i in range(5):
                await small.record(record(f"count-{i}"))
                time.sleep(0.002)
            assert [j.job_id for j in await small.list()] == ["count-4", "count-3", "count-2"]
            assert await small.get("count-0") is None
            brief = FailedStore(redis, max_age_s=0.05, max_count=100)
            await brief.record(record("old"))
            time.sleep(0.1)
            await brief.record(record("new"))
            assert await brief.get("new") is not None
            assert await brief.get("old") is None
        finally:
            await redis.aclose(close_connection_pool=True)


async def test_failed_job_is_recorded_and_retried_with_fresh_tries(redis) -> None:  # type: ignore[no-untyped-def]
    """A failure lands with its reason; retry re-queues the same id, task and arguments; the fixed job completes."""
    flag = f"broken:{time.time_ns()}"
    await redis.set(flag, "1")
    job = await enqueue("fails_while_flag", flag=flag)
    assert job is not None
    await serve("tests.apps.lifecycle", burst=True, handle_signals=False)
    failed = await store().get(job.job_id)
    assert failed is not None
    assert (failed.task, failed.kwargs, failed.reason, failed.tries) == (
        "fails_while_flag",
        {"flag": flag},
        "raised",
        1,
    )
    assert failed.error_type == "RuntimeError"
    assert "raise RuntimeError" in (failed.traceback or "")
    assert await job.status() is JobStatus.failed
    await redis.delete(flag)
    assert await store().retry(job.job_id)
    assert await store().get(job.job_id) is None
    assert await job.status() is JobStatus.queued
    assert await redis.get(f"arq:retry:{job.job_id}") is None  # fresh tries
    await serve("tests.apps.lifecycle", burst=True, handle_signals=False)
    assert await job.result(timeout=1) == "fixed"


async def test_cli_list_show_retry_forget_flush(redis, queue: str) -> None:  # type: ignore[no-untyped-def]
    """The operator's commands against a real store, with --json, and one-line errors for bad ids."""
    flags = [f"cli-broken:{time.time_ns()}:{i}" for i in range(3)]
    for flag in flags:
        await redis.set(flag, "1")
    jobs = [await enqueue("fails_while_flag", flag=flag) for flag in flags]
    await serve("tests.apps.lifecycle", burst=True, handle_signals=False)
    ids = [j.job_id for j in jobs if j]

    listed = run_command(CLI, "failed", "list", "--queue", queue)
    assert listed.returncode == 0, listed.stderr
    assert all(job_id in listed.stdout for job_id in ids)
    assert "fails_while_flag" in listed.stdout
    assert "RuntimeError" in listed.stdout
    as_json = json.loads(run_command(CLI, "failed", "list", "--queue", queue, "--json").stdout)
    assert {r["job_id"] for r in as_json} == set(ids)

    shown = run_command(CLI, "failed", "show", ids[0])
    assert shown.returncode == 0
    assert f'"flag": "{flags[0]}"' in shown.stdout
    assert "traceback:" in shown.stdout
    assert "reason:      raised" in shown.stdout

    await redis.delete(flags[0])
    retried = run_command(CLI, "failed", "retry", ids[0])
    assert retried.stdout.strip() == ids[0]
    forgot = run_command(CLI, "failed", "forget", ids[1])
    assert forgot.returncode == 0
    assert await store().get(ids[1]) is None

    missing = run_command(CLI, "failed", "show", "no-such-id")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no failed job 'no-such-id' (see: scalr-queue failed list)"
    assert "Traceback" not in missing.stderr
    assert run_command(CLI, "failed", "retry").returncode == 2  # usage: an id or --all

    for flag in flags:
        await redis.delete(flag)
    all_retried = run_command(CLI, "failed", "retry", "--all", "--queue", queue)
    assert all_retried.stdout.split() == [ids[2]]
    await serve("tests.apps.lifecycle", burst=True, handle_signals=False)
    assert [await j.result(timeout=1) for j in (jobs[0], jobs[2]) if j] == ["fixed", "fixed"]

    await store().record(record("to-flush", queue=queue))
    flushed = run_command(CLI, "failed", "flush", "--queue", queue, "--yes")
    assert flushed.stdout.strip() == "forgot 1 failed job(s)"
    refused = run_command(CLI, "failed", "flush")  # no terminal to confirm on: nothing is flushed
    assert refused.returncode == 1


def test_cli_with_redis_down_is_one_line() -> None:
    """Redis unreachable: one line naming the URL (no password), exit 1."""
    result = run_command(CLI, "failed", "list", env={"REDIS_URL": f"redis://:pw@127.0.0.1:{free_port()}/0"})
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach Redis at redis://:***@127.0.0.1")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_job_result_raises_last_real_error(spawn: Callable[..., WorkerProcess]) -> None:
    """When the tries run out, the failure kept is the real last exception, not 'max retries exceeded'."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("always_fails", label="last")
    assert job is not None
    with pytest.raises(JobFailedError, match="RuntimeError: last: try 3 failed"):
        await job.result(timeout=15)
    failed = await store().get(job.job_id)
    assert failed is not None
    assert (failed.reason, failed.tries, failed.max_tries) == ("raised", 3, 3)
    assert failed.message == "last: try 3 failed"
