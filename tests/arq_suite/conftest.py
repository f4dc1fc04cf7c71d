"""arq 0.28.0's test fixtures, on a redis-server of ours, with arq's ``Worker`` swapped for scalr_queue's.

tests/test_arq_suite.py copies this file, as ``conftest.py``, beside arq's own ``test_worker.py`` and
``test_cron.py`` (taken from arq's sdist) and runs pytest on them in a subprocess. It is not a conftest of our
own suite (tests/conftest.py keeps pytest out of this folder).

What it changes from arq's tests/conftest.py, and nothing else:

- ``arq.worker.Worker`` and ``arq.Worker`` are ``scalr_queue.worker.Worker``, set when pytest loads this file,
  before arq's test modules run ``from arq.worker import Worker`` (arq's ``run_worker``/``create_worker`` look
  the name up in ``arq.worker`` too, so they build ours);
- Redis is a throwaway redis-server started by ``scalr_queue.testing.RedisServer`` (arq's uses testcontainers);
- ``ArqRedis`` pools serialize jobs with our JSON (``scalr_queue.wire.dumps``/``loads``), not pickle; the
  ``arq_redis_msgpack`` pool stays msgpack, as arq's tests mean it;
- ``loop`` is the test's running loop (pytest-asyncio 1.x has no ``event_loop`` fixture); pools close with
  ``aclose()``.

With ``SCALR_ARQ_SUITE_PLAIN=1`` nothing is swapped and pools pickle, as arq does: the same fixtures then measure
arq's own Worker, the baseline in docs/arq-compatibility.md.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import arq
import arq.worker
import msgpack
import pytest
import redis.exceptions
from arq.connections import ArqRedis, RedisSettings
from arq.connections import create_pool as arq_create_pool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scalr_queue import wire
from scalr_queue.testing import RedisServer, reset
from scalr_queue.worker import Worker as ScalrWorker

PLAIN_ENV = "SCALR_ARQ_SUITE_PLAIN"
PLAIN = os.environ.get(PLAIN_ENV) == "1"

for _name in [n for n in os.environ if n.startswith("SCALR_QUEUE_") or n == "REDIS_URL"]:
    del os.environ[_name]  # scalr_queue's defaults, whatever the calling shell or test had set
if not PLAIN:
    arq.worker.Worker = ScalrWorker  # type: ignore[misc]
    arq.Worker = ScalrWorker  # type: ignore[misc]
    # A retried job is retried at once (our default waits 2 s, 4 s, ...): such a test then fails on its own
    # assertion instead of running into arq's 10 s per-test timeout. The retry itself still happens.
    os.environ["SCALR_QUEUE_BACKOFF"] = "0"

# Our JSON for every pool arq's tests enqueue with; arq's default (pickle) when measuring arq itself.
SERIALIZERS: dict[str, Any] = {} if PLAIN else {"job_serializer": wire.dumps, "job_deserializer": wire.loads}


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port for the whole run; scalr_queue's settings point at it."""
    with RedisServer() as server:
        os.environ["REDIS_URL"] = server.url
        reset()
        yield server


@pytest.fixture(name="loop")
async def _fix_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@pytest.fixture(scope="session")
def test_redis_host(redis_server: RedisServer) -> str:
    return "127.0.0.1"


@pytest.fixture(scope="session")
def test_redis_port(redis_server: RedisServer) -> int:
    return redis_server.port


@pytest.fixture(scope="session")
def test_redis_settings(test_redis_host: str, test_redis_port: int) -> RedisSettings:
    return RedisSettings(host=test_redis_host, port=test_redis_port)


async def _pool(host: str, port: int, **kwargs: Any) -> AsyncIterator[ArqRedis]:
    redis_ = ArqRedis(host=host, port=port, encoding="utf-8", **kwargs)
    await redis_.flushall()
    yield redis_
    await redis_.aclose(close_connection_pool=True)


@pytest.fixture
async def arq_redis(test_redis_host: str, test_redis_port: int) -> AsyncIterator[ArqRedis]:
    async for pool in _pool(test_redis_host, test_redis_port, **SERIALIZERS):
        yield pool


@pytest.fixture
async def arq_redis_msgpack(test_redis_host: str, test_redis_port: int) -> AsyncIterator[ArqRedis]:
    async for pool in _pool(
        test_redis_host,
        test_redis_port,
        job_serializer=msgpack.packb,
        job_deserializer=functools.partial(msgpack.unpackb, raw=False),
    ):
        yield pool


@pytest.fixture
async def arq_redis_retry(test_redis_host: str, test_redis_port: int) -> AsyncIterator[ArqRedis]:
    async for pool in _pool(
        test_redis_host,
        test_redis_port,
        retry=Retry(backoff=NoBackoff(), retries=3),
        retry_on_timeout=True,
        retry_on_error=[redis.exceptions.ConnectionError],
        **SERIALIZERS,
    ):
        yield pool


def _worker_factory(default_pool: ArqRedis, made: list[Any]) -> Callable[..., Any]:
    def create(
        functions: Any = (),
        burst: bool = True,
        poll_delay: float = 0,
        max_jobs: int = 10,
        arq_redis: ArqRedis = default_pool,
        **kwargs: Any,
    ) -> Any:
        worker_ = arq.worker.Worker(  # looked up now: arq's, or ours once swapped
            functions=list(functions),
            redis_pool=arq_redis,
            burst=burst,
            poll_delay=poll_delay,
            max_jobs=max_jobs,
            **kwargs,
        )
        made.append(worker_)
        return worker_

    return create


@pytest.fixture
async def worker(arq_redis: ArqRedis) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []
    yield _worker_factory(arq_redis, made)
    if made:  # arq's fixture closes the last worker it made
        await made[-1].close()


@pytest.fixture
async def worker_retry(arq_redis_retry: ArqRedis) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []
    yield _worker_factory(arq_redis_retry, made)
    if made:
        await made[-1].close()


@pytest.fixture(name="create_pool")
async def fix_create_pool(loop: asyncio.AbstractEventLoop) -> AsyncIterator[Callable[..., Any]]:
    pools: list[ArqRedis] = []

    async def create_pool_(settings: RedisSettings, *args: Any, **kwargs: Any) -> ArqRedis:
        pool = await arq_create_pool(settings, *args, **{**SERIALIZERS, **kwargs})
        pools.append(pool)
        return pool

    yield create_pool_
    await asyncio.gather(*[p.aclose(close_connection_pool=True) for p in pools])


@pytest.fixture(name="cancel_remaining_task")
def fix_cancel_remaining_task(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    async def cancel_remaining_task() -> None:
        tasks = asyncio.all_tasks(loop)
        cancelled = []
        for task in tasks:
            if "cancel_remaining_task()" not in repr(task):
                cancelled.append(task)
                task.cancel()
        if cancelled:
            print(f"Cancelled {len(cancelled)} ongoing tasks", file=sys.stderr)
            await asyncio.gather(*cancelled, return_exceptions=True)

    yield
    loop.run_until_complete(cancel_remaining_task())


class SetEnv:
    def __init__(self) -> None:
        self.envars: set[str] = set()

    def set(self, name: str, value: str) -> None:
        self.envars.add(name)
        os.environ[name] = value

    def clear(self) -> None:
        for n in self.envars:
            os.environ.pop(n)


@pytest.fixture
def env() -> Iterator[SetEnv]:
    setenv = SetEnv()
    yield setenv
    setenv.clear()
