"""Jobs by state, a page at a time, with a cost bounded per page view whatever the queue's length.

The queue is a sorted set by run-at time, so due jobs hold the ranks ``[0, due)`` and deferred ones ``[due, n)``:
a page is a range read by rank (O(log n) to reach), never a scan. Only the shown rows' payloads are read, and only
their first bytes. A task filter has to look at payloads, so a filtered page looks at no more than
``FILTER_BUDGET`` entries and says where it stopped; the next page goes on from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from arq.connections import ArqRedis

from .. import keys
from ..failed import FailedJob, FailedStore
from ..records import JobStatus
from ..stats import SCAN_LIMIT
from . import _records as records

PAGE_SIZE = 50
FILTER_BUDGET = 2_000  # entries a filtered page view looks at, at most
CHUNK = 200  # entries read per round trip
ROW_PEEK_BYTES = 4_096  # of a shown row's payload: its task and enqueue time
FILTER_PEEK_BYTES = 256  # of a payload looked at for a task filter: its task name


class State(StrEnum):
    """The job lists a queue's page shows: the package's JobStatus values (one spelling everywhere)."""

    queued = JobStatus.queued.value
    deferred = JobStatus.deferred.value
    in_progress = JobStatus.in_progress.value
    complete = JobStatus.complete.value
    failed = JobStatus.failed.value
    aborted = JobStatus.aborted.value  # the failed store's records of reason "aborted"


@dataclass
class Row:
    job_id: str
    task: str | None
    at_ms: float | None  # run-at (queued, deferred, in progress) or finish time (complete, failed)
    enqueued_ms: int | None = None
    tries: int | None = None
    note: str | None = None  # corrupt, expired, the error of a failed job
    queue: str | None = None  # of a failed job


@dataclass
class Page:
    queue: str | None  # None: the failed store across queues
    state: State
    task: str | None
    start: int
    rows: list[Row] = field(default_factory=list)
    total: int | None = (
        None  # entries in this state's range (before the task filter); running ones count as due
    )
    count: int | None = None  # what the pager shows: ``total``, or the ready count for "queued"
    next_start: int | None = None
    examined: int = 0  # entries looked at for this page
    budget_spent: bool = False  # a filtered page stopped at FILTER_BUDGET entries


async def page(
    redis: ArqRedis, store: FailedStore, queue: str, state: State, *, start: int = 0, task: str | None = None
) -> Page:
    """The page of ``state`` jobs of ``queue`` that begins at position ``start`` of that state's list."""
    start = max(start, 0)
    result = Page(queue=queue, state=state, task=task or None, start=start)
    if state in (State.queued, State.deferred):
        await _ranked(redis, result)
    elif state is State.in_progress:
        await _running(redis, result)
    elif state is State.complete:
        await _complete(redis, result)
    elif state is State.aborted:
        await _failed(store, result, reason=JobStatus.aborted.value)
    else:
        await _failed(store, result)
    return result


async def failed_page(
    store: FailedStore, queue: str | None, *, start: int = 0, task: str | None = None
) -> Page:
    """The failed store, newest first: every queue's records or one queue's, optionally one task's."""
    result = Page(queue=queue, state=State.failed, task=task or None, start=max(start, 0))
    await _failed(store, result)
    return result


async def _ranked(redis: ArqRedis, page: Page) -> None:
    queue_key = keys.queue_key(page.queue or "")
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(queue_key, "-inf", now_ms)
        pipe.zcard(queue_key)
        due, size = await pipe.execute()
    low, high = (0, int(due)) if page.state is State.queued else (int(due), int(size))
    page.total = high - low
    skip_running = page.state is State.queued
    # Unfiltered, running jobs at the front of the due range are skipped: at most SCAN_LIMIT of them.
    budget = FILTER_BUDGET if page.task else PAGE_SIZE + SCAN_LIMIT
    position = page.start
    found: list[tuple[str, float]] = []
    while len(found) < PAGE_SIZE and position < page.total and page.examined < budget:
        want = CHUNK if page.task else PAGE_SIZE - len(found)
        count = min(want, page.total - position, budget - page.examined)
        entries = await redis.zrange(queue_key, low + position, low + position + count - 1, withscores=True)
        if not entries:
            break
        ids = [records.text(member) or "" for member, _ in entries]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(keys.in_progress_key(job_id))
                if page.task:
                    pipe.getrange(keys.job_key(job_id), 0, FILTER_PEEK_BYTES - 1)
            replies = await pipe.execute()
        step = 2 if page.task else 1
        for index, (job_id, (_, score)) in enumerate(zip(ids, entries, strict=True)):
            position += 1
            page.examined += 1
            if skip_running and replies[step * index]:
                continue  # a running job stays in the queue's set: it is listed under "in progress"
            if page.task and not _task_is(replies[step * index + 1], FILTER_PEEK_BYTES, page.task):
                continue
            found.append((job_id, float(score)))
            if len(found) >= PAGE_SIZE:
                break
    page.rows = await _rows(redis, found, keys.job_key)
    _finish(page, position)


def _task_is(raw: bytes | None, peeked: int, task: str) -> bool:
    seen = records.peek(raw, complete=len(raw or b"") < peeked)
    return seen is not None and seen.task == task


