"""The enqueue lane (``scalr_queue._lane``): the command it packs is the client's, and its deadlines hold without a
timer per call: a stalled Redis ends every call in flight at its deadline, and the lane goes on afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio
from redis import exceptions as redis_exceptions

from scalr_queue import keys
from scalr_queue._lane import NOT_ANSWERED, SLOT, Lane, packed, template
from scalr_queue._store import (
    FreshEnqueue,
    PlainEnqueue,
    PlainEnqueueMany,
    PlainJob,
    enqueue_call,
    enqueue_many_call,
    store_job,
)
from scalr_queue.testing import RedisServer

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("job_id", "queue", "priority", "score"),
    [
        ("0f" * 16, "default", 0, 1_764_000_000_000.25),
        ("naïve-100%-id", "reports.daily", 7, 1_764_000_000_001.0),
        ("x", "arq:queue", 9, 17.5),
    ],
)
def test_a_plain_jobs_command_is_the_enqueue_call_packed(
    job_id: str, queue: str, priority: int, score: float
) -> None:
    """The template's bytes equal those of packing ENQUEUE's keys and arguments one by one (the two never drift)."""
    payload = b'{"f":"noop","k":{"note":"50% off"}}'
    job_keys, args = enqueue_call(
        job_id=job_id,
        queue=keys.queue_key(queue),
        payload=payload,
        score_ms=score,
        now_ms=1_764_000_000_000,
        expires_ms=86_400_000,
        priority=priority,
    )
    expected = packed("EVALSHA", SHA, len(job_keys), *job_keys, *args)
    command = PlainEnqueue(SHA, keys.queue_key(queue), priority).command(
        job_id, payload, score, 1_764_000_000_000, 86_400_000
    )
    assert command == expected


def test_many_plain_jobs_command_is_the_enqueue_many_call_packed() -> None:
    """``enqueue_many``'s packed command equals packing ENQUEUE_MANY's keys, arguments and jobs one by one."""
    jobs: list[PlainJob] = [
        ("0f" * 16, b'{"f":"noop"}', 1_764_000_000_000.25, 86_400_000, 0),
        ("naïve-100%-id", b'{"k":{"note":"50% off"}}', 1_764_000_000_001.0, 5_000, 7),
        ("x", b"", 17, 1, 9),
    ]
    for queue in ("default", "reports.100%"):
        job_keys, args = enqueue_many_call(queue, 1_764_000_000_002)
        expected = packed("EVALSHA", SHA, len(job_keys), *job_keys, *args, *(v for job in jobs for v in job))
        assert PlainEnqueueMany(SHA, queue).command(1_764_000_000_002, jobs) == expected
        assert PlainEnqueueMany(SHA, queue).command(5, []) == packed(
            "EVALSHA", SHA, len(job_keys), *job_keys, 5, *args[1:]
        )


async def _state(redis: redis.asyncio.Redis, queue: str, job_id: str) -> dict[str, object]:
    job = keys.job_key(job_id)
    return {
        "job": (await redis.type(job), await redis.get(job), round(await redis.pttl(job), -3)),
        "queued": await redis.zscore(keys.queue_key(queue), job_id),
        "indexed": await redis.zscore(keys.ready_key(queue, 0), job_id),
        "queues": await redis.sismember(keys.QUEUES_KEY, keys.queue_name(queue)),
        "tokens": await redis.lrange(keys.notify_key(queue), 0, -1),
        "levels": await redis.get(keys.ready_levels_key(queue)),
    }


async def test_a_fresh_jobs_transaction_writes_what_the_enqueue_script_writes(
    redis: redis.asyncio.Redis, queue: str
) -> None:
    """The MULTI/EXEC a job with no option goes as leaves Redis as the ENQUEUE script leaves it, wake-up token
    and cap included; a key of the wrong type fails it with Redis's error, read whole (the lane goes on)."""
    lane = Lane(redis.connection_pool)
    now = int(time.time() * 1000)
    payload = b'{"f":"noop","k":{"note":"50% off"}}'
    for n in range(keys.NOTIFY_CAP + 2):
        job_id = f"job-{n}"
        replies = await lane.call(
            FreshEnqueue(queue).command(job_id, payload, now - 0.25, 60_000), None, FreshEnqueue.REPLIES
        )
        assert replies[:4] == [b"OK", 1, 1, int(n == 0)]  # PSETEX, the two ZADDs, SADD (new once)
        await store_job(
            redis,
            job_id=f"{job_id}-s",
            queue=f"{queue}-script",
            payload=payload,
            score_ms=now - 0.25,
            now_ms=now,
            expires_ms=60_000,
        )
        assert await _state(redis, queue, job_id) == await _state(redis, f"{queue}-script", f"{job_id}-s")
    await redis.set(keys.ready_key(queue, 0), "not a sorted set")
    with pytest.raises(redis_exceptions.ResponseError, match="WRONGTYPE"):
        await lane.call(FreshEnqueue(queue).command("x", payload, now, 60_000), None, FreshEnqueue.REPLIES)
    assert await lane.call(packed("PING")) == b"PONG"
    await lane.close()


