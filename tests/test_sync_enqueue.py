"""enqueue_sync / enqueue_many_sync: the same checks and jobs as the async path, from threads without a loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as sync_redis

from scalr_queue import (
    ScalrQueueError,
    SerializationError,
    UnknownTaskError,
    close_sync,
    enqueue_many_sync,
    enqueue_sync,
)
from scalr_queue import keys as _keys
from scalr_queue.records import JobRecord
from scalr_queue.testing import RedisServer
from tests.conftest import WorkerProcess


@pytest.fixture(autouse=True)
def closed_after() -> Iterator[None]:
    yield
    close_sync()


def test_a_job_queued_from_sync_code_runs_on_a_worker(
    spawn: Callable[..., WorkerProcess], redis_server: RedisServer, queue: str
) -> None:
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    job = enqueue_sync("add", x=2, y=3)
    assert job is not None
    done = worker.wait_for(lambda e: e.get("event") == "job_succeeded" and e.get("job_id") == job.job_id)
    assert done["task"] == "add"
    client = sync_redis.Redis.from_url(redis_server.url)
    assert client.exists(_keys.result_key(job.job_id))
    client.close()


def test_sync_calls_from_many_threads_each_queue_their_job(redis_server: RedisServer, queue: str) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = list(pool.map(lambda n: enqueue_sync("add", x=n, y=n), range(200)))
    assert len({j.job_id for j in jobs if j is not None}) == 200
    client = sync_redis.Redis.from_url(redis_server.url)
    assert client.zcard(_keys.queue_key(queue)) == 200
    record = JobRecord.decode(client.get(_keys.job_key(jobs[0].job_id)))  # type: ignore[union-attr]
    assert record.task == "add"
    client.close()


def test_sync_enqueue_many_and_the_same_errors_as_await(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, queue: str
) -> None:
    monkeypatch.setenv("SCALR_QUEUE_TASKS", "tests.apps.basic")
    jobs = enqueue_many_sync([("add", {"x": 1, "y": 2}), ("add", {"x": 3, "y": 4})])
    assert [j is not None for j in jobs] == [True, True]
    with pytest.raises(UnknownTaskError):
        enqueue_sync("no_such_task")
    with pytest.raises(SerializationError):
        enqueue_sync("untyped", value=object())
    assert enqueue_sync("add", x=1, y=1, _job_id="mine") is not None
    assert enqueue_sync("add", x=1, y=1, _job_id="mine") is None  # arq's rule: an existing id queues nothing


def test_sync_enqueue_refuses_to_block_a_running_loop(queue: str) -> None:
    async def inside() -> None:
        enqueue_sync("add", x=1, y=2)

    with pytest.raises(ScalrQueueError, match="await enqueue"):
        asyncio.run(inside())
