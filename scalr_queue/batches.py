"""``batch(calls, then=, catch=)``: many jobs dispatched together, their outcomes kept, callbacks run once.

The batch's state lives in Redis (``keys.batch_key`` and its pending / succeeded / failed sets) and is written
before any of its jobs. Each job's record names its batch; the worker's FINISH script, which ends the job, moves its
id from the pending set to the succeeded or failed set in the same call (no extra round trip, no polling), queues
the held ``catch`` job at the first failure for good and the held ``then`` job when the pending set runs empty.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._backends import BatchPlan, Prepared
from .client import EXPIRES_EXTRA_MS, Client, Job, _shown, default_client
from .exceptions import JobNotFoundError, ResultTimeoutError, TaskArgumentsError
from .records import batch_id_in
from .workflows import Call

__all__ = ["Batch", "BatchResult", "BatchStatus", "batch"]

# Options a batch's jobs may not carry: each gets a fresh random id (so none can collide and stay pending), and
# depends on nothing but the batch.
_JOB_FORBIDDEN = ("_job_id", "_depends_on")
# A callback is queued when the batch says so: it has no run time of its own either.
_CALLBACK_FORBIDDEN = (*_JOB_FORBIDDEN, "_defer_until", "_defer_by")


class BatchStatus(StrEnum):
    """``running``: some job has not ended for good; ``done``: every job has; ``not_found``: no state (never
    created, or expired)."""

    running = "running"
    done = "done"
    not_found = "not_found"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Where a batch's jobs stand: ids, each sorted. A job counts when it ends for good (a retried job is pending
    until its last try)."""

    batch_id: str
    total: int
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    pending: tuple[str, ...]
    then_id: str | None = None
    catch_id: str | None = None

    @property
    def done(self) -> bool:
        """Every job ended (succeeded, or failed for good)."""
        return not self.pending


class Batch:
    """A handle on a batch; ``Batch(batch_id)`` rebuilds one from its id. ``batch()`` fills in ``jobs`` (one per
    call, in order), ``then`` and ``catch`` (the callbacks' Jobs, or None)."""

    __slots__ = ("_client", "batch_id", "catch", "jobs", "then")

    def __init__(self, batch_id: str, *, client: Client | None = None) -> None:
        self.batch_id = batch_id
        self._client = client
        self.jobs: list[Job] = []
        self.then: Job | None = None
        self.catch: Job | None = None

    def __repr__(self) -> str:
        return f"<Batch {self.batch_id}>"

    @property
    def client(self) -> Client:
        return self._client or default_client()

    async def result(self) -> BatchResult:
        """The batch as it stands now (``pending`` empty once it is done). Raises JobNotFoundError if Redis holds
        no state for it (never created, or expired)."""
        state = await self.client.backend.batch_state(self.batch_id)
        if state is None:
            raise JobNotFoundError(f"batch {self.batch_id} has no state in Redis (never created, or expired)")
        total = state.fields.get("total", "")
        return BatchResult(
            batch_id=self.batch_id,
            total=int(total) if total.isdigit() else len(state.pending | state.succeeded | state.failed),
            succeeded=tuple(sorted(state.succeeded)),
            failed=tuple(sorted(state.failed)),
            pending=tuple(sorted(state.pending)),
            then_id=state.fields.get("then") or None,
            catch_id=state.fields.get("catch") or None,
        )

    async def status(self) -> BatchStatus:
        try:
            found = await self.result()
        except JobNotFoundError:
            return BatchStatus.not_found
        return BatchStatus.done if found.done else BatchStatus.running

    async def wait(self, timeout: float | None = None, *, poll_interval: float = 0.5) -> BatchResult:
        """Wait until every job ended and return the final BatchResult; ResultTimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            found = await self.result()
            if found.done:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"batch {self.batch_id}: {len(found.pending)} of {found.total} jobs not ended within {timeout:g} s"
                )
            await asyncio.sleep(
                delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
            )
            delay = min(delay * 2, poll_interval)


def _checked(item: Any, forbidden: tuple[str, ...], what: str) -> Call:
    if not isinstance(item, Call):
        raise TaskArgumentsError(f"batch() takes call(...) descriptions, not {_shown(item)}")
    for option in forbidden:
        if option in item.kwargs:
            raise TaskArgumentsError(f"a batch's {what} cannot take {option}: batch() decides it")
    return item


async def batch(
    calls: Iterable[Call],
    then: Call | None = None,
    catch: Call | None = None,
    *,
    client: Client | None = None,
) -> Batch:
    """Queue ``calls`` together as one batch (one round trip per 1,000 jobs) and return its handle.

    Every job's outcome is recorded in the batch when it ends for good. ``then`` is queued once, when every job has
    ended (succeeded or failed for good); ``catch`` once, at the first job that fails for good (and dropped unqueued
    if none does). Both run with ``ctx["batch_id"]`` set, as do the batch's jobs. Jobs may not name a ``_job_id``
    or ``_depends_on``, nor be of a unique task; the callbacks not a ``_defer_*`` either."""
    members = [_checked(item, _JOB_FORBIDDEN, "jobs") for item in calls]
    if not members:
        raise TaskArgumentsError("batch() needs at least one call(...)")
    client = client or default_client()
    batch_id = os.urandom(16).hex()
    assert batch_id_in(batch_id) == batch_id
    prepared = [await _prepare(client, c, {"batch": batch_id}) for c in members]
    callbacks: list[Prepared | None] = []
    for role, item in (("then", then), ("catch", catch)):
        if item is None:
            callbacks.append(None)
        else:
            checked = _checked(item, _CALLBACK_FORBIDDEN, f"{role} callback")
            callbacks.append(
                await _prepare(client, checked, {"batch_callback": batch_id, "batch_role": role})
            )
    now = int(time.time() * 1000)
    ttl_ms = max(job.expires_ms for job in prepared) + EXPIRES_EXTRA_MS
    plan = BatchPlan(batch_id, prepared, callbacks[0], callbacks[1], now, ttl_ms)
    stored = await client.backend.store_batch(plan)
    handle = Batch(batch_id, client=client)
    found = [client.handle_for(job, done) for job, done in zip(prepared, stored, strict=True)]
    handle.jobs = [job for job in found if job is not None]
    handle.then = client.job(callbacks[0].job_id, callbacks[0].queue) if callbacks[0] else None
    handle.catch = client.job(callbacks[1].job_id, callbacks[1].queue) if callbacks[1] else None
    return handle


async def _prepare(client: Client, item: Call, meta: dict[str, Any]) -> Prepared:
    job = await client.prepare(item.task, dict(item.kwargs), None, meta=meta)
    if job.unique_key is not None:
        raise TaskArgumentsError(
            f"task {job.name!r} is unique: a batch's jobs are not (a duplicate would never end in the batch)"
        )
    return job
