"""One try of one job: arguments rebuilt from JSON, the timeout, the retry decision, the job_* log events.

This is the coroutine arq's worker calls for every task (``functions``), so it behaves the same under
``python -m scalr_queue.worker``, under plain ``python -m arq`` and in sync mode. A try that raises (or runs
past its timeout) becomes arq's ``Retry`` with the task's backoff until its tries run out; the last failure is
kept as the real exception and goes to the failed store.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from arq.typing import WorkerCoroutine
from arq.worker import Retry

from . import keys, wire
from .exceptions import JobTimeoutError, NonRetryableError, SerializationError, TaskArgumentsError
from .failed import FailedJob, FailedStore, FailureReason, iso_ms, now_iso
from .logs import get_logger
from .retries import Backoff, retry_deadline_ms
from .tasks import Task

STATE_KEY = "scalr_queue"

log = get_logger("scalr_queue.worker")

# Errors that may pass if the job is tried again; any other reason fails the job at once.
RETRYABLE = frozenset({FailureReason.raised, FailureReason.timed_out})


@dataclass(frozen=True)
class JobDefaults:
    """The worker-wide values a task falls back to."""

    timeout_s: float
    max_tries: int
    backoff: Backoff


@dataclass
class WorkerState:
    """What one worker process knows about itself; kept in arq's ``ctx`` and reported by the heartbeat."""

    worker_id: str
    queue: str
    tasks: list[str]
    running: dict[str, str] = field(default_factory=dict)  # job id -> task name
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    started_at: float = field(default_factory=time.time)
    failed_store: FailedStore | None = None
    # Set by scalr_queue's Worker, which writes these records while it finishes the job.
    engine_records_failures: bool = False
    pending_failures: dict[str, FailedJob] = field(default_factory=dict)


class ArgumentsRejectedError(TaskArgumentsError, NonRetryableError):
    """The worker could not rebuild the job's arguments for the task's signature: no try can succeed."""


class ResultNotSerializableError(SerializationError, NonRetryableError):
    """The task returned something that cannot be stored as JSON."""


class NoTriesLeftError(NonRetryableError):
    """The task raised ``Retry`` on its last try."""


def _classify(
    exc: Exception, timed_out: bool, task: Task[..., Any], timeout_s: float
) -> tuple[BaseException, FailureReason]:
    """The error to keep and why the try failed."""
    if timed_out:
        return JobTimeoutError(
            f"task {task.name!r} ran longer than its {timeout_s:g} s timeout"
        ), FailureReason.timed_out
    if isinstance(exc, ArgumentsRejectedError):
        return exc, FailureReason.arguments_rejected
    if isinstance(exc, ResultNotSerializableError):
        return exc, FailureReason.result_not_serializable
    if isinstance(exc, NoTriesLeftError):
        return exc, FailureReason.max_tries_exceeded
    if isinstance(exc, NonRetryableError):
        return exc, FailureReason.non_retryable
    return exc, FailureReason.raised


