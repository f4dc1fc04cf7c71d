"""Writing outcomes: every job that ends while a write is in flight rides on the next one, one script call.

What each outcome writes is arq's data model: a result record and cleanup of the job's keys, or a new score for a
retry, plus our additions (the failure record, a try handed back, a wake-up token when a job is due first). The
write is retried through a Redis outage (or a full Redis, which finishing itself relieves) until the worker's
patience, or its stop deadline, runs out; then the job is left to its lease, to run again elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from .. import keys, timeline
from .._lane import Lane, run_script
from .._lua import scripts
from ..connection import describe_error, transient
from ..failed import FailedJob, failure_record
from ..logs import get_logger
from ..outcome import Failed, FailureReason, Outcome, Released, ReleaseReason, RetryIn, Succeeded
from ..records import ABORTED_MESSAGE, ResultRecord, batch_id_in
from ..runner import Attempt, now_ms

log = get_logger("scalr_queue.worker")

PATIENCE_S = 60.0  # how long a finish waits for Redis before leaving the job to its lease
_BACKOFF_START_S, _BACKOFF_CAP_S = 0.1, 2.0


class FinishNotWritten(Exception):
    """Redis did not take the finish within the worker's patience; the job's lease will run out."""


@dataclass(slots=True)
class Write:
    """One job's part of a group: an op of the FINISH script and its arguments."""

    op: str  # S succeeded, F failed, R retry, P put back, Q put back behind a lock, T taken back by its worker
    raw_id: bytes
    data: bytes | int | str = ""
    number: int | str = ""  # result ttl (ms) for S/F, the try count to record for R/P/Q/T
    record: str = ""  # the failure record (F), what put the job back (P/Q)
    record_id: str = ""
    counter: int = 0  # the try counter as this worker's claim left it
    unique: str = ""  # the unique job's key, freed when the job ends (S/F) if it still holds this job
    failure: FailedJob | None = None  # F: the record, for the task's on_failure hook once it is written
    ready: str = ""  # the job's priority index (set by the Finisher from the queue and the job's priority)
    batch: str = ""  # S/F: the batch the job belongs to ('' none), whose state FINISH updates

    def args(self) -> list[bytes | int | str]:
        return [
            self.op,
            self.raw_id,
            self.data,
            self.number,
            self.record,
            self.record_id,
            self.counter,
            self.unique,
            self.ready,
            self.batch,
        ]


@dataclass(frozen=True, slots=True)
class WriteContext:
    queue_key: str
    worker_id: str
    lease_ms: int
    # the worker's keep_result, for a job that failed before its task was known (None: forever)
    keep_result_ms: int | None = 0


def write_for(attempt: Attempt, outcome: Outcome, ctx: WriteContext) -> Write:
    """What ``outcome`` writes for ``attempt``: the single place outcomes become Redis writes."""
    write = _write_for(attempt, outcome, ctx)
    write.ready = keys.ready_key(ctx.queue_key, priority_of(attempt))
    if write.op in ("S", "F"):
        write.batch = batch_of(attempt)
    return write


def _write_for(attempt: Attempt, outcome: Outcome, ctx: WriteContext) -> Write:
    if isinstance(outcome, RetryIn):
        due = now_ms() + int(outcome.seconds * 1000)
        return Write("R", attempt.raw_id, due, attempt.job_try, counter=attempt.counter)
    if isinstance(outcome, Released):
        return _released(attempt, outcome)
    plan = attempt.plan
    unique = unique_key_of(attempt)
    keep_ms = plan.keep_result_ms if plan is not None else ctx.keep_result_ms
    if isinstance(outcome, Succeeded):
        data = _result(attempt, ctx, True, outcome.result) if keep_ms != 0 else b""
        return Write(
            "S",
            attempt.raw_id,
            data,
            "" if keep_ms is None else keep_ms,
            counter=attempt.counter,
            unique=unique,
        )
    failed = (
        outcome
        if isinstance(outcome, Failed)
        else Failed(FailureReason.aborted, asyncio.CancelledError(ABORTED_MESSAGE))
    )
    error = failed.error
    record = failure_record(
        job_id=attempt.job_id,
        task=attempt.task_name,
        kwargs=attempt.record.kwargs if attempt.record else {},
        queue=ctx.queue_key,
        tries=attempt.job_try,
        max_tries=plan.max_tries if plan else None,
        reason=failed.reason,
        error=error,
        traceback=failed.traceback,
        enqueue_ms=attempt.record.enqueue_ms if attempt.record else None,
        worker_id=ctx.worker_id,
        extra=_extra(attempt, failed),
    )
    data = _result(attempt, ctx, False, error) if keep_ms != 0 else b""
    return Write(
        "F",
        attempt.raw_id,
        data,
        "" if keep_ms is None else keep_ms,
        record.to_json(),
        attempt.job_id,
        attempt.counter,
        unique,
        record,
    )


