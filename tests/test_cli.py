"""The operator's CLI against a real Redis and worker: every command, its --json, and its bad inputs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scalr_queue import JobStatus, enqueue
from scalr_queue.testing import free_port
from tests.conftest import WorkerProcess, run_command

CLI = str(Path(sys.executable).parent / "scalr-queue")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_command(CLI, *args, env=env)


def one_line_error(result: subprocess.CompletedProcess[str], starts: str) -> None:
    assert result.returncode != 0
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


async def test_enqueue_parses_json_values_else_strings(queue: str) -> None:
    """`scalr-queue enqueue TASK key=value ...` prints the job id; JSON values stay typed, others are strings."""
    made = cli("enqueue", "untyped", 'value=[1, 2, {"a": true}]')
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()
    shown = json.loads(cli("job", job_id, "--json").stdout)
    assert shown["kwargs"] == {"value": [1, 2, {"a": True}]}
    assert shown["state"] == "queued"
    assert shown["queue"] == queue
    as_text = json.loads(
        cli("job", cli("enqueue", "untyped", "value=hello world").stdout.strip(), "--json").stdout
    )
    assert as_text["kwargs"] == {"value": "hello world"}
    deferred = cli(
        "enqueue", "add", "x=1", "y=2", "--defer", "60", "--job-id", "cli-deferred", "--queue", queue
    )
    assert deferred.stdout.strip() == "cli-deferred"
    assert json.loads(cli("job", "cli-deferred", "--json").stdout)["state"] == "deferred"
    one_line_error(
        cli("enqueue", "add", "x=1", "y=2", "--job-id", "cli-deferred"),
        "a job with id 'cli-deferred' already exists",
    )
    one_line_error(cli("enqueue", "add", "x1"), "'x1' is not key=value")
    one_line_error(cli("enqueue", "add", "=1"), "'=1' is not key=value")


def test_enqueue_checks_names_with_scalr_queue_tasks() -> None:
    """With SCALR_QUEUE_TASKS the CLI refuses unknown tasks and bad arguments, like enqueue in code."""
    env = {"SCALR_QUEUE_TASKS": "tests.apps.basic"}
    one_line_error(cli("enqueue", "ad", "x=1", env=env), "unknown task 'ad': did you mean 'add'?")
    one_line_error(cli("enqueue", "add", "x=one", "y=2", env=env), "task 'add': argument 'x'")


async def test_stats_jobs_and_job_follow_a_worker(spawn: Callable[..., WorkerProcess], queue: str) -> None:
    """stats counts queued/in-progress/deferred/failed/workers; jobs lists by state; job shows result or error."""
    running = await enqueue("sleep", seconds=30)
    waiting = [await enqueue("add", x=i, y=1) for i in range(3)]
    later = await enqueue("add", x=9, y=9, _defer_by=600)
    assert running is not None and later is not None
    before = json.loads(cli("stats", queue, "--json").stdout)
    assert before == [
        {
            "queue": queue,
            "queued": 4,
            "in_progress": 0,
            "deferred": 1,
            "failed": 0,
            "workers": 0,
            "oldest_queued_age_s": before[0]["oldest_queued_age_s"],
            "paused": False,
            "released_last_hour": 0,
        }
    ]
    assert before[0]["oldest_queued_age_s"] >= 0
    worker = spawn("tests.apps.basic", env={"SCALR_QUEUE_CONCURRENCY": "1"})
    worker.wait_started()
    worker.wait_for(lambda e: e.get("event") == "job_started" and e.get("task") == "sleep")
    boom = await enqueue("boom", message="visible in stats")
    assert boom is not None
    after = json.loads(cli("stats", queue, "--json").stdout)[0]
    assert (after["in_progress"], after["deferred"], after["workers"]) == (1, 1, 1)
    table = cli("stats").stdout
    assert queue in table
    assert "oldest waiting" in table

    in_progress = json.loads(cli("jobs", "--queue", queue, "--state", "in-progress", "--json").stdout)
    assert [(j["job_id"], j["task"], j["try"]) for j in in_progress] == [(running.job_id, "sleep", 1)]
    deferred = json.loads(cli("jobs", "--queue", queue, "--state", "deferred", "--json").stdout)
    assert [j["job_id"] for j in deferred] == [later.job_id]
    queued = json.loads(cli("jobs", "--queue", queue, "--state", "queued", "--json").stdout)
    assert {j["job_id"] for j in queued} == {w.job_id for w in waiting if w} | {boom.job_id}
    listing = cli("jobs", "--queue", queue)
    assert "runs at" in listing.stdout
    assert running.job_id in listing.stdout

    worker.signal(15)
    worker.wait()
    successor = spawn("tests.apps.basic")
    successor.wait_started()
    for job in waiting:
        assert job is not None
        await job.result(timeout=10)
    while await boom.status() is not JobStatus.failed:
        await asyncio.sleep(0.05)
    done = json.loads(cli("job", waiting[0].job_id, "--json").stdout)  # type: ignore[union-attr]
    assert (done["state"], done["result"]) == ("complete", 1)
    failed = cli("job", boom.job_id)
    assert "state:       failed" in failed.stdout
    assert "error:       ValueError: visible in stats" in failed.stdout
    assert json.loads(cli("stats", queue, "--json").stdout)[0]["failed"] == 1


async def test_pause_holds_jobs_and_resume_releases_them(
    spawn: Callable[..., WorkerProcess], queue: str
) -> None:
    """A paused queue's workers take nothing new; jobs wait; stats shows it; resume lets them run."""
    await enqueue("add", x=0, y=0)  # the queue must exist to be paused
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    assert cli("pause", queue).stdout.strip() == f"paused {queue}"
    job = await enqueue("add", x=20, y=22)
    assert job is not None
    await asyncio.sleep(1.5)
    assert await job.status() is JobStatus.queued
    assert json.loads(cli("stats", queue, "--json").stdout)[0]["paused"] is True
    assert cli("resume", queue).stdout.strip() == f"resumed {queue}"
    assert await job.result(timeout=10) == 42
    assert cli("resume", queue).stdout.strip() == f"{queue} was not paused"


