"""enqueue and Job against a real Redis: arq's data model, JSON payloads, options, checks and the shared pool."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio

import scalr_queue
from scalr_queue import (
    Job,
    JobNotFoundError,
    JobStatus,
    RedisUnavailableError,
    SerializationError,
    TaskArgumentsError,
    UnknownTaskError,
    enqueue,
)
from scalr_queue.config import reset_settings
from scalr_queue.testing import RedisServer, reset
from tests.apps import basic


async def test_enqueue_writes_arq_job_and_queue_entry_as_json(redis: redis.asyncio.Redis, queue: str) -> None:
    """A job is arq's job key plus a member of the arq:queue:<name> sorted set, and the payload is JSON."""
    job = await enqueue("add", x=1, y=2)
    assert job is not None
    raw = await redis.get(f"arq:job:{job.job_id}")
    payload = json.loads(raw)
    assert payload["f"] == "add"
    assert payload["k"] == {"x": 1, "y": 2}
    assert payload["a"] == []
    assert await redis.type(f"arq:queue:{queue}") == b"zset"
    score = await redis.zscore(f"arq:queue:{queue}", job.job_id)
    assert abs(score - time.time() * 1000) < 5000
    assert 86_000 < await redis.ttl(f"arq:job:{job.job_id}") <= 86_400
    assert await job.status() is JobStatus.queued


async def test_duplicate_job_id_returns_none(redis: redis.asyncio.Redis, queue: str) -> None:
    """As in arq, a second enqueue with the same _job_id is refused with None."""
    first = await enqueue("add", x=1, y=2, _job_id="invoice:7")
    second = await enqueue("add", x=1, y=2, _job_id="invoice:7")
    assert first is not None
    assert first.job_id == "invoice:7"
    assert second is None
    assert await redis.zcard(f"arq:queue:{queue}") == 1


async def test_queue_name_maps_to_arq_key(redis: redis.asyncio.Redis) -> None:
    """_queue_name='bulk' lands in arq:queue:bulk."""
    job = await enqueue("add", x=1, y=2, _queue_name="bulk")
    assert job is not None
    assert job.queue == "bulk"
    assert await redis.zscore("arq:queue:bulk", job.job_id) is not None
    assert await job.status() is JobStatus.queued
    await redis.zrem("arq:queue:bulk", job.job_id)


async def test_defer_by_defer_until_and_expires(redis: redis.asyncio.Redis, queue: str) -> None:
    """_defer_by and _defer_until set the run-at score; _expires sets the job key's lifetime."""
    now_ms = time.time() * 1000
    later = await enqueue("add", x=1, y=2, _defer_by=60)
    assert later is not None
    assert abs(await redis.zscore(f"arq:queue:{queue}", later.job_id) - (now_ms + 60_000)) < 5000
    assert await later.status() is JobStatus.deferred
    when = datetime.now(UTC) + timedelta(hours=1)
    scheduled = await enqueue("add", x=1, y=2, _defer_until=when)
    assert scheduled is not None
    assert int(await redis.zscore(f"arq:queue:{queue}", scheduled.job_id)) == int(when.timestamp() * 1000)
    short = await enqueue("add", x=1, y=2, _expires=timedelta(seconds=30))
    assert short is not None
    assert 15 <= await redis.ttl(f"arq:job:{short.job_id}") <= 30
    with pytest.raises(TaskArgumentsError, match="not both"):
        await enqueue("add", x=1, y=2, _defer_by=1, _defer_until=when)


async def test_misspelt_option_is_rejected_with_suggestion() -> None:
    """A typo such as _defer would otherwise reach the task as an argument."""
    with pytest.raises(TaskArgumentsError, match="did you mean '_defer_by'"):
        await enqueue("add", x=1, y=2, _defer=5)


async def test_enqueue_by_function_checks_signature(redis: redis.asyncio.Redis, queue: str) -> None:
    """Passing the function checks missing, unexpected and ill-typed arguments before anything is written."""
    with pytest.raises(TaskArgumentsError, match=r"missing 'y'.*it takes add\(x: int, y: int\)"):
        await enqueue(basic.add, x=1)
    with pytest.raises(TaskArgumentsError, match=r"unexpected 'yy' \(did you mean 'y'\?\)"):
        await enqueue(basic.add, x=1, y=2, yy=3)
    with pytest.raises(TaskArgumentsError, match=r"argument 'x'.*valid integer"):
        await enqueue(basic.add, x="one", y=2)
    assert await redis.zcard(f"arq:queue:{queue}") == 0
    job = await enqueue(basic.add, x=1, y=2)
    assert job is not None
    assert json.loads(await redis.get(f"arq:job:{job.job_id}"))["f"] == "add"


async def test_task_options_route_to_their_queue(redis: redis.asyncio.Redis) -> None:
    """@task(queue='bulk', name='rebuild') sends the job to arq:queue:bulk under its own name."""
    job = await enqueue(basic.rebuild_report, report_id=3)
    assert job is not None
    assert job.queue == "bulk"
    assert json.loads(await redis.get(f"arq:job:{job.job_id}"))["f"] == "rebuild"
    await redis.zrem("arq:queue:bulk", job.job_id)


