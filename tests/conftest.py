"""Fixture chain: one throwaway redis-server per test session -> settings pointing at it -> a queue per test.

Tests never touch the machine's Redis on 6379: the server runs on a free loopback port and each test gets
its own queue name (``SCALR_QUEUE_NAME``), so nothing needs flushing between tests.
"""

from __future__ import annotations

import gc
import json
import os
import queue as queue_module
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

import scalr_queue
from scalr_queue.testing import RedisServer, reset

ROOT = Path(__file__).resolve().parent.parent
# arq's fixtures for its own suite (tests/test_arq_suite.py copies them beside arq's tests): not ours to load.
collect_ignore = ["arq_suite"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The arq suite's counts (tests/test_arq_suite.py records them), in the summary of every run."""
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, line in getattr(report, "user_properties", []):
                if name == "arq_suite":
                    terminalreporter.write_line(str(line))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def queue() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, queue: str) -> Iterator[None]:
    """Each test starts from a clean environment pointing at the session's Redis and its own queue."""
    for name in list(os.environ):
        if name.startswith("SCALR_QUEUE_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SCALR_QUEUE_NAME", queue)
    monkeypatch.chdir(ROOT)
    reset()
    yield
    reset()


@pytest.fixture(autouse=True)
async def _close_default_client() -> AsyncIterator[None]:
    yield
    await scalr_queue.close()
    gc.collect()  # an unclosed connection then warns in the test that leaked it, not in a later one


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[AsyncRedis]:
    client = AsyncRedis.from_url(redis_server.url)
    yield client
    await client.aclose()


class WorkerProcess:
    """A worker (or any command) as a real subprocess, its JSON log lines collected as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue_module.Queue[str | None] = queue_module.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    @property
    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool] | str, timeout: float = 20
    ) -> dict[str, Any]:
        """The first log event matching ``predicate`` (an event name or a function), waiting for it."""
        match = (lambda e: e.get("event") == predicate) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if match(event):
                    return event
            if self.proc.poll() is not None and self._reader is not None and not self._reader.is_alive():
                raise AssertionError(f"process exited ({self.proc.returncode}) first:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log event within {timeout} s:\n{self.output}")
            time.sleep(0.02)

    def wait_started(self, timeout: float = 20) -> dict[str, Any]:
        return self.wait_for("worker_started", timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``python -m <module> args...`` with the test's environment and JSON logs; all stopped at the end."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, module: str = "scalr_queue.worker", cwd: Path = ROOT
    ) -> WorkerProcess:
        full_env = {**os.environ, "SCALR_QUEUE_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **(env or {})}
        process = WorkerProcess([sys.executable, "-m", module, *args], full_env, cwd)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def run_command(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with the test's environment."""
    return subprocess.run(
        list(args),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
