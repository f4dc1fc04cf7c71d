"""The health probe: per-worker heartbeats with a short expiry, answered within seconds, SIGKILL included."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scalr_queue import enqueue
from scalr_queue.testing import free_port
from tests.conftest import WorkerProcess, run_command

CHECK = (sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", "--check")


def wait_for_check(expected: int, timeout: float) -> tuple[float, str]:
    """Run the probe until it exits with ``expected``; returns the seconds it took and its last output."""
    started = time.monotonic()
    while True:
        result = run_command(*CHECK)
        if result.returncode == expected:
            return time.monotonic() - started, result.stdout + result.stderr
        assert time.monotonic() - started < timeout, (
            f"probe still exits {result.returncode}:\n{result.stdout}"
        )
        time.sleep(0.5)


async def test_probe_reports_depth_and_jobs_in_progress(spawn: Callable[..., WorkerProcess]) -> None:
    """While a worker lives the probe exits 0 and prints the queue depth and what runs now."""
    worker = spawn(
        "tests.apps.basic", env={"SCALR_QUEUE_HEALTH_INTERVAL": "0.5", "SCALR_QUEUE_CONCURRENCY": "1"}
    )
    worker.wait_started()
    running = await enqueue("sleep", seconds=20)
    for _ in range(3):
        await enqueue("add", x=1, y=1)
    assert running is not None
    worker.wait_for(lambda e: e.get("event") == "job_started" and e.get("task") == "sleep")
    await asyncio.sleep(1.2)  # let a heartbeat carry the running job
    result = run_command(*CHECK)
    assert result.returncode == 0, result.stdout
    assert "healthy: 1 live worker(s)" in result.stdout
    assert "3 queued, 1 in progress, 0 deferred" in result.stdout
    assert f"1 in progress [sleep({running.job_id})]" in result.stdout


def test_probe_fails_within_30_s_of_sigkill(spawn: Callable[..., WorkerProcess]) -> None:
    """With default settings, a SIGKILLed worker stops passing the probe well within 30 s (measured)."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    wait_for_check(0, timeout=10)
    worker.signal(signal.SIGKILL)
    worker.wait()
    took, output = wait_for_check(1, timeout=30)
    print(f"probe failed {took:.1f} s after SIGKILL")
    assert "unhealthy: no live worker" in output


def test_clean_stop_of_one_worker_leaves_sibling_healthy(spawn: Callable[..., WorkerProcess]) -> None:
    """Health is per worker: one worker stopping cleanly does not fail the probe for a live sibling."""
    first = spawn("tests.apps.basic")
    second = spawn("tests.apps.basic")
    first.wait_started()
    second.wait_started()
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    result = run_command(*CHECK)
    assert result.returncode == 0, result.stdout
    assert "healthy: 1 live worker(s)" in result.stdout
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert run_command(*CHECK).returncode == 1  # the last one gone: unhealthy at once, no expiry to wait for


def test_probe_with_redis_unreachable_is_one_line_within_5_s() -> None:
    """Redis down: exit 1 with one clear line, quickly, and no password in it."""
    started = time.monotonic()
    result = run_command(*CHECK, env={"REDIS_URL": f"redis://:pa55word@127.0.0.1:{free_port()}/0"})
    took = time.monotonic() - started
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("unhealthy: cannot reach Redis at redis://:***@127.0.0.1")
    assert "pa55word" not in result.stdout + result.stderr
    assert took < 5


def test_probe_with_bad_module_or_settings_exits_1() -> None:
    """A probe exits 0 or 1 only (Docker reserves 2): an unusable module or setting is a 1 with the reason."""
    broken = run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.empty_tasks", "--check")
    assert broken.returncode == 1
    assert "unhealthy: worker module 'tests.apps.empty_tasks' must export tasks" in broken.stdout
    bad_setting = run_command(*CHECK, env={"SCALR_QUEUE_HEALTH_INTERVAL": "soon"})
    assert bad_setting.returncode == 1
    assert "SCALR_QUEUE_HEALTH_INTERVAL='soon' is not valid" in bad_setting.stdout


def test_console_script_check_matches(spawn: Callable[..., WorkerProcess]) -> None:
    """`scalr-queue check MODULE` is the same probe."""
    script = str(Path(sys.executable).parent / "scalr-queue")
    assert run_command(script, "check", "tests.apps.basic").returncode == 1
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    result = run_command(script, "check", "tests.apps.basic")
    assert result.returncode == 0, result.stdout


async def test_probe_counts_this_host_unless_any_host(redis, queue: str) -> None:  # type: ignore[no-untyped-def]
    """A container's probe asks for its own worker; --any-host accepts a live worker anywhere."""
    record = {
        "worker_id": "other-host:1:abc",
        "host": "other-host",
        "pid": 1,
        "queue": queue,
        "beat_at": time.time(),
    }
    await redis.set("arq:worker:other-host:1:abc", json.dumps(record), px=15_000)
    await redis.zadd(f"arq:workers:{queue}", {"other-host:1:abc": time.time() * 1000 + 15_000})
    here = run_command(*CHECK)
    assert here.returncode == 1
    assert "(1 live elsewhere)" in here.stdout
    anywhere = run_command(*CHECK, "--any-host")
    assert anywhere.returncode == 0, anywhere.stdout


async def test_arq_health_key_expires_quickly(spawn: Callable[..., WorkerProcess], redis, queue: str) -> None:  # type: ignore[no-untyped-def]
    """arq's shared key is refreshed every 30 s with a matching expiry, not once an hour."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    await asyncio.sleep(0.6)
    ttl_ms = await redis.pttl(f"arq:queue:{queue}:health-check")
    assert 0 < ttl_ms <= 31_000  # refreshed every 30 s, not once an hour
    member_deadline = await redis.zscore(f"arq:workers:{queue}", worker.wait_started()["worker_id"])
    assert member_deadline is not None
    assert member_deadline - time.time() * 1000 <= 15_000