def test_a_templates_fixed_arguments_keep_their_percent_signs() -> None:
    assert template("SET", "100%d", SLOT) % (3, b"a%b") == packed("SET", "100%d", b"a%b")


@pytest.fixture
def debug_server() -> RedisServer:
    with RedisServer(extra_args=("--enable-debug-command", "yes")) as server:
        yield server  # type: ignore[misc]


async def test_calls_in_flight_when_redis_stalls_end_at_their_deadline_and_the_lane_goes_on(
    debug_server: RedisServer,
) -> None:
    client = redis.asyncio.Redis.from_url(debug_server.url)
    lane = Lane(client.connection_pool)
    ping = packed("PING")
    loop = asyncio.get_running_loop()
    try:
        assert await lane.call(ping, loop.time() + 5) in (b"PONG", "PONG", True)
        stall = asyncio.ensure_future(client.execute_command("DEBUG", "SLEEP", "2"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(lane.call(ping, loop.time() + 0.3) for _ in range(3)), return_exceptions=True
        )
        waited = time.monotonic() - started
        assert all(isinstance(outcome, TimeoutError) for outcome in outcomes), outcomes
        assert waited < 1.5  # at the deadline, not when Redis wakes (2 s)
        await stall
        # Later calls get fresh connections; one with a far deadline outlives a short stall.
        assert await lane.call(ping, loop.time() + 5) in (b"PONG", "PONG", True)
        stall = asyncio.ensure_future(client.execute_command("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.1)
        assert await lane.call(ping, loop.time() + 5) in (b"PONG", "PONG", True)
        await stall
    finally:
        await lane.close()
        await client.aclose()


async def test_a_cancelled_caller_leaves_the_lane_whole(debug_server: RedisServer) -> None:
    """A caller cancelled mid-call (its request ended) drops that connection; the lane keeps its size and works."""
    client = redis.asyncio.Redis.from_url(debug_server.url)
    lane = Lane(client.connection_pool, size=2)
    ping = packed("PING")
    loop = asyncio.get_running_loop()
    try:
        stall = asyncio.ensure_future(client.execute_command("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.1)
        callers = [asyncio.ensure_future(lane.call(ping, loop.time() + 5)) for _ in range(2)]
        await asyncio.sleep(0.1)  # both sent, waiting for Redis
        assert await lane.call(ping, loop.time() + 5) is NOT_ANSWERED  # both connections busy
        for caller in callers:
            caller.cancel()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results)
        await stall
        answers = await asyncio.gather(*(lane.call(ping, loop.time() + 5) for _ in range(2)))
        assert all(answer in (b"PONG", "PONG", True) for answer in answers)
    finally:
        await lane.close()
        await client.aclose()
