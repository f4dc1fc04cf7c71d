"""The worker launcher: modules, WorkerSettings, queues, burst, plain-arq compatibility; real subprocesses."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from arq.connections import ArqRedis

import scalr_queue
from scalr_queue import JobFailedError, JobStatus, TaskArgumentsError, WorkerSettingsError, enqueue, wire
from scalr_queue.client import default_client
from scalr_queue.failed import FailedStore
from scalr_queue.worker import build_settings, serve, worker_options
from tests.apps import basic
from tests.conftest import WorkerProcess, run_command


async def test_worker_runs_tasks_and_rebuilds_argument_types(spawn: Callable[..., WorkerProcess]) -> None:
    """datetime, date, UUID, Decimal, Enum, pydantic models and sets survive the JSON round trip."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    when = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    job = await enqueue(
        basic.describe,
        when=when,
        day=date(2026, 1, 2),
        ident=UUID(int=7),
        amount=Decimal("10.10"),
        colour=basic.Colour.blue,
        invoice=basic.Invoice(id=7, total=Decimal("99.95"), issued=date(2026, 1, 1)),
        tags={"a", "b"},
    )
    assert job is not None
    result = await job.result(timeout=10)
    assert result["types"] == ["datetime", "date", "UUID", "Decimal", "Colour", "Invoice", "set"]
    assert result["when"] == when.isoformat()
    assert result["amount"] == "10.10"
    assert result["invoice_total"] == "99.95"
    assert await job.status() is JobStatus.complete


async def test_unannotated_arguments_arrive_as_json(spawn: Callable[..., WorkerProcess]) -> None:
    """Without an annotation a task receives the plain JSON value (a datetime arrives as its ISO string)."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("untyped", value=datetime(2026, 1, 1, 0, 0))
    assert job is not None
    assert await job.result(timeout=10) == {"type": "str", "value": "2026-01-01T00:00:00"}


async def test_failures_are_recorded_with_reason_and_worker_keeps_serving(
    spawn: Callable[..., WorkerProcess], redis: object
) -> None:
    """An exception, a non-JSON result and a timeout each fail their job, readable as JSON; the worker goes on."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    boom = await enqueue("boom", message="card declined")
    odd = await enqueue("unserializable")
    slow = await enqueue("too_slow")
    assert boom is not None
    assert odd is not None
    assert slow is not None
    with pytest.raises(JobFailedError) as failed:
        await boom.result(timeout=10)
    assert failed.value.error_type == "ValueError"
    assert failed.value.message == "card declined"
    assert failed.value.traceback is not None
    assert "raise ValueError(message)" in failed.value.traceback
    with pytest.raises(
        JobFailedError,
        match="ResultNotSerializableError: the result of task 'unserializable' is not JSON-able",
    ):
        await odd.result(timeout=10)
    with pytest.raises(
        JobFailedError, match="JobTimeoutError: task 'too_slow' ran longer than its 0.5 s timeout"
    ):
        await slow.result(timeout=10)
    assert await boom.status() is JobStatus.failed
    after = await enqueue("add", x=2, y=2)
    assert after is not None
    assert await after.result(timeout=10) == 4
    assert worker.proc.poll() is None


async def test_result_record_in_redis_is_json(spawn: Callable[..., WorkerProcess], redis) -> None:  # type: ignore[no-untyped-def]
    """`redis-cli get arq:result:<id>` shows JSON, failure included: no pickle anywhere."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("boom", message="visible")
    assert job is not None
    with pytest.raises(JobFailedError):
        await job.result(timeout=10)
    record = json.loads(await redis.get(f"arq:result:{job.job_id}"))
    assert record["s"] is False
    assert record["r"]["type"] == "ValueError"
    assert record["r"]["message"] == "visible"
    assert record["f"] == "boom"


async def test_retry_keeps_working(spawn: Callable[..., WorkerProcess]) -> None:
    """arq's Retry(defer=...) re-runs the job as the next try."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = await enqueue("retry_once")
    assert job is not None
    assert await job.result(timeout=10) == 2


