"""progress(ctx, fraction, message) from a task, read back by Job.progress(), `scalr-queue job` and the
dashboard's job page; a bad fraction is our error; a bad record in Redis reads as no progress."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from scalr_queue import Progress, ProgressError, enqueue, keys, progress
from scalr_queue.dashboard import create_app
from tests.conftest import WorkerProcess, run_command

CLI = str(Path(sys.executable).parent / "scalr-queue")


async def test_a_tasks_progress_is_read_by_the_job_the_cli_and_the_dashboard(
    spawn: Callable[..., WorkerProcess], redis: Redis
) -> None:
    """A real worker runs a task that reports progress; its last report is what every reader shows, and the
    key expires (it is kept like the result)."""
    spawn("tests.apps.traced").wait_started()
    job = await enqueue("steps", n=4)
    assert job is not None
    assert await job.result(timeout=20) == 4
    found = await job.progress()
    assert isinstance(found, Progress)
    assert found.fraction == 1.0
    assert found.message == "step 4 of 4"
    assert await redis.pttl(keys.progress_key(job.job_id)) > 0

    shown = run_command(CLI, "job", job.job_id)
    assert shown.returncode == 0, shown.stderr
    assert "progress:    100% step 4 of 4" in shown.stdout
    as_json = json.loads(run_command(CLI, "job", job.job_id, "--json").stdout)
    assert as_json["progress"]["fraction"] == 1.0
    assert as_json["progress"]["message"] == "step 4 of 4"

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app()), base_url="http://testserver"
    ) as web:
        page = await web.get(f"/jobs/{job.job_id}")
    assert page.status_code == 200
    assert '<progress max="1" value="1.0">' in page.text
    assert "step 4 of 4" in page.text


async def test_a_job_without_progress_reads_none() -> None:
    """No report (or no such job): None, not an error."""
    job = await enqueue("add", x=1, y=2)
    assert job is not None
    assert await job.progress() is None


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan, math.inf, True, "0.5", None])
async def test_a_fraction_outside_0_to_1_is_our_error(fraction: object) -> None:
    """ProgressError (a ValueError) names what is wrong, before anything is written."""
    with pytest.raises(ProgressError, match="fraction from 0 to 1"):
        await progress({"job_id": "j", "redis": None}, fraction)  # type: ignore[arg-type]


async def test_progress_needs_a_jobs_ctx() -> None:
    """A ctx that names no job is refused: the report would have nowhere to go."""
    with pytest.raises(ProgressError, match="ctx"):
        await progress({}, 0.5)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"fraction": "half", "at": 1}',
        b'{"fraction": 0.5}',
        b'{"fraction": 0.5, "at": -4}',
        b'{"fraction": true, "at": 1}',
    ],
)
async def test_a_malformed_progress_record_reads_as_none(redis: Redis, raw: bytes) -> None:
    """Whatever is in arq:progress:<id> (it came from Redis), readers show no progress and do not fail."""
    job = await enqueue("add", x=1, y=2)
    assert job is not None
    await redis.set(keys.progress_key(job.job_id), raw)
    assert await job.progress() is None
    shown = run_command(CLI, "job", job.job_id)
    assert shown.returncode == 0, shown.stderr
    assert "progress:" not in shown.stdout
