"""The docs are true: every `sh` recipe and every `python` block in docs/ runs against a real Redis and worker;
tables match the code. How python blocks run (shared namespace per page, files under src/, `# not run:`) is
described in tests/docs_python.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import yaml
from arq import create_pool
from arq.connections import RedisSettings

import scalr_queue
from scalr_queue import enqueue, keys
from scalr_queue.cli import cli
from scalr_queue.config import Settings, env_var, reset_settings
from scalr_queue.testing import RedisServer
from tests.conftest import ROOT, WorkerProcess
from tests.docs_python import NOT_RUN, page_files, python_blocks

DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCKER_EXEC = re.compile(r"^docker (exec|compose exec) (?:-\w+ )*(\S+) ")
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "template-app" / "docker-compose.yml")
REDIS_GET = re.compile(r"redis-cli -p \d+ get ")


def sh_recipes(page: Path) -> list[str]:
    """Every command line in the page's ```sh blocks, in order."""
    found = []
    for lang, body in FENCE.findall(page.read_text()):
        if lang == "sh":
            found += [
                line.strip()
                for line in body.splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
    return found


PAGES = sorted(DOCS.glob("*.md"))


def without_docker_exec(recipe: str) -> str:
    """The command a `docker exec NAME` / `docker compose exec SERVICE` recipe runs in the container, once NAME is
    checked: a container_name, or a service, that docker-compose.yml or template-app/docker-compose.yml defines."""
    match = DOCKER_EXEC.match(recipe)
    if match is None:
        return recipe
    how, name = match.groups()
    services = {
        service: config
        for path in COMPOSE_FILES
        for service, config in yaml.safe_load(path.read_text())["services"].items()
    }
    if how == "exec":
        containers = {config.get("container_name") for config in services.values()}
        assert name in containers, (
            f"{recipe}: no compose file names a container {name!r} ({sorted(containers)})"
        )
    else:
        assert name in services, f"{recipe}: no compose file defines a service {name!r} ({sorted(services)})"
    return recipe[match.end() :]


def test_there_are_recipes() -> None:
    """The recipe test cannot pass by finding nothing."""
    assert sum(len(sh_recipes(page)) for page in PAGES) >= 40


async def prepare(server: RedisServer) -> dict[str, str]:
    """A queued job, a finished one, a failed one and a plain arq one, for the recipes to look at."""
    failing = await enqueue("boom", message="a recipe needs a failure")
    finished = await enqueue("add", x=1, y=2)
    queued = await enqueue("add", x=3, y=4, _defer_by=600)
    arq_redis = await create_pool(RedisSettings.from_dsn(server.url))  # plain arq: pickled, on arq:queue
    assert await arq_redis.enqueue_job("add", 20, 22) is not None  # for docs/migrating.md
    await arq_redis.aclose()
    assert failing is not None and finished is not None and queued is not None
    assert await finished.result(timeout=10) == 3
    with pytest.raises(scalr_queue.JobFailedError):
        await failing.result(timeout=15)
    return {"FAILED_JOB_ID": failing.job_id, "JOB_ID": queued.job_id, "FINISHED_JOB_ID": finished.job_id}


async def run_recipes(
    page: Path, spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run a page's recipes against a real Redis with a live worker, as a user would paste them."""
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "__init__.py").write_text("")
    shutil.copy(ROOT / "examples" / "demo_tasks.py", app / "src" / "worker.py")
    with RedisServer() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.delenv("SCALR_QUEUE_NAME")  # the recipes use the default queue
        monkeypatch.setenv("SCALR_QUEUE_TASKS", "src.worker")
        monkeypatch.chdir(app)
        reset_settings()
        await scalr_queue.close()
        worker = spawn("src.worker", cwd=app, env={"PYTHONPATH": str(app)})
        started = worker.wait_started()
        variables = {**await prepare(server), "WORKER_ID": started["worker_id"]}
        path = [
            str(Path(sys.executable).parent)
        ]  # `python`, `scalr-queue`: this environment's, as after activate
        if shutil.which("redis-cli") is None:
            path.append(str(Path(server.binary).parent))  # the bundled server ships its redis-cli beside it
        variables["PATH"] = os.pathsep.join([*path, os.environ["PATH"]])
        try:
            for recipe in sh_recipes(page):
                command = without_docker_exec(recipe).replace("redis-cli ", f"redis-cli -p {server.port} ", 1)
                result = subprocess.run(
                    ["bash", "-c", command],
                    cwd=app,
                    env={**os.environ, **variables, "PYTHONPATH": str(app)},
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                where = f"{page.name}: {recipe}\n{result.stdout}{result.stderr}"
                assert result.returncode == 0, where
                assert result.stdout.strip(), where
                assert "ERR" not in result.stdout and "WRONGTYPE" not in result.stdout, where
                if REDIS_GET.search(command):
                    assert isinstance(json.loads(result.stdout), dict), where
        finally:
            await scalr_queue.close()


@pytest.mark.parametrize("page", [p for p in PAGES if sh_recipes(p)], ids=lambda p: p.name)
async def test_every_sh_recipe_runs(
    page: Path, spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recipe exits 0 against a real Redis with a live worker and prints something; `get` prints JSON."""
    await run_recipes(page, spawn, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "broken",
    [
        "redis-cli llen arq:queue:default",  # the old guide's recipe: WRONGTYPE
        "docker exec scalr-redis redis-cli get arq:job:no-such-job",  # prints nothing
        "scalr-queue jobs --queue nope",  # an error
        "docker exec scalr-worker python -m scalr_queue.worker src.worker --check",  # no such container
        "docker compose exec scalr-worker scalr-queue stats",  # no such compose service
    ],
)
async def test_a_broken_recipe_fails_the_test(
    broken: str, spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe runner is not a rubber stamp: each kind of broken recipe makes it fail."""
    page = tmp_path / "broken.md"
    page.write_text(f"```sh\n{broken}\n```\n")
    with pytest.raises(AssertionError):
        await run_recipes(page, spawn, tmp_path, monkeypatch)


def table_rows(page: str, marker: str) -> list[list[str]]:
    """The cells of the first table after ``marker`` on a page."""
    text = (DOCS / page).read_text().split(marker, 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # without the header and its rule


def test_settings_table_matches_the_model() -> None:
    """docs/settings.md lists every setting, with the model's default, and nothing else."""
    documented = {
        row[0].strip("`"): row[1].strip("`") for row in table_rows("settings.md", "<!-- settings-table")
    }
    expected = {}
    for field, info in Settings.model_fields.items():
        default = info.default
        expected[env_var(field)] = (
            "unset" if default is None else f"{default:g}" if isinstance(default, float) else str(default)
        )
    assert documented == expected


def test_redis_key_table_matches_keys_module() -> None:
    """docs/redis-keys.md lists exactly the keys scalr_queue/keys.py builds."""
    documented = {row[0].strip("`") for row in table_rows("redis-keys.md", "# Redis keys")}
    built = {
        "queue_key": keys.queue_key("<name>"),
        "job_key": keys.job_key("<id>"),
        "result_key": keys.result_key("<id>"),
        "in_progress_key": keys.in_progress_key("<id>"),
        "retry_key": keys.retry_key("<id>"),
        "workers_key": keys.workers_key("<name>"),
        "worker_key": keys.worker_key("<worker id>"),
        "arq_health_check_key": keys.arq_health_check_key("<name>"),
        "FAILED_KEY": keys.FAILED_KEY,
        "failed_key": keys.failed_key("<id>"),
        "QUEUES_KEY": keys.QUEUES_KEY,
        "paused_key": keys.paused_key("<name>"),
        "notify_key": keys.notify_key("<name>"),
        "worker_wake_key": keys.worker_wake_key("<worker id>"),
        "ARQ_DEFAULT_QUEUE": keys.ARQ_DEFAULT_QUEUE,
        "ABORT_KEY": keys.ABORT_KEY,
        "TASKS_KEY": keys.TASKS_KEY,
        "cron_tick_key": keys.CRON_PREFIX + "<name>:<tick>",
        "failed_queue_key": keys.failed_queue_key("<name>"),
        "timeline_key": keys.timeline_key("<name>", "<minute>"),
        "completed_key": keys.completed_key("<name>"),
        "rate_key": keys.rate_key("<key>"),
        "lock_key": keys.lock_key("<key>"),
        "lock_waiters_key": keys.lock_waiters_key("<key>"),
        "unique_key": keys.unique_key("<task>", "<unique id>"),
        "released_key": keys.released_key("<id>"),
        "progress_key": keys.progress_key("<id>"),
        "ready_key": keys.ready_key("<name>", "<priority>"),  # type: ignore[arg-type]
        "waiting_key": keys.waiting_key("<id>"),
        "dependents_key": keys.dependents_key("<id>"),
        "DEPENDENCY_FAILED_KEY": keys.DEPENDENCY_FAILED_KEY,
        "ready_levels_key": keys.ready_levels_key("<name>"),
        "batch_key": keys.batch_key("<batch id>"),
        "batch_pending_key": keys.batch_pending_key("<batch id>"),
        "batch_succeeded_key": keys.batch_succeeded_key("<batch id>"),
        "batch_failed_key": keys.batch_failed_key("<batch id>"),
    }
    assert documented == set(built.values())
    public = {
        name
        for name, value in vars(keys).items()
        if not name.startswith("_") and callable(value) and value.__module__ == keys.__name__
    }
    public |= {name for name in vars(keys) if name.isupper() and not name.endswith("PREFIX")}
    not_keys = {"queue_name", "NOTIFY_CAP", "PRIORITIES", "ready_prefix"}
    assert public - not_keys == set(built)  # a new key in keys.py needs a row in the docs


def test_cli_reference_covers_every_command() -> None:
    """docs/cli.md has a section for each command and names each `failed` subcommand."""
    text = (DOCS / "cli.md").read_text()
    headings = " ".join(re.findall(r"^## (.+)$", text, re.MULTILINE))
    for name in cli.commands:
        assert re.search(rf"\b{name}\b", headings), f"no section for `scalr-queue {name}`"
    failed = cli.commands["failed"]
    assert isinstance(failed, click.Group)
    for sub in failed.commands:
        assert f"`{sub}" in text or f"{sub} " in text, f"`failed {sub}` is not described"


PYTHON_RUNNER = ROOT / "tests" / "docs_python.py"
WORKER_FILE = "src/worker.py"


async def run_python_blocks(
    page: Path, spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run a page's python blocks in order in one fresh process, against a real Redis and, when the page
    writes a src/worker.py, a worker serving it."""
    blocks = python_blocks(page)
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "__init__.py").write_text("")
    for name, code in page_files(blocks).items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(code)
    with RedisServer() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.delenv("SCALR_QUEUE_NAME")  # the blocks use the default queue
        monkeypatch.setenv("PYTHONPATH", str(app))
        if (app / WORKER_FILE).exists():
            monkeypatch.setenv("SCALR_QUEUE_TASKS", "src.worker")
            spawn("src.worker", cwd=app).wait_started()
        result = subprocess.run(
            [sys.executable, str(PYTHON_RUNNER), str(page)],
            cwd=app,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, f"{page.name}:\n{result.stdout}{result.stderr}"


def test_there_are_python_blocks_and_few_are_not_run() -> None:
    """The python test cannot pass by finding nothing, and skipping a block stays the rare exception."""
    blocks = [block for page in PAGES for block in python_blocks(page)]
    assert len(blocks) >= 20
    assert sum(block.not_run is not None for block in blocks) <= 2


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
async def test_every_python_block_runs(
    page: Path, spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's python blocks run in order, sharing a namespace, against a real Redis and the page's worker."""
    await run_python_blocks(page, spawn, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "broken",
    [
        'await enqueue("send_invoice_email", invoice_id=7)',  # never imported
        "from scalr_email import send",  # a module that does not exist
        '@router.post("/invoices/{id}/send")\nasync def send(id: int): ...',  # an undefined router
        "def test_it():\n    assert 1 == 2",  # a test that the block defines fails
        'from scalr_queue import enqueue\n\nawait enqueue("no_such_task")',  # unknown to the page's worker
    ],
)
async def test_a_broken_python_block_fails_the_test(
    broken: str, spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The python runner is not a rubber stamp: a block that raises, at any point, fails the page."""
    page = tmp_path / "broken.md"
    worker = (
        "# src/worker.py\nasync def add(ctx, x: int, y: int) -> int:\n    return x + y\n\n\ntasks = [add]\n"
    )
    page.write_text(f"```python\n{worker}```\n\n```python\n{broken}\n```\n")
    with pytest.raises(AssertionError, match="broken.md"):
        await run_python_blocks(page, spawn, tmp_path, monkeypatch)


async def test_blocks_share_a_namespace_await_and_reach_the_pages_worker(
    spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names carry from block to block, top-level await works, and a job reaches the worker of src/worker.py."""
    page = tmp_path / "works.md"
    page.write_text(
        "```python\n# backend/src/worker.py\nasync def add(ctx, x: int, y: int) -> int:\n    return x + y\n```\n"
        "```python\n# src/worker.py\ntasks = [add]\n```\n"
        "```python\nfrom scalr_queue import enqueue\n\njob = await enqueue(add, x=1, y=2)\n```\n"
        f"```python\n{NOT_RUN} shows a failure on purpose\nraise RuntimeError\n```\n"
        "```python\nassert await job.result(timeout=10) == 3\n```\n"
    )
    await run_python_blocks(page, spawn, tmp_path, monkeypatch)


def test_a_not_run_marker_needs_a_reason(tmp_path: Path) -> None:
    """`# not run:` without a reason is refused, so every skipped block says why."""
    page = tmp_path / "bare.md"
    page.write_text(f"```python\n{NOT_RUN}\nraise RuntimeError\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        python_blocks(page)