async def test_queue_option_serves_only_that_queue(spawn: Callable[..., WorkerProcess], redis) -> None:  # type: ignore[no-untyped-def]
    """`--queue bulk` serves arq:queue:bulk; a worker of the default queue leaves bulk jobs alone."""
    bulk_name = f"bulk{time.time_ns()}"
    default_worker = spawn("tests.apps.basic")
    default_worker.wait_started()
    job = await enqueue("add", x=5, y=5, _queue_name=bulk_name)
    assert job is not None
    await asyncio.sleep(1.2)
    assert await job.status() is JobStatus.queued
    bulk_worker = spawn("tests.apps.basic", "--queue", bulk_name)
    started = bulk_worker.wait_started()
    assert started["queue"] == bulk_name
    assert await job.result(timeout=10) == 10
    assert await redis.zcard(f"arq:queue:{bulk_name}") == 0


async def test_burst_exits_when_queue_is_empty(spawn: Callable[..., WorkerProcess]) -> None:
    """`--burst` runs what is queued and exits 0."""
    jobs = [await enqueue("add", x=i, y=1) for i in range(5)]
    worker = spawn("tests.apps.basic", "--burst")
    assert worker.wait(timeout=30) == 0
    assert [await j.result(timeout=1) for j in jobs if j] == [1, 2, 3, 4, 5]


def test_python_m_and_console_script_are_the_same_command() -> None:
    """`python -m scalr_queue.worker` and `scalr-queue worker` take the same options."""
    module_help = run_command(sys.executable, "-m", "scalr_queue.worker", "--help")
    script_help = run_command(str(Path(sys.executable).parent / "scalr-queue"), "worker", "--help")
    assert module_help.returncode == 0, module_help.stderr
    for option in ("--queue", "--burst", "--check", "--watch"):
        assert option in module_help.stdout
    options = lambda text: [line.split()[0] for line in text.splitlines() if line.strip().startswith("--")]  # noqa: E731
    assert options(module_help.stdout) == options(script_help.stdout)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("tests.apps.empty_tasks", "must export tasks = [...]"),
        ("tests.apps.no_tasks", "found no tasks list"),
        (
            "tests.apps.typo_setting",
            "WorkerSettings.max_job is not a worker setting arq knows (did you mean 'max_jobs'?",
        ),
        ("tests.apps.sync_task", "must be an async function"),
        ("tests.apps.does_not_exist", "cannot import worker module 'tests.apps.does_not_exist'"),
    ],
)
def test_startup_errors_say_what_to_fix(module: str, message: str) -> None:
    """A module the worker cannot run stops start-up with one line saying what is wrong, and exit code 1."""
    result = run_command(sys.executable, "-m", "scalr_queue.worker", module, timeout=30)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_stops_startup_naming_the_variable() -> None:
    """SCALR_QUEUE_CONCURRENCY=lots is a start-up error that names the variable."""
    result = run_command(
        sys.executable,
        "-m",
        "scalr_queue.worker",
        "tests.apps.basic",
        env={"SCALR_QUEUE_CONCURRENCY": "lots"},
    )
    assert result.returncode == 1
    assert "SCALR_QUEUE_CONCURRENCY='lots' is not valid" in result.stderr


def test_redis_down_at_start_is_one_clear_line() -> None:
    """A worker that cannot reach Redis says where it looked (no password) and exits 1."""
    from scalr_queue.testing import free_port

    url = f"redis://app:hunter2@127.0.0.1:{free_port()}/0"
    result = run_command(
        sys.executable, "-m", "scalr_queue.worker", "tests.apps.basic", env={"REDIS_URL": url}
    )
    assert result.returncode == 1
    assert "cannot reach Redis at redis://app:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_worker_settings_class_wins_and_is_completed_with_defaults() -> None:
    """A WorkerSettings keeps its own values and inherited ones, and gets scalr_queue's defaults for the rest."""
    from tests.apps import settings_class

    options, _ = worker_options("tests.apps.settings_class")
    assert options["max_jobs"] == 3
    assert [f.__name__ for f in options["functions"]] == ["whoami"]  # inherited: arq alone would drop it
    built = vars(build_settings(settings_class.WorkerSettings))
    assert built["max_jobs"] == 3  # its own
    assert [f.name for f in built["functions"]] == ["whoami"]  # inherited: arq alone would drop it
    assert built["on_startup"] is not None
    assert built["max_tries"] == 5
    assert built["job_timeout"] >= 300
    assert built["queue_name"].startswith("arq:queue:")
    assert built["job_serializer"] is wire.dumps
    assert built["job_deserializer"] is wire.loads
    assert [c.name for c in built["cron_jobs"]] == ["cron:tick"]


