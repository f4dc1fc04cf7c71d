"""The failed store's per-queue index: a queue's failures counted and paged without reading every record."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner
from redis.asyncio import Redis as AsyncRedis

import scalr_queue
from scalr_queue import keys
from scalr_queue.cli import cli
from scalr_queue.client import default_client
from scalr_queue.config import load_settings
from scalr_queue.connection import create_redis
from scalr_queue.failed import FailedJob, FailedStore, now_iso
from scalr_queue.testing import RedisServer


def record(job_id: str, queue: str, task: str = "add") -> FailedJob:
    return FailedJob(
        job_id=job_id,
        task=task,
        kwargs={"x": 1, "y": 2},
        queue=queue,
        tries=1,
        reason="raised",
        error_type="ValueError",
        message="no",
        traceback=None,
        enqueued_at=now_iso(),
        failed_at=now_iso(),
    )


def store(max_count: int = 1000) -> FailedStore:
    return FailedStore(default_client().redis, max_age_s=3600, max_count=max_count)


async def test_count_and_ids_per_queue(queue: str) -> None:
    """Each queue counts and pages its own failures, newest first."""
    s = store()
    other = queue + "-b"
    for i in range(5):
        await s.record(record(f"{queue}-{i}", queue))
    await s.record(record(f"{other}-0", other))
    assert await s.count(queue) == 5
    assert await s.count(other) == 1
    assert await s.ids(0, 2, queue=queue) == [f"{queue}-4", f"{queue}-3"]
    assert [j.job_id for j in await s.list(queue=other)] == [f"{other}-0"]


async def test_forget_and_retry_leave_the_index(queue: str) -> None:
    """A forgotten or retried failure no longer counts for its queue."""
    s = store()
    await s.record(record("gone-1", queue))
    await s.record(record("gone-2", queue))
    assert await s.forget("gone-1")
    assert await s.retry("gone-2")
    assert await s.count(queue) == 0


async def test_trimming_by_count_updates_the_queue_index(queue: str) -> None:
    """When the store is full the oldest records go, from their queue's index too."""
    with RedisServer() as server:  # a store of its own: the count bound is global
        redis = create_redis(load_settings(redis_url=server.url))
        try:
            s = FailedStore(redis, max_age_s=3600, max_count=3)
            for i in range(5):
                await s.record(record(f"trim-{i}", queue if i % 2 else queue + "-b"))
            assert await s.count() == 3
            assert await s.count(queue) + await s.count(queue + "-b") == 3
            assert await s.ids(0, 10, queue=queue + "-b") == ["trim-4", "trim-2"]
        finally:
            await redis.aclose(close_connection_pool=True)


async def test_corrupt_record_is_forgotten_from_every_index(redis: AsyncRedis, queue: str) -> None:
    """A record that does not decode can still be forgotten, and leaves the queue indexes."""
    await redis.sadd(keys.QUEUES_KEY, queue)
    await redis.set(keys.failed_key("bad-1"), b"\x00garbage")
    await redis.zadd(keys.FAILED_KEY, {"bad-1": 1})
    await redis.zadd(keys.failed_queue_key(queue), {"bad-1": 1})
    assert await store().forget("bad-1")
    assert await redis.zscore(keys.failed_queue_key(queue), "bad-1") is None


async def test_retry_all_by_task_skips_corrupt_records(redis: AsyncRedis, queue: str) -> None:
    """retry_all with a task retries that task's records and leaves others and corrupt ones alone."""
    s = store()
    await s.record(record("t-add", queue, task="add"))
    await s.record(record("t-boom", queue, task="boom"))
    await redis.set(keys.failed_key("t-bad"), b"{")
    await redis.zadd(keys.failed_queue_key(queue), {"t-bad": 9e12})
    assert await s.retry_all(queue=queue, task="add") == ["t-add"]
    assert await s.retry_all(queue=queue) == ["t-boom"]


def test_cli_retry_all_with_task(queue: str) -> None:
    """`scalr-queue failed retry --all --queue Q --task T` retries only that task's failures."""

    async def setup() -> None:
        s = store()
        await s.record(record("c-add", queue, task="add"))
        await s.record(record("c-boom", queue, task="boom"))
        await scalr_queue.close()

    async def left() -> list[str]:
        ids = await store().ids(0, 10, queue=queue)
        await scalr_queue.close()
        return ids

    asyncio.run(setup())
    result = CliRunner().invoke(cli, ["failed", "retry", "--all", "--queue", queue, "--task", "boom"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["c-boom"]
    assert asyncio.run(left()) == ["c-add"]
