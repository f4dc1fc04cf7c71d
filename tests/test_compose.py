"""The template app and both compose files, run without a container engine (the build machines have none).

Each service's own `command` (and its healthcheck's command) runs as a local process, with REDIS_URL pointed at
the test's redis-server; the backend is driven over HTTP and the worker runs the job. What this cannot verify (the
image build, networking between containers, the engine's restart and health policies) is said in docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scalr_queue.testing import RedisServer, find_redis_server, free_port
from tests.conftest import ROOT, WorkerProcess, run_command

sys.path.insert(0, str(ROOT / "scripts"))
from new_app import new_app

SHUTDOWN_GRACE_DEFAULT_S = 25


def activate_worker(compose_file: Path) -> None:
    """The guide's step 1: uncomment the `worker:` block."""
    lines = compose_file.read_text().splitlines()
    out, inside = [], False
    for line in lines:
        if line.strip() == "# worker:":
            inside = True
        if inside and line.startswith("  #"):
            line = "  " + line[4:] if line.startswith("  # ") else "  " + line[3:]
        elif inside and not line.strip():
            inside = False
        out.append(line)
    compose_file.write_text("\n".join(out) + "\n")


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "healthchecks use the exec form"
    return list(test[1:])


class ComposeAsProcesses:
    """Runs compose services' commands as local processes in the image's layout (WORKDIR holds src/)."""

    def __init__(self, compose_file: Path, workdir: Path, redis_url: str, **extra_env: str) -> None:
        self.compose_file = compose_file
        self.config = yaml.safe_load(compose_file.read_text())
        self.workdir = workdir
        self.port = free_port()
        self.redis_url = redis_url
        self.extra_env = extra_env
        self.processes: list[WorkerProcess] = []

    def env(self, name: str) -> dict[str, str]:
        service = self.config["services"][name]
        values: dict[str, str] = {}
        for file in service.get("env_file", []):
            values |= env_file(self.compose_file.parent / file)
        values |= {
            "REDIS_URL": self.redis_url,
            "PYTHONPATH": str(self.workdir),
            "SCALR_QUEUE_LOG_FORMAT": "json",
            **self.extra_env,
        }
        return {**os.environ, **values}

    def localize(self, args: list[str]) -> list[str]:
        """The container's view, on this machine: our python, and the published port on a free one."""
        out = [
            sys.executable if a == "python" else str(Path(sys.executable).parent / a) if a == "uvicorn" else a
            for a in args
        ]
        return [a.replace("8000", str(self.port)) for a in out]

    def start(self, name: str) -> WorkerProcess:
        command = self.localize(self.config["services"][name]["command"])
        process = WorkerProcess(command, self.env(name), cwd=self.workdir)
        self.processes.append(process)
        return process

    def healthcheck(self, name: str) -> subprocess.CompletedProcess[str]:
        command = self.localize(healthcheck_command(self.config["services"][name]))
        return subprocess.run(
            command, cwd=self.workdir, env=self.env(name), capture_output=True, text=True, timeout=30
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


async def wait_ready(url: str, *, workers: int = 1, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                response = await http.get(f"{url}/health/ready")
                if response.status_code == 200 and response.json()["workers"] >= workers:
                    return dict(response.json())
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the backend never became ready"
            await asyncio.sleep(0.1)


async def send_and_follow(url: str, invoice_id: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        sent = await http.post(f"{url}/invoices/{invoice_id}/send")
        assert sent.status_code == 200, sent.text
        job_id = sent.json()["job_id"]
        deadline = time.monotonic() + 30
        while True:
            body = (await http.get(f"{url}/jobs/{job_id}")).json()
            if body["status"] in ("complete", "failed"):
                return dict(body)
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)


def vendored_path(app: Path) -> dict[str, str]:
    """The environment that makes a process import scalr_queue from the app's vendor/ copy, as its image would."""
    return {"PYTHONPATH": os.pathsep.join([str(app / "backend"), str(app / "vendor" / "scalr_queue")])}


async def test_new_app_from_template_runs_as_processes(tmp_path: Path, redis_server: RedisServer) -> None:
    """A new app from the template, worker activated as the guide says, on its vendored scalr_queue: backend and
    worker run, HTTP in, job done, both healthchecks pass."""
    app = new_app("acme", tmp_path / "acme")
    compose_file = app / "docker-compose.yml"
    assert "container_name: acme-backend" in compose_file.read_text()
    assert "worker" not in yaml.safe_load(compose_file.read_text())["services"]  # shipped commented out
    activate_worker(compose_file)
    stack = ComposeAsProcesses(compose_file, app / "backend", redis_server.url, **vendored_path(app))
    assert stack.config["services"]["worker"]["container_name"] == "acme-worker"
    assert stack.config["services"]["worker"]["image"] == "acme:latest"
    imported = subprocess.run(  # in the image's WORKDIR, as the services run
        [sys.executable, "-c", "import scalr_queue; print(scalr_queue.__file__)"],
        cwd=app / "backend",
        env={**os.environ, **vendored_path(app)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.startswith(str(app / "vendor" / "scalr_queue" / "scalr_queue")), imported
    try:
        worker = stack.start("worker")
        worker.wait_started()
        stack.start("backend")
        ready = await wait_ready(stack.url)
        assert ready["status"] == "ok"
        done = await send_and_follow(stack.url, 7)
        assert done == {
            "job_id": done["job_id"],
            "status": "complete",
            "result": {"invoice_id": 7, "sent_to": "customer-7@example.com"},
        }
        assert stack.healthcheck("worker").returncode == 0
        assert stack.healthcheck("backend").returncode == 0
        worker.signal(15)
        assert worker.wait() == 0
        assert stack.healthcheck("worker").returncode == 1  # no live worker: unhealthy
    finally:
        stack.stop()


async def test_top_level_compose_runs_all_three_services_as_processes(tmp_path: Path) -> None:
    """scalr-redis (its own command, AOF and noeviction), backend and worker from docker-compose.yml, as processes."""
    config = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis_command = config["services"]["scalr-redis"]["command"]
    assert redis_command[0] == "redis-server"
    port = free_port()
    server = subprocess.Popen(
        [
            find_redis_server(),
            *redis_command[1:],
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    stack = ComposeAsProcesses(  # two quick tries, so the failing invoice fails within the test
        ROOT / "docker-compose.yml",
        ROOT / "template-app" / "backend",
        f"redis://127.0.0.1:{port}/0",
        SCALR_QUEUE_MAX_TRIES="2",
        SCALR_QUEUE_BACKOFF="0.2",
    )
    try:
        ping = healthcheck_command(config["services"]["scalr-redis"])
        deadline = time.monotonic() + 10
        while run_command(ping[0], "-p", str(port), *ping[1:]).stdout.strip() != "PONG":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        settings = run_command(
            "redis-cli", "-p", str(port), "config", "get", "maxmemory-policy"
        ).stdout.split()
        assert settings == ["maxmemory-policy", "noeviction"]
        assert run_command("redis-cli", "-p", str(port), "config", "get", "appendonly").stdout.split() == [
            "appendonly",
            "yes",
        ]
        worker = stack.start("worker")
        started = worker.wait_started()
        assert not [e for e in worker.events if e.get("event") == "redis_may_evict_jobs"]
        assert started["redis_url"] == f"redis://127.0.0.1:{port}/0"
        stack.start("backend")
        await wait_ready(stack.url)
        failing = await send_and_follow(stack.url, 13)  # the template's demo failure, retried and then failed
        assert failing["status"] == "failed"
        assert failing["error"] == {
            "type": "ConnectionError",
            "message": "the mail server refused invoice 13's message",
        }
        assert stack.healthcheck("worker").returncode == 0
        assert stack.healthcheck("backend").returncode == 0
    finally:
        stack.stop()
        server.terminate()
        server.wait(timeout=10)


def test_compose_files_agree_and_leave_the_worker_time_to_finish() -> None:
    """Template and top-level compose run the same commands; the worker's stop_grace_period exceeds its grace."""
    top = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    template_file = ROOT / "template-app" / "docker-compose.yml"
    text = template_file.read_text()
    assert "\n  # worker:\n" in text
    activated = yaml.safe_load(re.sub(r"(?m)^  # ?", "  ", text.split("\nnetworks:")[0]) + "\n")["services"]
    for name in ("backend", "worker"):
        assert top[name]["command"] == activated[name]["command"]
        assert top[name]["healthcheck"]["test"] == activated[name]["healthcheck"]["test"]
    assert activated["worker"]["command"] == ["python", "-m", "scalr_queue.worker", "src.worker"]
    assert "--check" in activated["worker"]["healthcheck"]["test"]
    for service in (top["worker"], activated["worker"]):
        assert int(service["stop_grace_period"].rstrip("s")) > SHUTDOWN_GRACE_DEFAULT_S
    assert env_file(ROOT / "template-app" / ".env.shared")["REDIS_URL"] == "redis://scalr-redis:6379/0"
    assert top["scalr-redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert all(service.get("networks") == ["scalr"] for service in top.values())


def test_dockerfile_is_one_slim_non_root_image_with_exec_form_command() -> None:
    """Slim base, no compilers in the final stage, a non-root user, unbuffered output, exec-form CMD."""
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"(?m)^FROM ", text)[1:]
    final = stages[-1]
    assert final.startswith("python:3.11-slim")
    assert all(s.startswith("python:3.11-slim") for s in stages)
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", final)
    assert re.search(r"(?m)^USER app$", final)
    assert "PYTHONUNBUFFERED=1" in final
    cmd = re.search(r"(?m)^CMD (.+)$", final)
    assert cmd is not None
    assert cmd.group(1).startswith("[")  # exec form: SIGTERM reaches Python, not a shell
    assert "COPY --chown=app:app template-app/backend/src ./src" in final


async def test_two_hundred_enqueues_through_the_backend_use_few_connections(
    redis_server: RedisServer, redis, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """200 concurrent POSTs all succeed and the backend opens a bounded number of Redis connections."""
    stack = ComposeAsProcesses(
        ROOT / "docker-compose.yml", ROOT / "template-app" / "backend", redis_server.url
    )
    try:
        stack.start("backend")
        await wait_ready(stack.url, workers=0)
        before = (await redis.info("stats"))["total_connections_received"]
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as http:
            responses = await asyncio.gather(
                *(http.post(f"{stack.url}/invoices/{i}/send") for i in range(200))
            )
        assert [r.status_code for r in responses] == [200] * 200
        assert len({r.json()["job_id"] for r in responses}) == 200
        opened = (await redis.info("stats"))["total_connections_received"] - before
        print(f"200 enqueues through the backend opened {opened} Redis connection(s)")
        assert opened <= 50  # the pool grows to the concurrency in flight, never one per request
    finally:
        stack.stop()


async def test_redis_down_answers_503_within_5_s() -> None:
    """With Redis unreachable the enqueue endpoint answers 503 with Retry-After, fast; readiness says 503 too."""
    stack = ComposeAsProcesses(
        ROOT / "docker-compose.yml",
        ROOT / "template-app" / "backend",
        f"redis://:pw@127.0.0.1:{free_port()}/0",
    )
    try:
        stack.start("backend")
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    ready = await http.get(f"{stack.url}/health/ready")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert ready.status_code == 503
            started = time.monotonic()
            response = await http.post(f"{stack.url}/invoices/1/send")
            took = time.monotonic() - started
        print(f"503 after {took:.2f} s")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "cannot reach Redis" in response.json()["detail"]
        assert "pw@" not in response.text
        assert took < 5
    finally:
        stack.stop()


def dockerfile_copies(text: str) -> list[tuple[list[str], str]]:
    """Each COPY from the build context (not --from a stage): its sources and its destination."""
    copies = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
    return copies


def test_new_app_is_self_contained_and_builds_its_own_code(tmp_path: Path) -> None:
    """The new app builds from its own directory with its own Dockerfile: every COPY source is in the app, the
    image holds the app's backend/src and the vendored scalr_queue (this repository's), under the app's own tag."""
    app = new_app("acme", tmp_path / "acme")
    backend = yaml.safe_load((app / "docker-compose.yml").read_text())["services"]["backend"]
    context = (app / backend["build"]["context"]).resolve()
    assert context == app.resolve()
    assert backend["image"] == "acme:latest"  # not a tag another app's build would overwrite
    dockerfile = (context / backend["build"]["dockerfile"]).read_text()
    assert "template-app" not in dockerfile
    copies = dockerfile_copies(dockerfile)
    assert copies  # the check below cannot pass by finding nothing
    for sources, _ in copies:
        for source in sources:
            assert (context / source).exists(), f"COPY {source}: not in the app"
    assert (["backend/src"], "./src") in copies  # the image's code is the app's own
    assert "acme" in (app / "backend" / "src" / "main.py").read_text()
    ours, theirs = (ROOT / "Dockerfile").read_text(), dockerfile  # the same image apart from the paths
    assert (
        re.split(r"(?m)^FROM ", ours)[-1].replace("template-app/", "") == re.split(r"(?m)^FROM ", theirs)[-1]
    )
    vendored = app / "vendor" / "scalr_queue"
    assert (vendored / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    package = {p.relative_to(ROOT): p.read_bytes() for p in (ROOT / "scalr_queue").rglob("*") if p.is_file()}
    copied = {
        p.relative_to(vendored): p.read_bytes() for p in (vendored / "scalr_queue").rglob("*") if p.is_file()
    }
    assert copied == {path: data for path, data in package.items() if "__pycache__" not in path.parts}
    assert (["vendor/scalr_queue/"], "./") in copies  # the build stage makes its wheel from the vendored copy


def test_new_app_refuses_bad_names(tmp_path: Path) -> None:
    """A name that cannot be a container name is refused."""
    with pytest.raises(SystemExit, match="use lowercase letters"):
        new_app("Bad Name", tmp_path / "x")