async def test_worker_settings_hooks_and_cron_run(
    spawn: Callable[..., WorkerProcess], redis, queue: str
) -> None:  # type: ignore[no-untyped-def]
    """The user's on_startup runs (its ctx reaches tasks) and a cron entry runs under the wrapper."""
    worker = spawn("tests.apps.settings_class")
    started = worker.wait_started()
    assert started["concurrency"] == 3
    job = await enqueue("whoami")
    assert job is not None
    assert (await job.result(timeout=10))["started_by"] == "on_startup"
    worker.wait_for(lambda e: e.get("event") == "job_succeeded" and e.get("task") == "cron:tick")
    assert await redis.get(f"tick:arq:queue:{queue}") == b"ticked"


def test_build_settings_rejects_unknown_attribute_and_pickle() -> None:
    """Unknown names and a custom (pickle) serializer are refused; arq would silently drop or use them."""

    class Typo:
        functions = [basic.add]
        job_timout = 10

    with pytest.raises(WorkerSettingsError, match="did you mean 'job_timeout'"):
        build_settings(Typo)

    class Pickled:
        functions = [basic.add]
        job_serializer = staticmethod(lambda d: b"")

    with pytest.raises(WorkerSettingsError, match="always stores jobs as JSON"):
        build_settings(Pickled)


