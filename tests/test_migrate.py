"""`scalr-queue migrate`: plain arq's pickled jobs on `arq:queue` moved into our queue, run by our worker.

Each test has a redis-server of its own, since `arq:queue` is one key shared by every plain arq app.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis

from scalr_queue import Job, JobStatus, enqueue
from scalr_queue.migrate import migrate, pickled_task
from scalr_queue.testing import RedisServer, reset
from tests.apps.basic import Colour, Invoice
from tests.conftest import ROOT, WorkerProcess, run_command

SCALR_QUEUE = str(Path(sys.executable).parent / "scalr-queue")


class Marker:
    """Unpickling it creates a file (the classic pickle attack) and yields something that is not JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"__import__('pathlib').Path({str(self.path)!r}).touch() or object()",))


@pytest.fixture
async def own_redis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[RedisServer, Redis]]:
    """A redis-server for this test alone; REDIS_URL points at it."""
    with RedisServer() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        reset()
        client = Redis.from_url(server.url)
        try:
            yield server, client
        finally:
            await client.aclose()


@pytest.fixture
async def arq_pool(own_redis: tuple[RedisServer, Redis]) -> AsyncIterator[ArqRedis]:
    """arq's own producer, with its default (pickle) serializer and queue (`arq:queue`)."""
    pool = await create_pool(RedisSettings.from_dsn(own_redis[0].url))
    yield pool
    await pool.aclose()