async def test_names_are_checked_with_scalr_queue_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SCALR_QUEUE_TASKS set, an unknown name fails at once with the closest registered names."""
    monkeypatch.setenv("SCALR_QUEUE_TASKS", "tests.apps.basic")
    reset_settings()
    await scalr_queue.close()
    with pytest.raises(UnknownTaskError, match="did you mean 'add'"):
        await enqueue("addd", x=1, y=2)
    with pytest.raises(TaskArgumentsError, match=r"missing 'x', 'y'"):
        await enqueue("add")
    assert await enqueue("add", x=1, y=2) is not None


async def test_unknown_names_pass_without_scalr_queue_tasks() -> None:
    """Without SCALR_QUEUE_TASKS the producer cannot know the names; the worker reports unknown ones."""
    assert await enqueue("not_registered_anywhere") is not None


async def test_value_that_is_not_json_fails_at_enqueue_naming_the_argument(
    redis: redis.asyncio.Redis, queue: str
) -> None:
    """Nothing is written when an argument cannot be JSON."""
    # a name no test worker publishes: a published signature would reject 'payload' before its value is looked at
    with pytest.raises(SerializationError, match="argument 'payload' of task 'unpublished' is not JSON-able"):
        await enqueue("unpublished", value=1, payload=object())
    assert await redis.zcard(f"arq:queue:{queue}") == 0


async def test_job_handle_from_id() -> None:
    """Job(job_id) rebuilds a handle; an id Redis never saw is not_found and result() says so."""
    job = await enqueue("add", x=1, y=2)
    assert job is not None
    again = Job(job.job_id)
    assert await again.status() is JobStatus.queued
    ghost = Job("no-such-job")
    assert await ghost.status() is JobStatus.not_found
    with pytest.raises(JobNotFoundError):
        await ghost.result(timeout=1)
    with pytest.raises(TimeoutError):
        await again.result(timeout=0.2)


async def test_one_pool_for_many_enqueues(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 enqueues reuse the loop's pool: the server (its own, so other tests' connections do not count) sees
    at most a handful of new connections."""
    with RedisServer() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        reset()
        await scalr_queue.close()
        probe = redis.asyncio.Redis.from_url(server.url)
        try:
            before = (await probe.info("stats"))["total_connections_received"]
            await asyncio.gather(*(enqueue("add", x=i, y=i) for i in range(200)))
            for i in range(50):
                await enqueue("add", x=i, y=i)
            opened = (await probe.info("stats"))["total_connections_received"] - before
        finally:
            await probe.aclose()
            await scalr_queue.close()
    # one per call would be 250; the pool opens one per call in flight at the same moment, which 200 gathered
    # calls make about 10 on a quiet machine and more on a loaded one (the scheduler decides how many overlap)
    assert opened <= 40


def test_each_event_loop_gets_its_own_pool(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Loops come and go (pytest, TestClient, scripts): each gets a working pool, closed by close()."""

    async def once() -> str:
        job = await enqueue("add", x=1, y=2)
        assert job is not None
        status = await job.status()
        await scalr_queue.close()
        return status.value

    assert [asyncio.run(once()) for _ in range(3)] == ["queued"] * 3


async def test_redis_down_fails_fast_with_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enqueue with Redis unreachable raises RedisUnavailableError quickly, without the password."""
    from scalr_queue.testing import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://user:s3cret@127.0.0.1:{free_port()}/0")
    reset_settings()
    await scalr_queue.close()
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError) as caught:
        await enqueue("add", x=1, y=2)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "s3cret" not in message
    assert "redis://user:***@127.0.0.1" in message
    assert "REDIS_URL" in message


async def test_redis_blackhole_is_bounded_by_redis_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that accepts but never answers cannot hang enqueue past SCALR_QUEUE_REDIS_TIMEOUT."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        monkeypatch.setenv("SCALR_QUEUE_REDIS_TIMEOUT", "1")
        reset_settings()
        await scalr_queue.close()
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError):
            await enqueue("add", x=1, y=2)
        assert time.monotonic() - started < 3
    finally:
        listener.close()


async def test_enqueue_many_checks_everything_first_then_writes_in_order(redis, queue: str) -> None:  # type: ignore[no-untyped-def]
    """enqueue_many returns Jobs in order (None for an existing _job_id) and writes nothing if one job is bad."""
    from scalr_queue import enqueue_many

    with pytest.raises(TaskArgumentsError):
        await enqueue_many([(basic.add, {"x": 1, "y": 2}), (basic.add, {"x": 1})])
    assert await redis.zcard(f"arq:queue:{queue}") == 0
    await enqueue("add", x=0, y=0, _job_id="many-taken")
    jobs = await enqueue_many(
        [(basic.add, {"x": i, "y": i}) for i in range(2500)]
        + [("add", {"x": 1, "y": 1, "_job_id": "many-taken"}), ("add", {"x": 1, "y": 1, "_defer_by": 60})]
    )
    assert len(jobs) == 2502
    assert jobs[2500] is None
    assert all(job is not None for job in jobs[:2500])
    assert await redis.zcard(f"arq:queue:{queue}") == 2502  # 2,500 + the earlier one + the deferred one
    deferred = jobs[2501]
    assert deferred is not None
    assert await deferred.status() is JobStatus.deferred
    payload = json.loads(await redis.get(f"arq:job:{jobs[7].job_id}"))  # type: ignore[union-attr]
    assert payload["k"] == {"x": 7, "y": 7}


