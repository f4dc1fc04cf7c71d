"""Per-minute outcome counts for the dashboard's last-hour chart, and the index of recently completed jobs.

Redis keeps no history of what workers did, and a chart must not scan results. So the engine, as it finishes jobs,
adds to one small hash per queue and minute (``arq:timeline:<queue>:<minute>``, outcome -> count, expiring after
two hours) and to a capped sorted set of completed job ids (``arq:completed:<queue>``). Both ride on the pipeline or
transaction the engine already sends: a few commands, no extra round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from . import keys

BUCKET_S = 60  # one hash per minute
KEEP_S = 2 * 3600  # a bucket outlives the hour the chart shows, so a chart never reads a half-expired hour
CHART_MINUTES = 60
COMPLETED_CAP = 10_000  # completed job ids kept per queue for the dashboard's "complete" list


class Outcome(StrEnum):
    """What a try of a job came to, as the chart counts it."""

    succeeded = "succeeded"  # the job finished with a result
    failed = "failed"  # the job ended for good without success (it is in the failed store)
    retried = "retried"  # the try failed and the job will run again
    released = "released"  # a middleware (or the rollout window) put the job back without using a try


def minute_of(at_s: float) -> int:
    """The bucket number of a moment: whole minutes since the epoch."""
    return int(at_s // BUCKET_S)


async def record(
    target: Redis | Pipeline,
    queue: str,
    outcome: Outcome | str,
    n: int = 1,
    *,
    job_ids: Iterable[str] = (),
    at_s: float | None = None,
) -> None:
    """Count ``n`` tries of ``queue`` that came to ``outcome`` this minute; with ``job_ids``, index completions.

    On a pipeline (or a MULTI/EXEC transaction) the commands are only queued: they go with its ``execute()``.
    On a client they are sent at once, in one round trip. ``job_ids`` of succeeded jobs go into the capped
    ``arq:completed:<queue>`` index that the dashboard pages through.
    """
    outcome = Outcome(outcome)
    now_s = time.time() if at_s is None else at_s
    if isinstance(target, Pipeline):
        _queue_commands(target, queue, outcome, n, list(job_ids), now_s)
        return
    async with target.pipeline(transaction=False) as pipe:
        _queue_commands(pipe, queue, outcome, n, list(job_ids), now_s)
        await pipe.execute()


def _queue_commands(
    pipe: Pipeline, queue: str, outcome: Outcome, n: int, job_ids: Sequence[str], now_s: float
) -> None:
    bucket = keys.timeline_key(queue, minute_of(now_s))
    pipe.hincrby(bucket, outcome.value, n)
    pipe.expire(bucket, KEEP_S)
    if outcome is Outcome.succeeded and job_ids:
        completed = keys.completed_key(queue)
        finished_ms = int(now_s * 1000)
        pipe.zadd(completed, dict.fromkeys(job_ids, finished_ms))
        pipe.zremrangebyrank(completed, 0, -(COMPLETED_CAP + 1))


@dataclass(frozen=True)
class Minute:
    """One bar of the chart: what the queue's tries came to in the minute starting at ``start_s``."""

    start_s: int
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0


async def last_hour(
    redis: Redis, queues: Sequence[str], *, minutes: int = CHART_MINUTES, now_s: float | None = None
) -> list[Minute]:
    """The last ``minutes`` minutes, oldest first, summed over ``queues``; one round trip.

    Counts come from Redis, so they are untrusted: anything that is not a whole number counts as 0.
    """
    current = minute_of(time.time() if now_s is None else now_s)
    wanted = list(range(current - minutes + 1, current + 1))
    if not queues:
        return [Minute(start_s=m * BUCKET_S) for m in wanted]
    async with redis.pipeline(transaction=False) as pipe:
        for minute in wanted:
            for queue in queues:
                pipe.hgetall(keys.timeline_key(queue, minute))
        replies = await pipe.execute()
    out = []
    for index, minute in enumerate(wanted):
        totals = dict.fromkeys(Outcome, 0)
        for counts in replies[index * len(queues) : (index + 1) * len(queues)]:
            for field, value in (counts or {}).items():
                outcome = _outcome(field)
                if outcome is not None:
                    totals[outcome] += _count(value)
        out.append(
            Minute(
                start_s=minute * BUCKET_S,
                succeeded=totals[Outcome.succeeded],
                failed=totals[Outcome.failed],
                retried=totals[Outcome.retried],
                released=totals[Outcome.released],
            )
        )
    return out


def _outcome(field: bytes | str) -> Outcome | None:
    name = field.decode(errors="replace") if isinstance(field, bytes) else field
    try:
        return Outcome(name)
    except ValueError:
        return None


def _count(value: bytes | str | int) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        return 0
    return max(count, 0)
