"""The template app's stack as local processes: a throwaway Redis, the worker and the backend, as compose runs
them. Shared by `make demo` (scripts/demo.py) and `make dev` (scripts/dev.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "template-app" / "backend"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from scalr_queue.testing import RedisServer, free_port  # noqa: E402

_print_lock = threading.Lock()


def say(source: str, text: str) -> None:
    with _print_lock:
        print(f"{source:>7} │ {text}", flush=True)


class LocalStack:
    """Redis, `python -m scalr_queue.worker src.worker` and `uvicorn src.main:app`, each line of output prefixed."""

    def __init__(self, *, dev: bool = False, **env: str) -> None:
        self.dev = dev
        self.redis = RedisServer()
        self.port = free_port()
        self.extra_env = env
        self.processes: dict[str, subprocess.Popen[str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "PYTHONPATH": str(BACKEND),
            "SCALR_QUEUE_TASKS": "src.worker",
            "SCALR_QUEUE_LOG_FORMAT": "console",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def __enter__(self) -> LocalStack:
        self.redis.start()
        say("stack", f"redis-server {self.redis.binary} on {self.redis.url}")
        worker = [sys.executable, "-m", "scalr_queue.worker", "src.worker"]
        backend = [str(BIN / "uvicorn"), "src.main:app", "--port", str(self.port)]
        if self.dev:
            worker += ["--watch", str(BACKEND / "src")]
            backend += ["--reload", "--reload-dir", str(BACKEND / "src")]
        else:
            backend.append("--no-access-log")
        self.start("worker", worker)
        self.start("backend", backend)
        return self

    def start(self, name: str, command: list[str]) -> None:
        shown = " ".join([Path(command[0]).name, *command[1:]])
        say("stack", f"starting the {name}: {shown}")
        process = subprocess.Popen(
            command, cwd=BACKEND, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.processes[name] = process
        threading.Thread(target=self._follow, args=(name, process), daemon=True).start()

    @staticmethod
    def _follow(name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            say(name, line.rstrip())

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        """A command (say `scalr-queue failed list`) with the stack's environment."""
        return subprocess.run(
            [str(BIN / command[0]), *command[1:]], env=self.env(), capture_output=True, text=True
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        say("stack", "stopping the backend and the worker (SIGTERM), then Redis")
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.close()