async def test_due_jobs_leave_wake_up_tokens_capped(redis, queue: str) -> None:  # type: ignore[no-untyped-def]
    """Each job due now pushes a token an idle worker blocks on, and so does a deferred job that is now the first
    to come due (workers re-arm their timers); a later deferred job pushes none. The list is capped."""
    from scalr_queue import enqueue_many

    await enqueue_many([("add", {"x": i, "y": i}) for i in range(150)])
    assert await redis.llen(f"arq:notify:{queue}") == 100
    await redis.delete(f"arq:notify:{queue}")
    await enqueue("add", x=1, y=1, _defer_by=30)
    assert await redis.llen(f"arq:notify:{queue}") == 1
    await enqueue("add", x=1, y=1, _defer_by=60)
    assert await redis.llen(f"arq:notify:{queue}") == 1
    await enqueue("add", x=1, y=1, _defer_by=10)
    assert await redis.llen(f"arq:notify:{queue}") == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"_expires": 0}, "_expires must be more than 0 seconds"),
        ({"_expires": -5}, "_expires must be more than 0 seconds"),
        ({"_defer_by": float("nan")}, "_defer_by must be a finite number"),
        ({"_defer_by": float("inf")}, "_defer_by must be a finite number"),
        ({"_defer_by": 1e300}, "_defer_by must be a finite number of seconds within ten years"),
        ({"_defer_by": 1e12}, "within ten years"),
        ({"_defer_by": True}, "_defer_by must be seconds"),
        ({"_defer_until": "2030-01-01"}, "_defer_until must be a datetime"),
        ({"_defer_until": datetime(3000, 1, 1, tzinfo=UTC)}, "more than ten years away"),
        ({"_job_id": 12345}, "_job_id must be a string"),
        ({"_job_id": ""}, "_job_id must be a string"),
        ({"_job_id": "a\nb"}, "_job_id must be a string"),
        ({"_queue_name": "a b"}, "_queue_name must be a queue name"),
        ({"_queue_name": "*"}, "_queue_name must be a queue name"),
        ({"_job_try": "abc"}, "_job_try must be a whole number"),
        ({"_job_try": [1]}, "_job_try must be a whole number"),
        ({"_job_try": 0}, "_job_try must be a whole number"),
    ],
)
async def test_bad_enqueue_options_get_our_error_and_write_nothing(
    redis: redis.asyncio.Redis, queue: str, options: dict[str, object], message: str
) -> None:
    """Every enqueue option is checked before anything is written, with an error of ours that says what it must
    be (never a raw Redis, Attribute, Type or Overflow error)."""
    with pytest.raises(TaskArgumentsError, match=message):
        await enqueue("add", x=1, y=2, **options)  # type: ignore[arg-type]
    assert await redis.zcard(f"arq:queue:{queue}") == 0


async def test_enqueue_many_checks_options_too(redis: redis.asyncio.Redis, queue: str) -> None:
    """enqueue_many applies enqueue's checks to each job's options: one bad job and nothing is written."""
    from scalr_queue import enqueue_many

    with pytest.raises(TaskArgumentsError, match="_job_try must be a whole number"):
        await enqueue_many([("add", {"x": 1, "y": 1}), ("add", {"x": 1, "y": 1, "_job_try": [1]})])
    assert await redis.zcard(f"arq:queue:{queue}") == 0


@pytest.mark.parametrize("name", ["", "two words", "line\nbreak", "x" * 10_000, "tab\there"])
async def test_impossible_task_names_are_refused(name: str) -> None:
    """A task name must be 1-200 characters without whitespace or control characters, as on the worker."""
    with pytest.raises(UnknownTaskError, match="is not a task name"):
        await enqueue(name, x=1)


async def test_what_the_producer_accepts_the_worker_runs(spawn, redis: redis.asyncio.Redis) -> None:  # type: ignore[no-untyped-def]
    """Edge values the producer accepts (deep nesting at the bound, huge ints, unicode, empty containers, the
    last allowed defer) run on a worker, arriving as they were sent."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    deep: object = "bottom"
    for _ in range(63):
        deep = [deep]
    values = [deep, 2**62, "ünïcødé ✓ \u2028", {}, [], {"k": {"": None}}, 1e-300, -0.0]
    jobs = [await enqueue("untyped", value=v) for v in values]
    assert [(await j.result(timeout=10))["value"] for j in jobs if j] == values
    assert await enqueue("add", x=1, y=1, _defer_by=10 * 365 * 86_400 - 60) is not None