def _released(attempt: Attempt, outcome: Released) -> Write:
    """Back in the queue, the try handed back; what put it back is kept for ``scalr-queue job``. Behind a
    WithoutOverlapping lock, FINISH itself decides when it is due (op Q), from the lock as it is then."""
    why = {"reason": str(outcome.why), "retry_in_s": round(outcome.seconds, 3)}
    if outcome.key is not None:
        why["key"] = outcome.key
    lock = outcome.key if outcome.why == ReleaseReason.overlapping else None
    return Write(
        "P" if lock is None else "Q",
        attempt.raw_id,
        now_ms() + int(outcome.seconds * 1000) if lock is None else lock,
        attempt.job_try - 1,
        json.dumps(why),
        attempt.job_id,
        attempt.counter,
    )


def priority_of(attempt: Attempt) -> int:
    """The job's priority as its record names it (read from Redis: anything but 0..9 is 0)."""
    priority = attempt.record.meta.get("priority") if attempt.record else None
    return priority if type(priority) is int and priority in keys.PRIORITIES else 0


def batch_of(attempt: Attempt) -> str:
    """The batch the job's record names as the one it belongs to ('' none, or not a batch id)."""
    return batch_id_in(attempt.record.meta.get("batch") if attempt.record else None) or ""


def unique_key_of(attempt: Attempt) -> str:
    """The unique key the job's record names (read from Redis: only ever one of ours; the script frees it only if
    it still holds this job's id)."""
    unique = attempt.record.meta.get("unique") if attempt.record else None
    return unique if isinstance(unique, str) and unique.startswith(keys.UNIQUE_PREFIX) else ""


def taken_back(running: Attempt, claimed_counter: int, ctx: WriteContext) -> Write:
    """A job its own worker runs already, claimed again after an outage: keep the lease, hand the try back (the
    counter goes back to the running try's claim, which is what proves the job is this worker's)."""
    return Write("T", running.raw_id, ctx.lease_ms, running.counter, counter=claimed_counter)


def _result(attempt: Attempt, ctx: WriteContext, success: bool, result: object) -> bytes:
    record = attempt.record
    return ResultRecord(
        job_id=attempt.job_id,
        task=attempt.task_name,
        success=success,
        result=result,
        job_try=attempt.job_try,
        enqueue_ms=record.enqueue_ms if record else 0,
        start_ms=attempt.started_ms or attempt.claimed_ms,
        finish_ms=attempt.finished_ms or now_ms(),
        queue=ctx.queue_key,
        kwargs=record.kwargs if record else {},
        args=record.args if record else (),
    ).encode()


def _extra(attempt: Attempt, failed: Failed) -> dict[str, object]:
    if failed.reason is FailureReason.undecodable_payload:
        from ..records import preview

        return {"payload_preview": preview(attempt.payload), "raw_id": repr(attempt.raw_id)}
    return {}