async def _rows(redis: ArqRedis, found: list[tuple[str, float]], key: Callable[[str], str]) -> list[Row]:
    """The shown rows, from the first bytes of each job's payload (or result): one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, _ in found:
            pipe.getrange(key(job_id), 0, ROW_PEEK_BYTES - 1)
        raws = await pipe.execute() if found else []
    return [
        _row(job_id, at_ms, records.peek(raw, complete=len(raw or b"") < ROW_PEEK_BYTES))
        for (job_id, at_ms), raw in zip(found, raws, strict=True)
    ]


def _finish(page: Page, position: int, *, filtered: bool | None = None) -> None:
    if position < (page.total or 0):
        page.next_start = position
    filtered = bool(page.task) if filtered is None else filtered
    page.budget_spent = filtered and page.examined >= FILTER_BUDGET and page.next_start is not None


async def _running(redis: ArqRedis, page: Page) -> None:
    """Running jobs sit at the front of the due range (workers take the oldest first): look at the first
    ``SCAN_LIMIT`` due entries, as the counts do."""
    queue_key = keys.queue_key(page.queue or "")
    now_ms = int(time.time() * 1000)
    entries = await redis.zrangebyscore(queue_key, "-inf", now_ms, start=0, num=SCAN_LIMIT, withscores=True)
    ids = [records.text(member) or "" for member, _ in entries]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(keys.in_progress_key(job_id))
        running = await pipe.execute()
    found = [
        (job_id, float(score)) for job_id, (_, score), on in zip(ids, entries, running, strict=True) if on
    ]
    page.total = len(found)
    page.examined = len(ids)
    shown = found[page.start : page.start + PAGE_SIZE * 4]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, _ in shown:
            pipe.getrange(keys.job_key(job_id), 0, ROW_PEEK_BYTES - 1)
            pipe.get(keys.retry_key(job_id))
        replies = await pipe.execute()
    for index, (job_id, score) in enumerate(shown):
        raw, tries = replies[2 * index], replies[2 * index + 1]
        seen = records.peek(raw, complete=len(raw or b"") < ROW_PEEK_BYTES)
        if page.task and (seen is None or seen.task != page.task):
            continue
        row = _row(job_id, score, seen)
        row.tries = records.integer(records.text(tries))
        page.rows.append(row)
        if len(page.rows) >= PAGE_SIZE:
            break
    if page.start + len(shown) < len(found):
        page.next_start = page.start + len(shown)


async def _complete(redis: ArqRedis, page: Page) -> None:
    """The newest completed jobs first, from the capped index the engine keeps (``timeline.record``)."""
    index = keys.completed_key(page.queue or "")
    page.total = int(await redis.zcard(index))
    position = page.start
    budget = FILTER_BUDGET if page.task else PAGE_SIZE
    found: list[tuple[str, float]] = []
    while len(found) < PAGE_SIZE and position < page.total and page.examined < budget:
        count = min(CHUNK if page.task else PAGE_SIZE, page.total - position, budget - page.examined)
        entries = await redis.zrevrange(index, position, position + count - 1, withscores=True)
        if not entries:
            break
        ids = [records.text(member) or "" for member, _ in entries]
        raws: list[bytes | None] = [None] * len(ids)
        if page.task:
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.getrange(keys.result_key(job_id), 0, FILTER_PEEK_BYTES - 1)
                raws = await pipe.execute()
        for job_id, (_, score), raw in zip(ids, entries, raws, strict=True):
            position += 1
            page.examined += 1
            if page.task and not _task_is(raw, FILTER_PEEK_BYTES, page.task):
                continue
            found.append((job_id, float(score)))
            if len(found) >= PAGE_SIZE:
                break
    page.rows = await _rows(redis, found, keys.result_key)
    for row in page.rows:
        if row.note == "payload expired":
            row.note = "result expired"
    _finish(page, position)


async def _failed(store: FailedStore, page: Page, reason: str | None = None) -> None:
    """The queue's failure records, newest first, through its index in the failed store; with ``reason``, only
    those (looked for like a task filter: at most FILTER_BUDGET records per page)."""
    page.total = await store.count(page.queue)
    position = page.start
    filtered = bool(page.task or reason)
    budget = FILTER_BUDGET if filtered else PAGE_SIZE
    while len(page.rows) < PAGE_SIZE and position < page.total and page.examined < budget:
        count = min(CHUNK, page.total - position, budget - page.examined)
        ids = await store.ids(position, count, queue=page.queue)
        if not ids:
            break
        raws = await store.redis.mget([keys.failed_key(job_id) for job_id in ids])
        for job_id, raw in zip(ids, raws, strict=True):
            position += 1
            page.examined += 1
            failure = records.failed_job(raw)
            if page.task and (failure is None or failure.task != page.task):
                continue
            if reason and (failure is None or failure.reason != reason):
                continue
            page.rows.append(failed_row(job_id, raw, failure))
            if len(page.rows) >= PAGE_SIZE:
                break
    _finish(page, position, filtered=filtered)


def failed_row(job_id: str, raw: bytes | None, failure: FailedJob | None) -> Row:
    if failure is None:
        note = (
            "record gone (retried or forgotten)" if raw is None else f"corrupt record: {records.preview(raw)}"
        )
        return Row(job_id=job_id, task=None, at_ms=None, note=note)
    return Row(
        job_id=job_id,
        task=failure.task,
        at_ms=records.iso_to_ms(failure.failed_at),
        enqueued_ms=records.iso_to_ms(failure.enqueued_at),
        tries=failure.tries,
        note=f"{failure.reason}: {failure.error_type}: {failure.message}",
        queue=failure.queue,
    )


def _row(job_id: str, score: float, seen: records.Peek | None) -> Row:
    if seen is None:
        return Row(job_id=job_id, task=None, at_ms=score, note="payload expired")
    return Row(
        job_id=job_id,
        task=seen.task,
        at_ms=score,
        enqueued_ms=seen.enqueued_ms,
        note="corrupt payload" if seen.corrupt else None,
    )