async def test_plain_arq_runs_a_built_worker_settings(spawn: Callable[..., WorkerProcess]) -> None:
    """`python -m arq tests.apps.arq_compat.WorkerSettings` runs our jobs with our JSON, logs and health."""
    worker = spawn("tests.apps.arq_compat.WorkerSettings", module="arq")
    worker.wait_started()
    job = await enqueue("multiply", x=6, y=7)
    assert job is not None
    assert await job.result(timeout=10) == 42
    failing = await enqueue("fail")
    assert failing is not None
    with pytest.raises(JobFailedError, match="RuntimeError: failed under arq"):
        await failing.result(timeout=10)
    retrying = worker.wait_for(lambda e: e.get("event") == "job_retrying" and e.get("task") == "fail")
    assert retrying["try"] == 1
    worker.wait_for(
        lambda e: e.get("event") == "job_failed" and e.get("task") == "fail" and e.get("try") == 2
    )
    record = await FailedStore(default_client().redis, max_age_s=60, max_count=10).get(failing.job_id)
    assert record is not None
    assert record.reason == "raised"
    assert record.tries == 2
    check = run_command(sys.executable, "-m", "arq", "tests.apps.arq_compat.WorkerSettings", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    ours = run_command(sys.executable, "-m", "scalr_queue.worker", "tests.apps.arq_compat", "--check")
    assert ours.returncode == 0, ours.stdout + ours.stderr


async def test_jobs_cross_between_arq_and_scalr_queue(
    spawn: Callable[..., WorkerProcess], redis_server, queue: str
) -> None:  # type: ignore[no-untyped-def]
    """A job enqueued with arq's own enqueue_job (JSON serializer) runs on our worker, positional arguments
    matched to the task's parameters; too many positional arguments fail the job with the reason."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    arq_redis = ArqRedis.from_url(redis_server.url)
    arq_redis.job_serializer, arq_redis.job_deserializer = wire.dumps, wire.loads
    try:
        arq_job = await arq_redis.enqueue_job("add", x=20, y=22, _queue_name=f"arq:queue:{queue}")
        assert arq_job is not None
        assert await scalr_queue.Job(arq_job.job_id).result(timeout=10) == 42
        positional = await arq_redis.enqueue_job("add", 1, 2, _queue_name=f"arq:queue:{queue}")
        assert positional is not None
        assert await scalr_queue.Job(positional.job_id).result(timeout=10) == 3
        too_many = await arq_redis.enqueue_job("add", 1, 2, 3, _queue_name=f"arq:queue:{queue}")
        assert too_many is not None
        with pytest.raises(JobFailedError, match="takes at most 2"):
            await scalr_queue.Job(too_many.job_id).result(timeout=10)
    finally:
        await arq_redis.aclose()


async def test_serve_runs_in_process_in_burst_mode() -> None:
    """scalr_queue.worker.serve(...) runs the same worker on the running loop (tests, embedding)."""
    job = await enqueue("add", x=1, y=1)
    assert job is not None
    worker = await serve("tests.apps.basic", burst=True, handle_signals=False)
    assert worker.jobs_complete == 1
    assert await job.result(timeout=1) == 2


def test_run_runs_in_process_in_burst_mode(queue: str) -> None:
    """scalr_queue.worker.run(...) is the blocking form, as the CLI uses it."""
    from scalr_queue.worker import run

    async def put() -> str:
        job = await enqueue("add", x=2, y=3)
        await scalr_queue.close()
        assert job is not None
        return job.job_id

    job_id = asyncio.run(put())
    run("tests.apps.basic", burst=True)

    async def read() -> object:
        try:
            return await scalr_queue.Job(job_id).result(timeout=1)
        finally:
            await scalr_queue.close()

    assert asyncio.run(read()) == 5


async def test_watch_restarts_worker_with_fresh_code(
    spawn: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """`--watch DIR` restarts the worker in a new process when a file changes, so the new code runs."""
    package = tmp_path / "watchapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = "async def version(ctx: dict) -> int:\n    return {n}\n\ntasks = [version]\n"
    (package / "worker.py").write_text(source.format(n=1))
    worker = spawn(
        "watchapp.worker", "--watch", str(tmp_path), cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)}
    )
    worker.wait_started()
    first = await enqueue("version")
    assert first is not None
    assert await first.result(timeout=10) == 1
    (package / "worker.py").write_text(source.format(n=2))
    worker.wait_for(lambda e: sum(x.get("event") == "worker_started" for x in worker.events) >= 2, timeout=30)
    second = await enqueue("version")
    assert second is not None
    assert await second.result(timeout=10) == 2


async def test_workers_publish_their_tasks_and_the_producer_uses_them(
    spawn: Callable[..., WorkerProcess], redis
) -> None:  # type: ignore[no-untyped-def]
    """Without SCALR_QUEUE_TASKS, enqueue by name still goes to the task's own queue and checks its arguments
    against what the worker published; a name nobody published is accepted (a rollout), with one warning."""
    import structlog

    worker = spawn("tests.apps.basic")
    worker.wait_started()
    await wait_until_published(redis, "rebuild")
    job = await enqueue("rebuild", report_id=7)
    assert job is not None
    assert job.queue == "bulk"  # @task(queue="bulk"), applied without importing the worker's module
    assert await redis.zscore("arq:queue:bulk", job.job_id) is not None
    with pytest.raises(TaskArgumentsError, match=r"unexpected 'z'.*as published by its workers"):
        await enqueue("add", x=1, y=2, z=3)
    with pytest.raises(TaskArgumentsError, match="missing 'y'"):
        await enqueue("add", x=1)
    with structlog.testing.capture_logs() as logs:
        assert await enqueue("not_deployed_yet", x=1) is not None
        assert await enqueue("not_deployed_yet", x=2) is not None
    assert [e["event"] for e in logs].count("task_not_published") == 1


async def wait_until_published(redis, name: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(100):
        if await redis.hexists("arq:tasks", name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was never published")


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("async def f(ctx, x: int): ...", True),
        ("async def f(ctx): ...", True),
        ("async def f(context: dict, x: int): ...", True),
        ("async def f(_, x): ...", True),
        ("async def f(x: int): ...", False),
        ("async def f(invoice_id): ...", False),
        ("async def f(*, ctx): ...", False),
        ("async def f(): ...", False),
    ],
)
def test_a_task_must_take_ctx_first(source: str, ok: bool) -> None:
    """The start-up check refuses a task whose first parameter is not arq's ctx (named or typed as one)."""
    from scalr_queue.tasks import as_task

    namespace: dict[str, object] = {}
    exec(source, namespace)
    if ok:
        as_task(namespace["f"])
    else:
        with pytest.raises(WorkerSettingsError, match="must take arq's ctx as its first argument"):
            as_task(namespace["f"])


async def test_dead_workers_leave_the_workers_set(
    spawn: Callable[..., WorkerProcess], redis, queue: str
) -> None:  # type: ignore[no-untyped-def]
    """A SIGKILLed worker's member of arq:workers:<queue> is swept by the live workers' next heartbeats."""
    env = {"SCALR_QUEUE_HEALTH_INTERVAL": "0.5"}
    live = spawn("tests.apps.basic", env=env)
    doomed = spawn("tests.apps.basic", env=env)
    live_id = live.wait_started()["worker_id"]
    doomed_id = doomed.wait_started()["worker_id"]
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    for _ in range(100):
        members = {m.decode() for m in await redis.zrange(f"arq:workers:{queue}", 0, -1)}
        if doomed_id not in members:
            break
        await asyncio.sleep(0.1)
    assert members == {live_id}