def run_migrate(*args: str) -> str:
    """`scalr-queue migrate ARGS` as an operator runs it (exit 0 expected); its output."""
    done = run_command(SCALR_QUEUE, "migrate", *args, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def snapshot(redis: Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's value (DUMP) and whether it expires."""
    return {key: (await redis.dump(key), await redis.pttl(key) > 0) async for key in redis.scan_iter()}


async def test_pickled_arq_jobs_move_with_unpickle_and_our_worker_runs_them(
    own_redis: tuple[RedisServer, Redis],
    arq_pool: ArqRedis,
    queue: str,
    spawn: Callable[..., WorkerProcess],
) -> None:
    """Jobs from arq's enqueue_job keep ids, run-at times, tries and expiry; typed and positional arguments bind."""
    _, redis = own_redis
    when = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    invoice = Invoice(id=7, total=Decimal("10.10"), issued=when.date())
    positional = await arq_pool.enqueue_job("add", 1, 2)
    keyword = await arq_pool.enqueue_job("add", x=2, y=3)
    typed = await arq_pool.enqueue_job(
        "describe",
        when=when,
        day=when.date(),
        ident=UUID(int=7),
        amount=Decimal("10.10"),
        colour=Colour.blue,
        invoice=invoice,
        tags={"a", "b"},
    )
    tried = await arq_pool.enqueue_job("flaky", fail_times=0)
    later = await arq_pool.enqueue_job("add", 5, 5, _defer_by=3600)
    jobs = [positional, keyword, typed, tried, later]
    assert all(job is not None for job in jobs)
    ids = [job.job_id for job in jobs if job is not None]
    await redis.set(f"arq:retry:{tried.job_id}", 2)  # type: ignore[union-attr]  # as if arq had tried it twice
    scores = {job_id: await redis.zscore("arq:queue", job_id) for job_id in ids}
    ttl_before = await redis.pttl(f"arq:job:{later.job_id}")  # type: ignore[union-attr]
    assert all(raw.startswith(b"\x80") for raw in await redis.mget([f"arq:job:{job_id}" for job_id in ids]))

    out = run_migrate("arq:queue", "--to", queue, "--unpickle")

    assert (
        f"moved 5 job(s) from arq:queue to arq:queue:{queue} (0 JSON as is, 5 re-encoded from pickle)" in out
    )
    assert "left nothing on arq:queue" in out
    assert await redis.exists("arq:queue") == 0
    assert {job_id: await redis.zscore(f"arq:queue:{queue}", job_id) for job_id in ids} == scores
    assert 0 < await redis.pttl(f"arq:job:{later.job_id}") <= ttl_before  # type: ignore[union-attr]
    assert (await redis.get(f"arq:job:{positional.job_id}") or b"").startswith(b"{")  # type: ignore[union-attr]
    worker = spawn("tests.apps.basic", "--queue", queue)
    worker.wait_started()
    assert await Job(ids[0], queue).result(timeout=20) == 3
    assert await Job(ids[1], queue).result(timeout=20) == 5
    described = await Job(ids[2], queue).result(timeout=20)
    assert described["types"] == ["datetime", "date", "UUID", "Decimal", "Colour", "Invoice", "set"]
    assert described["when"] == when.isoformat()
    assert await Job(ids[3], queue).result(timeout=20) == 3  # the third try: arq's two were kept
    assert await Job(ids[4], queue).status() is JobStatus.deferred


async def test_without_unpickle_no_pickle_is_loaded(
    own_redis: tuple[RedisServer, Redis], arq_pool: ArqRedis, queue: str, tmp_path: Path
) -> None:
    """A pickle that would create a file is never loaded without --unpickle; with it, it runs and stays (not JSON)."""
    _, redis = own_redis
    marker = tmp_path / "unpickled"
    job = await arq_pool.enqueue_job("add", x=Marker(marker), y=1)
    assert job is not None
    before = await redis.get(f"arq:job:{job.job_id}")

    for flags in ([], ["--dry-run"]):
        out = run_migrate("arq:queue", "--to", queue, *flags)
        assert "0 job(s)" in out and "pickled: --unpickle re-encodes it as JSON" in out, out
        assert job.job_id in out and "add" in out  # the task name, read without loading the pickle
    assert not marker.exists()
    assert await redis.get(f"arq:job:{job.job_id}") == before
    assert await redis.zscore("arq:queue", job.job_id) is not None

    out = run_migrate("arq:queue", "--to", queue, "--unpickle")
    assert marker.exists()  # the test's pickle does run code when loaded
    assert "pickled, not movable: argument 'x' of task 'add' is not JSON-able (object)" in out
    assert await redis.get(f"arq:job:{job.job_id}") == before
    assert await redis.exists(f"arq:queue:{queue}") == 0


async def test_a_dry_run_changes_nothing(
    own_redis: tuple[RedisServer, Redis], arq_pool: ArqRedis, queue: str
) -> None:
    """--dry-run (with or without --unpickle) says what would move and leaves every key as it was."""
    _, redis = own_redis
    await arq_pool.enqueue_job("add", 1, 2)
    await arq_pool.enqueue_job("add", 3, 4, _defer_by=60)
    await enqueue("add", x=5, y=6, _queue_name="arq:queue")
    before = await snapshot(redis)

    plain = run_migrate("arq:queue", "--to", queue, "--dry-run")
    unpickling = run_migrate("arq:queue", "--to", queue, "--dry-run", "--unpickle")

    assert "would move 1 job(s) from arq:queue" in plain and "would leave 2 job(s)" in plain
    assert "would move 3 job(s) from arq:queue to arq:queue:" in unpickling
    assert "(1 JSON as is, 2 re-encoded from pickle)" in unpickling
    assert await snapshot(redis) == before


async def test_json_jobs_move_as_they_are_running_ones_stay_and_a_second_run_moves_nothing(
    own_redis: tuple[RedisServer, Redis], queue: str
) -> None:
    """Our JSON jobs move byte for byte; a job under a lease stays; running migrate again changes nothing."""
    _, redis = own_redis
    moving = await enqueue("add", x=1, y=2, _queue_name="arq:queue")
    running = await enqueue("add", x=3, y=4, _queue_name="arq:queue")
    assert moving is not None and running is not None
    payload = await redis.get(f"arq:job:{moving.job_id}")
    await redis.set(f"arq:in-progress:{running.job_id}", "some-worker", px=60_000)
    await redis.set("arq:job:garbage", b"not a job")
    await redis.zadd("arq:queue", {"garbage": 1, "expired": 1})

    first = run_migrate("arq:queue", "--to", queue)
    after_first = await snapshot(redis)
    second = run_migrate("arq:queue", "--to", queue)

    assert "moved 1 job(s) from arq:queue to" in first and "(1 JSON as is, 0 re-encoded" in first
    assert "left 3 job(s) on arq:queue" in first
    assert f"{running.job_id}  add" in first and "running: its worker holds it" in first
    assert "not a job scalr_queue can run: the job is not JSON" in first
    assert "its data is gone (expired)" in first
    assert await redis.get(f"arq:job:{moving.job_id}") == payload
    assert await redis.zscore(f"arq:queue:{queue}", moving.job_id) is not None
    assert await redis.sismember("arq:queues", queue)
    assert "moved 0 job(s)" in second and "left 3 job(s)" in second
    assert await snapshot(redis) == after_first


async def test_migrating_under_running_workers_loses_no_job(
    own_redis: tuple[RedisServer, Redis],
    arq_pool: ArqRedis,
    queue: str,
    spawn: Callable[..., WorkerProcess],
) -> None:
    """With plain arq's worker still serving arq:queue, every job ends once, on one side, and none fails."""
    _, redis = own_redis
    jobs = [await arq_pool.enqueue_job("add", n, 1) for n in range(600)]
    ids = [job.job_id for job in jobs if job is not None]
    arq_worker = spawn("tests.apps.plain_arq.WorkerSettings", module="arq", env={"PYTHONPATH": str(ROOT)})
    ours = spawn("tests.apps.basic", "--queue", queue)
    ours.wait_started()
    deadline = time.monotonic() + 30
    while not await redis.exists(*[f"arq:result:{job_id}" for job_id in ids]):
        assert time.monotonic() < deadline, arq_worker.output
        await asyncio.sleep(0.01)  # the arq worker has started on them: migrate now races it

    out = run_migrate("arq:queue", "--to", queue, "--unpickle")

    assert "left nothing on arq:queue" in out or "running: its worker holds it" in out, out
    results: dict[str, Any] = {}
    while len(results) < len(ids):
        assert time.monotonic() < deadline + 30, f"{len(results)} of {len(ids)} jobs ended"
        for job_id in ids:
            raw = await redis.get(f"arq:result:{job_id}")
            if raw is not None and job_id not in results:
                results[job_id] = pickle.loads(raw) if raw.startswith(b"\x80") else Job(job_id, queue)
        await asyncio.sleep(0.05)
    by_arq = {job_id: r for job_id, r in results.items() if isinstance(r, dict)}
    assert all(r["s"] and r["r"] == int(r["a"][0]) + 1 for r in by_arq.values())
    for job_id, handle in results.items():
        if not isinstance(handle, dict):
            assert await handle.result(timeout=0) == ids.index(job_id) + 1
    print(f"plain arq ran {len(by_arq)}, ours {len(ids) - len(by_arq)}")
    assert 0 < len(by_arq) < len(ids), "both workers ran some"
    assert await redis.zcard("arq:failed") == 0
    arq_worker.stop()


def test_the_task_name_of_a_pickled_job_is_read_without_loading_it(tmp_path: Path) -> None:
    """pickled_task disassembles the pickle: the name comes out and nothing runs."""
    marker = tmp_path / "unpickled"
    raw = pickle.dumps({"t": None, "f": "send_invoice_email", "a": (Marker(marker),), "k": {}, "et": 1})
    assert pickled_task(raw) == "send_invoice_email"
    assert pickled_task(raw[:5]) is None
    assert pickled_task(pickle.dumps([1, 2])) is None
    assert not marker.exists()


async def test_source_and_destination_must_differ_and_be_queues(
    own_redis: tuple[RedisServer, Redis], queue: str
) -> None:
    """The same queue twice, or a key that is not a sorted set, is a one-line error; nothing waits is fine."""
    _, redis = own_redis
    await redis.set("arq:queue:text", "x")
    same = run_command(SCALR_QUEUE, "migrate", "default", "--to", "arq:queue:default")
    wrong = run_command(SCALR_QUEUE, "migrate", "text")
    assert same.returncode == 1
    assert same.stderr == "error: arq:queue:default is both the source and the destination: nothing to move\n"
    assert wrong.stderr == "error: arq:queue:text holds a string, not a queue (a sorted set)\n"
    empty = run_migrate("arq:queue")
    default = f"arq:queue:{queue}"  # SCALR_QUEUE_NAME
    assert empty == f"moved 0 job(s) from arq:queue to {default}\nleft nothing on arq:queue\n"
    report = await migrate(redis, "arq:queue", "default", dry_run=True)
    assert (report.moved, report.left, report.dry_run) == ([], [], True)


async def test_the_workers_warning_names_a_command_and_a_page_that_exist(
    own_redis: tuple[RedisServer, Redis], arq_pool: ArqRedis, spawn: Callable[..., WorkerProcess]
) -> None:
    """A worker that finds arq's pickled jobs waiting says what to run (migrate them into the queue it serves,
    unpickling them, since serving arq's key would fail pickles); that command works, the page it cites exists, and
    the worker then runs the job."""
    job = await arq_pool.enqueue_job("add", 1, 2)
    assert job is not None
    worker = spawn("tests.apps.basic")
    warning = worker.wait_for("jobs_waiting_on_arq_default_queue")
    assert warning["jobs"] == 1
    assert warning["pickled"] is True
    command = re.search(r"`(scalr-queue migrate [^`]+)`", warning["fix"])
    assert command is not None, warning["fix"]
    assert "--unpickle" in command.group(1)
    assert "jobs_waiting_on_arq_default_queue" in (ROOT / warning["docs"]).read_text()
    assert "moved 1 job(s)" in run_migrate(*command.group(1).split()[2:])
    queue = warning["serving"]
    assert await own_redis[1].exists(f"arq:result:{job.job_id}") or await own_redis[1].zscore(
        queue, job.job_id
    )
    for _ in range(100):
        if await own_redis[1].exists(f"arq:result:{job.job_id}"):
            break
        await asyncio.sleep(0.1)
    assert json.loads(await own_redis[1].get(f"arq:result:{job.job_id}"))["r"] == 3
