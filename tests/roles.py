"""What each role sends to Redis, exercised end to end: the worker, the producer (web app) and the operator's CLI.

Shared by tests/test_acl.py, which runs each role under the ACL user docs/security.md gives it, and by
scripts/acl_commands.py, which lists the commands each role sends (from ``INFO commandstats``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from scalr_queue import Client, JobFailedError, NotReplicatedError
from scalr_queue.config import Settings
from scalr_queue.health import live_workers
from scalr_queue.stats import queue_counts
from tests.conftest import ROOT, WorkerProcess, run_command

CLI = str(Path(sys.executable).parent / "scalr-queue")
WORKER_APP = "tests.apps.acl_worker"
ROLES = ("worker", "producer", "cli")


def role_url(port: int, user: str, password: str, db: int = 1) -> str:
    """A URL for an ACL user; database 1, so that the role must be allowed SELECT too."""
    return f"redis://{user}:{password}@127.0.0.1:{port}/{db}"


async def prepare_worker_jobs(admin_url: str, queue: str, admin: redis.Redis) -> int:
    """Queue a job for every path a worker takes; returns how many jobs must reach an end (not the long one)."""
    client = Client(Settings(REDIS_URL=admin_url, name=queue))  # type: ignore[call-arg]
    await client.enqueue("add", x=1, y=2)
    await client.enqueue("flaky", fail_times=1)  # a retry, then success
    await client.enqueue("boom")  # failed store
    await client.enqueue("too_slow")  # timeout, then failed store
    await client.enqueue("retry_once")  # arq's Retry
    await client.enqueue("give_up")  # NonRetryableError
    await client.enqueue("sleep", seconds=2.5)  # outlives two lease renewals
    await client.enqueue("no_such_task")  # put back during the rollout window, then failed as unknown
    await client.enqueue("add", x=1, y=1, _defer_by=1.5, _expires=0.5)  # its data expires before it is due
    await client.enqueue("sleep", seconds=60, _job_id="still-running")  # running at SIGTERM: re-queued
    await client.close()
    # A payload scalr_queue did not write (undecodable): the worker fails it with the reason.
    admin.set("arq:job:garbage", b"\x80not json", px=600_000)
    admin.zadd(f"arq:queue:{queue}", {"garbage": int(time.time() * 1000)})
    return 10  # the jobs above that end (succeed or fail), the garbage one included, the long one excepted


WORKER_ENV = {
    "SCALR_QUEUE_LEASE": "1",
    "SCALR_QUEUE_ROLLOUT_WINDOW": "2",
    "SCALR_QUEUE_SHUTDOWN_GRACE": "0.5",
    "SCALR_QUEUE_HEALTH_INTERVAL": "1",
}


def run_worker_role(spawn: Callable[..., WorkerProcess], url: str, queue: str, ends: int) -> WorkerProcess:
    """A worker subprocess that runs every prepared job to its end, then stops on SIGTERM with one job running."""
    worker = spawn(WORKER_APP, env={"REDIS_URL": url, "SCALR_QUEUE_NAME": queue, **WORKER_ENV})
    worker.wait_started()

    def ended() -> set[str]:
        return {
            str(e.get("job_id"))
            for e in worker.events
            if e.get("event") in {"job_succeeded", "job_failed"} and e.get("task") != "cron:tick"
        }

    deadline = time.monotonic() + 60
    while len(ended()) < ends:
        assert worker.proc.poll() is None, worker.output
        assert time.monotonic() < deadline, f"the jobs did not all end within 60 s:\n{worker.output}"
        time.sleep(0.1)
    worker.wait_for(lambda e: e.get("event") == "job_started" and e.get("job_id") == "still-running")
    env = {"REDIS_URL": url, "SCALR_QUEUE_NAME": queue}
    probe = run_command(sys.executable, "-m", "scalr_queue.worker", WORKER_APP, "--check", env=env)
    assert probe.returncode == 0, probe.stdout + probe.stderr  # the healthcheck runs with the worker's user
    worker.wait_for(lambda e: e.get("event") == "job_succeeded" and e.get("task") == "cron:tick")
    time.sleep(2.5)  # heartbeats, lease renewals and an idle wait on the notify list
    worker.signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not stop within 30 s of SIGTERM:\n{worker.output}") from None
    assert code == 0, worker.output
    return worker


async def run_producer_role(url: str, queue: str, finished: list[str]) -> None:
    """What a web app does: enqueue, enqueue_many, look at jobs, wait for results, answer readiness."""
    client = Client(Settings(REDIS_URL=url, name=queue))  # type: ignore[call-arg]
    job = await client.enqueue("add", x=1, y=2)
    assert job is not None
    assert await client.enqueue("add", x=1, y=2, _job_id=job.job_id) is None
    await client.enqueue("add", x=1, y=2, _defer_by=60)
    many = await client.enqueue_many([("add", {"x": i, "y": i}) for i in range(3)])
    assert all(many)
    assert await job.status() == "queued"
    assert await job.info() is not None
    ok, failed = client.job(finished[0], queue), client.job(finished[1], queue)
    assert await ok.result(timeout=5) == 3
    try:
        await failed.result(timeout=5)
    except JobFailedError:
        pass
    else:
        raise AssertionError("the failed job's result did not raise")
    assert await client.job("no-such-job").status() == "not_found"
    await queue_counts(client.redis, queue)  # the FastAPI readiness route
    await live_workers(client.redis, queue)
    await client.close()
    waiting = Client(Settings(REDIS_URL=url, name=queue, wait_replicas=1, wait_timeout=0.1))  # type: ignore[call-arg]
    with contextlib.suppress(
        NotReplicatedError
    ):  # SCALR_QUEUE_WAIT_REPLICAS=1 and no replica here: it raises
        await waiting.enqueue("add", x=1, y=2)
    await waiting.close()


async def prepare_finished_jobs(admin_url: str, queue: str, spawn: Callable[..., WorkerProcess]) -> list[str]:
    """A succeeded and a failed job, run by a burst worker: results for the producer and the CLI to read."""
    client = Client(Settings(REDIS_URL=admin_url, name=queue))  # type: ignore[call-arg]
    ok = await client.enqueue("add", x=1, y=2)
    bad = await client.enqueue("boom", message="for the failed store")
    assert ok is not None and bad is not None
    worker = spawn(WORKER_APP, "--burst", env={"REDIS_URL": admin_url, "SCALR_QUEUE_NAME": queue})
    assert worker.wait(timeout=60) == 0, worker.output
    await client.enqueue("add", x=5, y=5)  # queued
    await client.enqueue("add", x=5, y=5, _defer_by=600)  # deferred
    await client.close()
    return [ok.job_id, bad.job_id]


def fake_live_worker(admin: redis.Redis, queue: str) -> None:
    """A heartbeat record of a live worker, so that the probe reads one (a real worker would add its own traffic)."""
    record = {
        "worker_id": "acl:1",
        "host": os.uname().nodename,
        "pid": 1,
        "queue": queue,
        "running": [],
        "beat_at": time.time(),
    }
    admin.set("arq:worker:acl:1", json.dumps(record), px=600_000)
    admin.zadd(f"arq:workers:{queue}", {"acl:1": int(time.time() * 1000) + 600_000})


def run_cli_role(url: str, queue: str, finished: list[str]) -> None:
    """Every operator command, each expected to succeed."""
    env = {"REDIS_URL": url, "SCALR_QUEUE_NAME": queue}
    ok, failed = finished

    def cli(*args: str, code: int = 0) -> str:
        result = run_command(CLI, *args, env=env)
        assert result.returncode == code, f"scalr-queue {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    cli("stats")
    cli("stats", queue, "--json")
    for state in ("queued", "deferred", "in-progress"):
        cli("jobs", "--queue", queue, "--state", state)
    cli("jobs", "--queue", queue, "--json")
    cli("job", ok)
    cli("job", failed, "--json")
    cli("enqueue", "add", "x=1", "y=2", "--queue", queue)
    cli("failed", "list")
    cli("failed", "show", failed)
    cli("failed", "retry", failed)
    cli("failed", "forget", failed, code=1)  # retried, so no longer in the store: a one-line error
    cli("failed", "flush", "--yes")
    cli("pause", queue)
    cli("resume", queue)
    cli("purge", queue, "--yes")
    cli("clean", "--older-than", "1s")
    probe = run_command(sys.executable, "-m", "scalr_queue.worker", WORKER_APP, "--check", env=env)
    assert probe.returncode == 0, probe.stdout + probe.stderr


__all__ = [
    "CLI",
    "ROLES",
    "ROOT",
    "WORKER_APP",
    "fake_live_worker",
    "prepare_finished_jobs",
    "prepare_worker_jobs",
    "role_url",
    "run_cli_role",
    "run_producer_role",
    "run_worker_role",
]