class Finisher:
    """Collects writes and sends them in groups, one FINISH call per group."""

    def __init__(
        self,
        redis: Redis,
        ctx: WriteContext,
        *,
        failed_max_age_s: float,
        failed_max_count: int,
        give_up_at: Callable[[], float | None],
        lane: Lane | None = None,
    ) -> None:
        self.redis = redis
        self.lane = lane
        self.ctx = ctx
        self._keys = [
            keys.queue_key(ctx.queue_key),
            keys.ABORT_KEY,
            keys.FAILED_KEY,
            keys.notify_key(ctx.queue_key),
            keys.failed_queue_key(ctx.queue_key),
            "",  # this minute's timeline bucket, set per call
            keys.completed_key(ctx.queue_key),
            keys.DEPENDENCY_FAILED_KEY,
        ]
        self._head: list[bytes | int | str] = [
            0,
            ctx.worker_id,
            int(failed_max_age_s * 1000),
            failed_max_count,
            keys.NOTIFY_CAP,
            keys.IN_PROGRESS_PREFIX,
            keys.JOB_PREFIX,
            keys.RETRY_PREFIX,
            keys.RESULT_PREFIX,
            keys.FAILED_RECORD_PREFIX,
            keys.FAILED_QUEUE_PREFIX,
            timeline.KEEP_S,
            timeline.COMPLETED_CAP,
            keys.RELEASED_PREFIX,
            keys.LOCK_PREFIX,
            keys.LOCK_WAITERS_PREFIX,
            keys.WAITING_PREFIX,
            keys.DEPENDENTS_PREFIX,
            keys.BATCH_PREFIX,
            keys.BATCH_PENDING_PREFIX,
            keys.BATCH_SUCCEEDED_PREFIX,
            keys.BATCH_FAILED_PREFIX,
        ]
        self._give_up_at = give_up_at  # the stop deadline (monotonic), once the worker is stopping
        self._waiting: list[tuple[Write, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references to tasks
        self.outage_since: float | None = None

    async def write(self, item: Write) -> bool:
        """Write ``item`` with the next group; False if another worker holds the job's lease now."""
        return await self.submit(item)

    def submit(self, item: Write) -> asyncio.Future[bool]:
        """``write`` without a coroutine: the future of ``item``'s write (one task fewer per job)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_groups())
        return future

    async def _write_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                lost = await self._send(group)
            except FinishNotWritten as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for item, future in group:
                    if not future.done():
                        future.set_result(item.raw_id not in lost)

    async def _send(self, group: list[tuple[Write, asyncio.Future[bool]]]) -> set[bytes]:
        args: list[bytes | int | str] = list(self._head)
        for item, _ in group:
            args += item.args()
        started = time.monotonic()
        delay = _BACKOFF_START_S
        while True:
            now = now_ms()
            args[0] = now
            self._keys[5] = keys.timeline_key(self.ctx.queue_key, timeline.minute_of(now / 1000))
            try:
                lost: list[bytes] = await run_script(self.lane, scripts(self.redis).finish, self._keys, args)
            except Exception as exc:
                if not transient(exc):
                    return await self._one_by_one(group, exc)
                if self.outage_since is None:
                    self.outage_since = started
                    log.warning("finish_waiting_for_redis", jobs=len(group), error=describe_error(exc))
                limit = started + PATIENCE_S
                stop = self._give_up_at()
                if stop is not None:
                    limit = min(limit, stop)
                if time.monotonic() + delay > limit:
                    log.error(
                        "finish_not_written",
                        jobs=len(group),
                        error=describe_error(exc),
                        action="left to their leases: they run again elsewhere",
                    )
                    raise FinishNotWritten(describe_error(exc)) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP_S)
                continue
            if self.outage_since is not None:
                log.info(
                    "finish_written_after_outage", waited_s=round(time.monotonic() - self.outage_since, 2)
                )
                self.outage_since = None
            return set(lost)

    async def _one_by_one(
        self, group: list[tuple[Write, asyncio.Future[bool]]], exc: Exception
    ) -> set[bytes]:
        """Redis refused the group's write (not an outage: a key of the wrong type, a refused command). Write each
        job alone, so one job's bad key does not take the others down; a job that still fails is left to its
        lease."""
        if len(group) == 1:
            log.error(
                "finish_refused",
                job_id=group[0][0].raw_id.decode(errors="backslashreplace"),
                error=describe_error(exc),
                action="left to its lease",
            )
            raise FinishNotWritten(describe_error(exc)) from None
        lost: set[bytes] = set()
        for item in group:
            try:
                lost |= await self._send([item])
            except FinishNotWritten:
                if not item[1].done():
                    item[1].set_exception(FinishNotWritten(describe_error(exc)))
        return lost
