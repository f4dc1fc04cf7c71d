"""Per-minute outcome counts and the completed-job index, written on a pipeline or a client and read back."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis as AsyncRedis

from scalr_queue import keys, timeline


async def test_record_on_a_client_counts_this_minute(redis: AsyncRedis, queue: str) -> None:
    """Recorded outcomes land in this minute's bucket, which expires after KEEP_S."""
    await timeline.record(redis, queue, "succeeded", 3)
    await timeline.record(redis, queue, timeline.Outcome.failed)
    minutes = await timeline.last_hour(redis, [queue])
    assert len(minutes) == timeline.CHART_MINUTES
    assert (minutes[-1].succeeded, minutes[-1].failed, minutes[-1].retried) == (3, 1, 0)
    bucket = keys.timeline_key(queue, timeline.minute_of(time.time()))
    assert 0 < await redis.ttl(bucket) <= timeline.KEEP_S


async def test_record_on_a_pipeline_waits_for_execute(redis: AsyncRedis, queue: str) -> None:
    """On a transaction the commands are only queued: nothing is counted until it executes."""
    async with redis.pipeline(transaction=True) as pipe:
        await timeline.record(pipe, queue, "retried", 2)
        assert (await timeline.last_hour(redis, [queue]))[-1].retried == 0
        await pipe.execute()
    assert (await timeline.last_hour(redis, [queue]))[-1].retried == 2


async def test_last_hour_sums_queues_and_places_minutes(redis: AsyncRedis, queue: str) -> None:
    """Buckets of several queues add up, each in its own minute, oldest first; older ones fall out."""
    now = time.time()
    other = queue + "-other"
    await timeline.record(redis, queue, "succeeded", 5, at_s=now - 600)
    await timeline.record(redis, other, "succeeded", 2, at_s=now - 600)
    await timeline.record(redis, queue, "succeeded", 9, at_s=now - 4000)  # outside the hour
    minutes = await timeline.last_hour(redis, [queue, other], now_s=now)
    by_start = {m.start_s: m.succeeded for m in minutes}
    assert by_start[timeline.minute_of(now - 600) * 60] == 7
    assert sum(by_start.values()) == 7
    assert [m.start_s for m in minutes] == sorted(m.start_s for m in minutes)


async def test_corrupt_counts_read_as_zero(redis: AsyncRedis, queue: str) -> None:
    """A count that is not a whole number, or a field that is no outcome, reads as 0."""
    bucket = keys.timeline_key(queue, timeline.minute_of(time.time()))
    await redis.hset(bucket, mapping={"succeeded": "many", "failed": "-4", "retried": "2", "odd": "5"})
    last = (await timeline.last_hour(redis, [queue]))[-1]
    assert (last.succeeded, last.failed, last.retried) == (0, 0, 2)


async def test_unknown_outcome_is_refused(redis: AsyncRedis, queue: str) -> None:
    """An outcome the chart does not know is a ValueError, not a new field."""
    with pytest.raises(ValueError, match="exploded"):
        await timeline.record(redis, queue, "exploded")


async def test_completed_index_is_capped(
    redis: AsyncRedis, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Succeeded job ids go into the completed index, newest kept, at most COMPLETED_CAP of them."""
    monkeypatch.setattr(timeline, "COMPLETED_CAP", 5)
    now = time.time()
    for i in range(8):
        await timeline.record(redis, queue, "succeeded", job_ids=[f"job-{i}"], at_s=now + i)
    await timeline.record(redis, queue, "failed", job_ids=["not-complete"])
    members = [m.decode() for m in await redis.zrange(keys.completed_key(queue), 0, -1)]
    assert members == [f"job-{i}" for i in range(3, 8)]
