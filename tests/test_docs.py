"""The docs are true: every `sh` recipe in docs/ runs against a real Redis and worker; tables match the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import scalr_queue
from scalr_queue import enqueue
from scalr_queue.config import Settings, env_var, reset_settings
from scalr_queue.testing import RedisServer
from tests.conftest import ROOT, WorkerProcess

DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCKER_EXEC = re.compile(r"^docker exec (?:-\w+ )*\S+ ")


def sh_recipes() -> list[tuple[str, str]]:
    """(page, command) for every command line in a ```sh block under docs/."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for lang, body in FENCE.findall(page.read_text()):
            if lang != "sh":
                continue
            for line in body.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    found.append((page.name, line))
    return found


def test_there_are_recipes() -> None:
    """The recipe test cannot pass by finding nothing."""
    assert len(sh_recipes()) >= 7


async def test_every_sh_recipe_runs(
    spawn: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recipe exits 0 against a real Redis with a live worker; `redis-cli get` recipes print JSON."""
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
        failing = await enqueue("boom", message="a recipe needs a failure")
        finished = await enqueue("add", x=1, y=2)
        queued = await enqueue("add", x=3, y=4, _defer_by=600)
        assert finished is not None and queued is not None
        assert await finished.result(timeout=10) == 3
        assert failing is not None
        with pytest.raises(scalr_queue.JobFailedError):
            await failing.result(timeout=15)
        variables = {
            "FAILED_JOB_ID": failing.job_id,
            "JOB_ID": queued.job_id,
            "FINISHED_JOB_ID": finished.job_id,
            "WORKER_ID": started["worker_id"],
        }
        path = [
            str(Path(sys.executable).parent)
        ]  # `python` is this environment's, as after `source .venv/bin/activate`
        if shutil.which("redis-cli") is None:
            path.append(str(Path(server.binary).parent))  # the bundled server ships its redis-cli beside it
        variables["PATH"] = os.pathsep.join([*path, os.environ["PATH"]])
        for page, recipe in sh_recipes():
            command = DOCKER_EXEC.sub("", recipe).replace("redis-cli ", f"redis-cli -p {server.port} ", 1)
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=app,
                env={**os.environ, **variables, "PYTHONPATH": str(app)},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, f"{page}: {recipe}\n{result.stdout}{result.stderr}"
            assert result.stdout.strip(), f"{page}: {recipe} printed nothing"
            assert "ERR" not in result.stdout and "WRONGTYPE" not in result.stdout, (
                f"{page}: {recipe}\n{result.stdout}"
            )
            if " get arq:" in command:
                assert isinstance(json.loads(result.stdout), dict), (
                    f"{page}: {recipe} did not print a JSON object"
                )
        await scalr_queue.close()


def test_settings_table_matches_the_model() -> None:
    """docs/core.md lists every setting, with the model's default, and nothing else."""
    text = (DOCS / "core.md").read_text()
    table = text.split("<!-- settings-table")[1].split("\n\n")[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", table, re.MULTILINE)
    documented = {name: default.strip().strip("`") for name, default in rows}
    expected = {}
    for field, info in Settings.model_fields.items():
        default = info.default
        shown = "unset" if default is None else f"{default:g}" if isinstance(default, float) else str(default)
        expected[env_var(field)] = shown
    assert documented == expected
