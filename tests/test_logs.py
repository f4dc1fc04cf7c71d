"""Structured logs: JSON lines off a TTY, console lines on request, job events with their fields, no password."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import structlog

from scalr_queue import Retry, configure_logging, enqueue
from scalr_queue.testing import RedisServer
from tests.conftest import WorkerProcess


async def test_job_events_carry_their_fields(spawn: Callable[..., WorkerProcess]) -> None:
    """job_started/succeeded/retrying/failed carry job_id, task, queue, try, duration_ms and the error."""
    worker = spawn("tests.apps.basic", env={"SCALR_QUEUE_LOG_FORMAT": "auto"})  # stdout is a pipe: JSON
    worker.wait_started()
    ok = await enqueue("add", x=1, y=2)
    retried = await enqueue("retry_once")
    failed = await enqueue("boom", message="bad card")
    assert ok is not None
    assert retried is not None
    assert failed is not None
    await ok.result(timeout=10)
    await retried.result(timeout=10)
    done = worker.wait_for(lambda e: e.get("event") == "job_failed" and e.get("job_id") == failed.job_id)
    assert done["task"] == "boom"
    assert done["try"] == 1
    assert done["error_type"] == "ValueError"
    assert done["error"] == "bad card"
    assert "raise ValueError(message)" in done["exception"]
    assert isinstance(done["duration_ms"], float)
    started = worker.wait_for(lambda e: e.get("event") == "job_started" and e.get("job_id") == ok.job_id)
    assert {"job_id", "task", "queue", "try", "timestamp", "level"} <= started.keys()
    succeeded = worker.wait_for(lambda e: e.get("event") == "job_succeeded" and e.get("job_id") == ok.job_id)
    assert succeeded["queue"] == started["queue"]
    assert succeeded["duration_ms"] >= 0
    retrying = worker.wait_for(
        lambda e: e.get("event") == "job_retrying" and e.get("job_id") == retried.job_id
    )
    assert retrying["defer_s"] == 0.1
    second = worker.wait_for(
        lambda e: (
            e.get("event") == "job_succeeded" and e.get("job_id") == retried.job_id and e.get("try") == 2
        )
    )
    assert second["task"] == "retry_once"
    non_json = [line for line in worker.lines if not line.startswith("{")]
    assert non_json == []


async def test_arq_records_and_task_logs_share_the_pipeline(spawn: Callable[..., WorkerProcess]) -> None:
    """arq's per-job lines (with SCALR_QUEUE_ARQ_JOB_LINES) come out as JSON too, with the job's context, and a
    task's own log lines carry the job's context."""
    worker = spawn("tests.apps.basic", env={"SCALR_QUEUE_ARQ_JOB_LINES": "true"})
    worker.wait_started()
    job = await enqueue("log_inside", note="hello")
    assert job is not None
    await job.result(timeout=10)
    started = worker.wait_for(lambda e: e.get("logger") == "arq.worker" and "→" in e["event"])
    assert f"{job.job_id}:log_inside(note='hello')" in started["event"]
    assert started["job_id"] == job.job_id
    done = worker.wait_for(lambda e: e.get("logger") == "arq.worker" and "←" in e["event"])
    assert f"{job.job_id}:log_inside ● 'hello'" in done["event"]
    stdlib = worker.wait_for(lambda e: str(e.get("event", "")).startswith("stdlib line from a task"))
    assert stdlib["job_id"] == job.job_id
    assert stdlib["task"] == "log_inside"
    structured = worker.wait_for(lambda e: e.get("event") == "structlog line from a task")
    assert structured["job_id"] == job.job_id
    assert structured["note"] == "hello"


async def test_startup_event_names_tasks_queue_url_and_version(
    spawn: Callable[..., WorkerProcess], queue: str
) -> None:
    """worker_started names the tasks, the queue, the Redis URL without password, and redis_version."""
    with RedisServer(password="s3cr3t-pw") as server:
        worker = spawn("tests.apps.basic", env={"REDIS_URL": server.url})
        started = worker.wait_started()
        assert started["queue"] == queue
        assert "add" in started["tasks"]
        assert started["redis_url"] == f"redis://:***@127.0.0.1:{server.port}/0"
        assert started["redis_version"].count(".") == 2
        worker.stop()
        assert "s3cr3t-pw" not in worker.output


def test_console_format_on_request(spawn: Callable[..., WorkerProcess]) -> None:
    """SCALR_QUEUE_LOG_FORMAT=console gives readable lines, not JSON."""
    worker = spawn("tests.apps.basic", env={"SCALR_QUEUE_LOG_FORMAT": "console"})
    deadline_line = None
    import time

    end = time.monotonic() + 20
    while time.monotonic() < end and deadline_line is None:
        deadline_line = next((line for line in worker.lines if "worker_started" in line), None)
        time.sleep(0.05)
    assert deadline_line is not None, worker.output
    assert not deadline_line.startswith("{")
    assert "queue=" in deadline_line


def test_web_process_opts_in_with_one_call(capsys: pytest.CaptureFixture[str]) -> None:
    """configure_logging('json') sends structlog and stdlib logging to stdout as JSON lines."""
    import logging

    configure_logging("json", "INFO")
    structlog.get_logger("web").info("order_placed", order_id=7)
    logging.getLogger("web.stdlib").warning("plain %s", "logging")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "order_placed"
    assert lines[0]["order_id"] == 7
    assert lines[1]["event"] == "plain logging"
    assert lines[1]["level"] == "warning"


def test_retry_is_arq_retry() -> None:
    """Retry is arq's own class, so existing tasks keep working."""
    import arq.worker

    assert Retry is arq.worker.Retry


def test_auto_format_is_console_on_a_terminal(redis_server: object) -> None:
    """With SCALR_QUEUE_LOG_FORMAT=auto and stdout a terminal, lines are for people, not JSON."""
    import os
    import pty
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    leader, follower = pty.openpty()
    env = {**os.environ, "SCALR_QUEUE_LOG_FORMAT": "auto"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic"],
        cwd=ROOT,
        env=env,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 20
        while b"worker_started" not in output and time.monotonic() < deadline:
            try:
                output += os.read(leader, 4096)
            except OSError:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(leader)
    line = next(raw for raw in output.decode(errors="replace").splitlines() if "worker_started" in raw)
    assert not line.lstrip().startswith("{")
    assert "\x1b[" in line  # colours: a terminal