async def test_purge_removes_waiting_jobs_only(
    spawn: Callable[..., WorkerProcess], redis, queue: str
) -> None:  # type: ignore[no-untyped-def]
    """purge QUEUE --yes deletes queued and deferred jobs with their data; a running job finishes."""
    worker = spawn("tests.apps.basic", env={"SCALR_QUEUE_CONCURRENCY": "1"})
    worker.wait_started()
    # long enough to outlast two CLI runs on a loaded machine: the single slot stays taken, nothing else starts
    running = await enqueue("sleep", seconds=5)
    assert running is not None
    worker.wait_for(lambda e: e.get("event") == "job_started" and e.get("job_id") == running.job_id)
    waiting = [await enqueue("add", x=i, y=0) for i in range(5)] + [
        await enqueue("add", x=1, y=1, _defer_by=300)
    ]
    one_line_error(cli("purge", queue), f"purge deletes every waiting job of '{queue}' for good: add --yes")
    assert cli("purge", queue, "--yes").stdout.strip() == f"purged 6 job(s) from {queue}"
    assert all([await redis.exists(f"arq:job:{j.job_id}") == 0 for j in waiting if j])
    assert await running.result(timeout=15) == 5


async def test_clean_drops_old_results_and_failure_records(redis) -> None:  # type: ignore[no-untyped-def]
    """clean --older-than removes results and failure records older than the duration, nothing newer."""
    from scalr_queue.client import default_client
    from scalr_queue.failed import FailedJob, FailedStore
    from scalr_queue.wire import dumps

    old_ms = int((time.time() - 7200) * 1000)
    await redis.set("arq:result:clean-old", dumps({"s": True, "r": 1, "ft": old_ms, "f": "add"}))
    await redis.set(
        "arq:result:clean-new", dumps({"s": True, "r": 1, "ft": int(time.time() * 1000), "f": "add"})
    )
    store = FailedStore(default_client().redis, max_age_s=86_400, max_count=100)
    record = FailedJob(
        "clean-failed", "t", {}, "q", 1, "raised", "E", "m", None, None, "2026-01-01T00:00:00+00:00"
    )
    await store.record(record)
    await redis.zadd("arq:failed", {"clean-failed": old_ms})
    out = cli("clean", "--older-than", "1h")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("deleted ")
    assert await redis.exists("arq:result:clean-old") == 0
    assert await redis.exists("arq:result:clean-new") == 1
    assert await store.get("clean-failed") is None
    one_line_error(cli("clean", "--older-than", "a while"), "'a while' is not a duration")


@pytest.mark.parametrize(
    "args",
    [
        ("stats", "nope"),
        ("jobs", "--queue", "nope"),
        ("pause", "nope"),
        ("resume", "nope"),
        ("purge", "nope", "--yes"),
    ],
)
def test_unknown_queue_is_one_line(args: tuple[str, ...]) -> None:
    """A queue nothing was enqueued to and no worker serves is named as unknown, with the known ones."""
    one_line_error(cli(*args), "unknown queue 'nope'")


def test_unknown_job_id_is_one_line() -> None:
    one_line_error(cli("job", "no-such-job"), "no job 'no-such-job'")


@pytest.mark.parametrize(
    "args",
    [
        ("stats",),
        ("jobs",),
        ("job", "x"),
        ("enqueue", "add"),
        ("pause", "q"),
        ("clean", "--older-than", "1d"),
    ],
)
def test_redis_down_is_one_line_for_every_command(args: tuple[str, ...]) -> None:
    """With Redis unreachable each command prints one line naming the URL, password hidden, exit 1."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = cli(*args, "--redis-url", url)
    one_line_error(result, "cannot reach Redis at redis://:***@127.0.0.1")
    assert "hunter2" not in result.stderr


async def test_redis_url_option_overrides_the_setting(redis_server, queue: str) -> None:  # type: ignore[no-untyped-def]
    """--redis-url wins over REDIS_URL, before or after the command name."""
    await enqueue("add", x=1, y=1)
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert cli("stats", queue, "--redis-url", redis_server.url, env=env).returncode == 0
    assert cli("--redis-url", redis_server.url, "stats", queue, env=env).returncode == 0


def test_usage_errors_are_one_line_too() -> None:
    """A missing argument or a bad option value is one line with exit code 2."""
    one_line_error(cli("job"), "Missing argument 'JOB_ID'")
    one_line_error(cli("jobs", "--state", "sleeping"), "Invalid value for '--state'")
    assert cli("job").returncode == 2


def test_help_lists_every_command() -> None:
    """`scalr-queue --help` names each command."""
    out = cli("--help").stdout
    for command in (
        "worker",
        "check",
        "stats",
        "jobs",
        "job",
        "enqueue",
        "failed",
        "pause",
        "resume",
        "purge",
        "clean",
    ):
        assert f"  {command} " in out