def job_coroutine(task: Task[..., Any], defaults: JobDefaults) -> WorkerCoroutine:
    """The coroutine registered with arq for ``task``."""
    timeout_s = task.options.timeout_s or defaults.timeout_s
    max_tries = task.options.max_tries or defaults.max_tries
    backoff = task.options.backoff or defaults.backoff

    async def run_job(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        state: WorkerState | None = ctx.get(STATE_KEY)
        job_id = str(ctx.get("job_id", "?"))
        job_try = int(ctx.get("job_try") or 1)
        queue = keys.queue_name(state.queue) if state else str(ctx.get("queue", "?"))
        enqueued: datetime | None = ctx.get("enqueue_time")
        enqueue_ms = int(enqueued.timestamp() * 1000) if enqueued else int(time.time() * 1000)
        if state:
            state.running[job_id] = task.name
        started = time.perf_counter()
        fields = {"job_id": job_id, "task": task.name, "queue": queue, "try": job_try}
        with structlog.contextvars.bound_contextvars(**fields):
            log.info("job_started")
            deadline: asyncio.Timeout | None = None
            try:
                if args:
                    raise ArgumentsRejectedError(
                        f"task {task.name!r} got {len(args)} positional argument(s); scalr_queue passes "
                        f"keyword arguments only: {task.signature.describe()}"
                    )
                try:
                    values = task.signature.validate(kwargs)
                except TaskArgumentsError as exc:
                    raise ArgumentsRejectedError(str(exc)) from None
                async with asyncio.timeout(timeout_s) as deadline:
                    result = await task.fn(ctx, **values)
                try:
                    jsonable = wire.to_jsonable(result, what=f"the result of task {task.name!r}")
                except SerializationError as exc:
                    raise ResultNotSerializableError(str(exc)) from None
            except Retry as exc:
                if job_try < max_tries:
                    if state:
                        state.retried += 1
                    log.info(
                        "job_retrying", duration_ms=_ms_since(started), defer_s=(exc.defer_score or 0) / 1000
                    )
                    raise
                no_tries = NoTriesLeftError(
                    f"task {task.name!r} asked to retry on its last try ({max_tries})"
                )
                await _fail(
                    ctx,
                    state,
                    task,
                    kwargs,
                    fields,
                    enqueue_ms,
                    max_tries,
                    no_tries,
                    no_tries,
                    FailureReason.max_tries_exceeded,
                    started,
                )
                raise no_tries from None
            except asyncio.CancelledError:
                log.warning("job_cancelled", duration_ms=_ms_since(started))
                raise
            except Exception as exc:
                timed_out = isinstance(exc, TimeoutError) and deadline is not None and deadline.expired()
                error, reason = _classify(exc, timed_out, task, timeout_s)
                if reason in RETRYABLE and job_try < max_tries:
                    delay_s = backoff.delay_s(job_try)
                    until_ms = retry_deadline_ms(task.options.retry_until, enqueue_ms)
                    if until_ms is None or time.time() * 1000 + delay_s * 1000 <= until_ms:
                        if state:
                            state.retried += 1
                        log.warning(
                            "job_retrying",
                            duration_ms=_ms_since(started),
                            defer_s=round(delay_s, 3),
                            max_tries=max_tries,
                            error_type=type(error).__name__,
                            error=str(error),
                        )
                        raise Retry(defer=delay_s) from error
                    reason = FailureReason.retry_until_passed
                await _fail(
                    ctx, state, task, kwargs, fields, enqueue_ms, max_tries, error, exc, reason, started
                )
                if error is exc:
                    raise
                raise error from None
            else:
                if state:
                    state.succeeded += 1
                log.info("job_succeeded", duration_ms=_ms_since(started))
                return jsonable
            finally:
                if state:
                    state.running.pop(job_id, None)

    run_job.__qualname__ = run_job.__name__ = task.name
    run_job.__scalr_task__ = task  # type: ignore[attr-defined]
    return cast(WorkerCoroutine, run_job)


async def _fail(
    ctx: dict[str, Any],
    state: WorkerState | None,
    task: Task[..., Any],
    kwargs: dict[str, Any],
    fields: dict[str, Any],
    enqueue_ms: int,
    max_tries: int,
    error: BaseException,
    cause: BaseException,
    reason: FailureReason,
    started: float,
) -> None:
    """Log the final failure and keep its record: the real error, with the traceback of what raised it."""
    if state:
        state.failed += 1
    trace = "".join(traceback.format_exception(cause)) if cause.__traceback__ else None
    log.error(
        "job_failed",
        duration_ms=_ms_since(started),
        reason=reason.value,
        max_tries=max_tries,
        error_type=type(error).__name__,
        error=str(error),
        exception=trace,
    )
    if state is None or state.failed_store is None:
        return  # sync mode: the outcome stays on the handle
    record = FailedJob(
        job_id=fields["job_id"],
        task=task.name,
        kwargs=kwargs,
        queue=fields["queue"],
        tries=fields["try"],
        max_tries=max_tries,
        reason=reason.value,
        error_type=type(error).__name__,
        message=str(error),
        traceback=trace,
        enqueued_at=iso_ms(enqueue_ms),
        failed_at=now_iso(),
        worker_id=state.worker_id,
    )
    if state.engine_records_failures:
        state.pending_failures[record.job_id] = record
        return
    try:
        await state.failed_store.record(record)
    except Exception as exc:  # the job's own outcome still lands in arq's result key
        log.error("failed_record_not_written", job_id=record.job_id, error=str(exc) or type(exc).__name__)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
