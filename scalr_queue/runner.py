"""The runner: every try of a job goes decode → middleware → task → outcome, and nothing else decides.

``prepare`` looks at a claimed job before anything runs (its record, its task, its tries) and may decide the
outcome at once: undecodable, expired, aborted, out of tries, or a task this worker does not know (put back for
the rollout window). ``run`` calls the task through the middleware pipeline under its timeout and turns what
happened into one typed outcome (``outcome.py``). The engine writes outcomes; it never inspects exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from arq.utils import args_to_string, truncate
from arq.worker import Retry, RetryJob

from . import tracing, wire
from .exceptions import (
    ArgumentsRejectedError,
    DependencyFailedError,
    JobTimeoutError,
    NonRetryableError,
    ResultNotSerializableError,
    SerializationError,
    TaskArgumentsError,
    UndecodableJobError,
)
from .logs import get_logger
from .outcome import Aborted, Failed, FailureReason, Outcome, Released, ReleaseReason, RetryIn, Succeeded
from .records import JobRecord, batch_id_in
from .retries import Backoff, retry_deadline_ms
from .tasks import Task

log = get_logger("scalr_queue.worker")
arq_log = logging.getLogger("arq.worker")  # arq's per-job lines, for those who still read them

ROLLOUT_RECHECK_S = 1.0  # how soon a job of a task this worker does not know is offered again, in the window

Hook = Callable[[dict[str, Any]], Awaitable[Any]]
CallNext = Callable[[], Awaitable[Any]]


class Middleware(Protocol):
    """Wraps the task call: code before and after ``await call_next()``, or not calling it at all."""

    async def __call__(self, job: JobInfo, call_next: CallNext) -> Any: ...


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What middleware sees of the try being run."""

    job_id: str
    task: str
    queue: str
    job_try: int
    kwargs: Mapping[str, Any]
    enqueue_time: datetime
    ctx: dict[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return self.job_id


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """How one task runs on this worker; the only place its tries, timeout and result keeping are decided."""

    task: Task[..., Any]
    timeout_s: float
    max_tries: int
    backoff: Backoff
    keep_result_ms: int | None  # None: kept forever; 0: not kept
    middleware: tuple[Middleware, ...] = ()
    is_cron: bool = False


def plan_for(
    task: Task[..., Any],
    *,
    timeout_s: float,
    max_tries: int,
    keep_result_s: float,
    keep_result_forever: bool,
    backoff: Backoff,
    is_cron: bool = False,
    middleware: Sequence[Middleware] = (),
) -> TaskPlan:
    """A task's plan: its own options where it has them, else the worker's (the arguments)."""
    options = task.options
    if options.keep_result_forever or (options.keep_result_s is None and keep_result_forever):
        keep_ms: int | None = None
    else:
        keep_ms = int((keep_result_s if options.keep_result_s is None else options.keep_result_s) * 1000)
    return TaskPlan(
        task=task,
        timeout_s=options.timeout_s or timeout_s,
        max_tries=options.max_tries or max_tries,
        backoff=options.backoff or backoff,
        keep_result_ms=keep_ms,
        middleware=(*middleware, *options.middleware),
        is_cron=is_cron,
    )


class CancelReason:
    """Why the engine cancelled a running try (set before it cancels)."""

    abort = "abort"
    stop = "stop"


@dataclass(slots=True)
class Attempt:
    """One try of one claimed job, from claim to outcome."""

    job_id: str
    raw_id: bytes
    score: float
    job_try: int
    payload: bytes | None
    claimed_ms: int
    counter: int = 0  # arq's try counter as this worker's claim left it: proof the job is still this worker's
    record: JobRecord | None = None
    plan: TaskPlan | None = None
    outcome: Outcome | None = None
    started_ms: int = 0
    finished_ms: int = 0
    cancel_reason: str | None = None
    running: bool = False  # inside the task call: the only time the engine may cancel it

    @property
    def task_name(self) -> str:
        return self.record.task if self.record else "<unknown>"

    @property
    def ref(self) -> str:
        """arq's name for the try in its log lines: ``<job id>:<task>``, or the cron job's name."""
        if self.plan is not None and self.plan.is_cron:
            return self.task_name
        return f"{self.job_id}:{self.task_name}"


class Runner:
    """Decides what each try of a job became."""

    def __init__(
        self,
        plans: Mapping[str, TaskPlan],
        *,
        queue: str,
        rollout_window_s: float,
        retry_jobs: bool = True,
        middleware: Sequence[Middleware] = (),
        on_job_start: Hook | None = None,
        on_job_end: Hook | None = None,
        log_results: bool = True,
        arq_lines: bool = True,
    ) -> None:
        self.plans = dict(plans)
        self.queue = queue
        self.rollout_window_s = rollout_window_s
        self.retry_jobs = retry_jobs
        self.middleware = tuple(middleware)
        self.on_job_start = on_job_start
        self.on_job_end = on_job_end
        self.log_results = log_results
        self.arq_lines = arq_lines  # arq's own per-job log lines, for those who still read them
        self._bound_log: Any = None

    @property
    def _log(self) -> Any:
        """The worker's logger, bound at the first job (logging is configured by then): the module's lazy proxy
        would bind anew on every call, twice per job."""
        if self._bound_log is None:
            self._bound_log = log.bind()
        return self._bound_log

    # --- before the task runs ------------------------------------------------------------------------------

    def prepare(
        self,
        attempt: Attempt,
        *,
        corrupt: str | None = None,
        aborted: bool = False,
        dependency_failed: bool = False,
    ) -> Attempt:
        """Decode the claimed job and find its task; sets ``attempt.outcome`` when it must not run."""
        if corrupt is not None:
            return self._early(
                attempt, Failed(FailureReason.undecodable_payload, UndecodableJobError(corrupt))
            )
        if not math.isfinite(attempt.score):
            problem = f"its queue score is {attempt.score}, not a time"
            return self._early(
                attempt, Failed(FailureReason.undecodable_payload, UndecodableJobError(problem))
            )
        if attempt.payload is None:
            error = UndecodableJobError("the job's data expired before a worker took it")
            return self._early(attempt, Failed(FailureReason.expired, error))
        try:
            record = attempt.record = JobRecord.decode(attempt.payload)
        except UndecodableJobError as exc:
            return self._early(attempt, Failed(FailureReason.undecodable_payload, exc))
        plan = attempt.plan = self.plans.get(record.task)
        if aborted:
            return self._early(attempt, Aborted())
        if dependency_failed:
            failed = DependencyFailedError("a job it depends on (_depends_on) failed for good")
            return self._early(attempt, Failed(FailureReason.dependency_failed, failed))
        if plan is None:
            left_s = self.rollout_window_s - (time.time() * 1000 - record.enqueue_ms) / 1000
            if left_s > 0:
                return self._early(
                    attempt, Released(min(ROLLOUT_RECHECK_S, left_s), ReleaseReason.unknown_task)
                )
            known = ", ".join(sorted(self.plans)) or "none"
            unknown = LookupError(f"no task named {record.task!r} on this worker (it runs: {known})")
            return self._early(attempt, Failed(FailureReason.unknown_task, unknown))
        if record.job_try and record.job_try > attempt.job_try:
            attempt.job_try = record.job_try  # enqueued with _job_try
        if attempt.job_try > plan.max_tries:
            cut_short = RuntimeError(
                f"try {attempt.job_try} of at most {plan.max_tries}: every earlier try was cut short "
                "(its worker died or was killed)"
            )
            return self._early(attempt, Failed(FailureReason.max_tries_exceeded, cut_short))
        return attempt

    def _early(self, attempt: Attempt, outcome: Outcome) -> Attempt:
        attempt.outcome = outcome
        attempt.finished_ms = attempt.claimed_ms
        self._log_outcome(attempt, outcome, duration_ms=0.0)
        return attempt

    # --- the try ---------------------------------------------------------------------------------------------

    async def run(self, attempt: Attempt, base_ctx: Mapping[str, Any]) -> Outcome:
        """Run the task for ``attempt`` (prepared, no outcome yet) and decide its outcome."""
        plan, record = attempt.plan, attempt.record
        assert plan is not None
        assert record is not None
        ctx = {
            **base_ctx,
            "job_id": attempt.job_id,
            "job_try": attempt.job_try,
            "enqueue_time": datetime.fromtimestamp(record.enqueue_ms / 1000, tz=UTC),
            "score": int(attempt.score),
        }
        batch_id = batch_id_in(record.meta.get("batch") or record.meta.get("batch_callback"))
        if batch_id is not None:
            ctx["batch_id"] = batch_id  # a job of a batch, or its then/catch callback
        fields = {"job_id": attempt.job_id, "task": record.task, "queue": self.queue, "try": attempt.job_try}
        with tracing.try_scope(record.meta, fields) as scope:  # log context and, with otel, the try's span
            attempt.started_ms = now_ms()
            self._log.info("job_started")
            self._arq_start_line(attempt, record)
            started = time.perf_counter()
            outcome = await self._call(attempt, plan, record, ctx)
            attempt.finished_ms = now_ms()
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            if self.on_job_end is not None:
                try:
                    await self.on_job_end(ctx)
                except Exception as exc:
                    self._log.error("on_job_end_failed", error_type=type(exc).__name__, error=str(exc))
            attempt.outcome = outcome
            scope.finish(outcome)
            self._log_outcome(attempt, outcome, duration_ms=duration_ms)
        return outcome

    async def _call(
        self, attempt: Attempt, plan: TaskPlan, record: JobRecord, ctx: dict[str, Any]
    ) -> Outcome:
        deadline: asyncio.Timeout | None = None
        try:
            if self.on_job_start is not None:
                await self.on_job_start(ctx)
            positional, values = _arguments(plan.task, record)
            if attempt.cancel_reason is not None:  # cancelled before the task started
                raise asyncio.CancelledError
            attempt.running = True
            async with asyncio.timeout(plan.timeout_s) as deadline:
                result = await self._pipeline(plan, attempt, record, ctx, positional, values)
            attempt.running = False
            if isinstance(result, Released):  # a middleware put the job back instead of running it
                return result
            try:
                jsonable = wire.to_jsonable(result, what=f"the result of task {record.task!r}")
            except SerializationError as exc:
                raise ResultNotSerializableError(str(exc)) from None
        except asyncio.CancelledError as exc:
            attempt.running = False
            return self._cancelled(attempt, exc)
        except (Retry, RetryJob) as exc:
            attempt.running = False
            return self._asked_to_retry(attempt, plan, exc)
        except Exception as exc:
            attempt.running = False
            timed_out = isinstance(exc, TimeoutError) and deadline is not None and deadline.expired()
            return self._on_error(attempt, plan, record, exc, timed_out)
        return Succeeded(jsonable)

    async def _pipeline(
        self,
        plan: TaskPlan,
        attempt: Attempt,
        record: JobRecord,
        ctx: dict[str, Any],
        positional: tuple[Any, ...],
        values: dict[str, Any],
    ) -> Any:
        layers = self.middleware + plan.middleware  # worker-wide outside per-task
        if not layers:
            return await plan.task.fn(ctx, *positional, **values)
        info = JobInfo(
            job_id=attempt.job_id,
            task=record.task,
            queue=self.queue,
            job_try=attempt.job_try,
            kwargs=values,
            enqueue_time=ctx["enqueue_time"],
            ctx=ctx,
        )

        async def call_task() -> Any:
            try:
                return await plan.task.fn(ctx, *positional, **values)
            except Exception as exc:
                _note_origin(exc, TASK_ORIGIN)
                raise

        call_next: CallNext = call_task
        for layer in reversed(layers):
            call_next = _wrap(layer, info, call_next)
        return await call_next()

    def _cancelled(self, attempt: Attempt, exc: asyncio.CancelledError) -> Outcome:
        task = asyncio.current_task()
        if task is not None and attempt.cancel_reason is not None:
            task.uncancel()  # our own cancellation, now turned into an outcome
        if attempt.cancel_reason == CancelReason.abort:
            return Aborted()
        if attempt.cancel_reason == CancelReason.stop:
            return Released(0.0, ReleaseReason.worker_stopping)
        if not self.retry_jobs:  # the task raised CancelledError itself, and nothing is retried
            return Failed(FailureReason.raised, exc, _trace(exc))
        return RetryIn(0.0, None)  # the task raised CancelledError itself: arq runs it again

    def _asked_to_retry(self, attempt: Attempt, plan: TaskPlan, exc: Retry | RetryJob) -> Outcome:
        if not self.retry_jobs:
            return Failed(FailureReason.raised, exc, _trace(exc))
        if attempt.job_try >= plan.max_tries:
            error = NonRetryableError(f"task asked to retry on its last try ({plan.max_tries})")
            return Failed(FailureReason.max_tries_exceeded, error)
        defer_ms = exc.defer_score if isinstance(exc, Retry) else None
        return RetryIn((defer_ms or 0) / 1000, None)

    def _on_error(
        self, attempt: Attempt, plan: TaskPlan, record: JobRecord, exc: Exception, timed_out: bool
    ) -> Outcome:
        error, reason = _classify(exc, timed_out, plan)
        trace = _trace(exc)
        if self.retry_jobs and reason in _RETRYABLE and attempt.job_try < plan.max_tries:
            delay_s = plan.backoff.delay_s(attempt.job_try)
            until_ms = retry_deadline_ms(plan.task.options.retry_until, record.enqueue_ms)
            if until_ms is None or time.time() * 1000 + delay_s * 1000 <= until_ms:
                return RetryIn(delay_s, error)
            reason = FailureReason.retry_until_passed
        return Failed(reason, error, trace)

    # --- logs -------------------------------------------------------------------------------------------------

    def _log_outcome(self, attempt: Attempt, outcome: Outcome, *, duration_ms: float) -> None:
        fields = {} if attempt.started_ms else self._fields(attempt)  # a try that ran has them bound
        t = duration_ms / 1000
        if isinstance(outcome, Succeeded):
            self._log.info("job_succeeded", duration_ms=duration_ms, **fields)
            if self._arq_lines_on():
                shown = (
                    "" if outcome.result is None or not self.log_results else truncate(repr(outcome.result))
                )
                arq_log.info("%6.2fs ← %s ● %s", t, attempt.ref, shown)
        elif isinstance(outcome, RetryIn):
            error = outcome.error
            self._log.warning(
                "job_retrying",
                duration_ms=duration_ms,
                defer_s=round(outcome.seconds, 3),
                max_tries=attempt.plan.max_tries if attempt.plan else None,
                error_type=type(error).__name__ if error else None,
                error=str(error) if error else None,
                **_where(error),
                **fields,
            )
            if self._arq_lines_on():
                if error is None and outcome.seconds:
                    arq_log.info("%6.2fs ↻ %s retrying job in %0.2fs", t, attempt.ref, outcome.seconds)
                else:
                    arq_log.info("%6.2fs ↻ %s cancelled, will be run again", t, attempt.ref)
        elif isinstance(outcome, Released):
            keyed = {"key": outcome.key} if outcome.key else {}
            self._log.info(
                "job_released",
                reason=str(outcome.why),
                retry_in_s=round(outcome.seconds, 3),
                **keyed,
                **fields,
            )
            if attempt.started_ms and self._arq_lines_on():  # cancelled by a stop: arq's line for it
                arq_log.info("%6.2fs ↻ %s cancelled, will be run again", t, attempt.ref)
        elif isinstance(outcome, Aborted):
            self._log.warning("job_aborted", duration_ms=duration_ms, **fields)
            if self._arq_lines_on():
                when = "aborted" if attempt.started_ms else "aborted before start"
                arq_log.info("%6.2fs ⊘ %s %s", t, attempt.ref, when)
        else:
            error = outcome.error
            self._log.error(
                "job_failed",
                duration_ms=duration_ms,
                reason=outcome.reason.value,
                max_tries=attempt.plan.max_tries if attempt.plan else None,
                error_type=type(error).__name__,
                error=str(error),
                exception=outcome.traceback,
                **_where(error),
                **fields,
            )
            if self._arq_lines_on():
                self._arq_failure_line(attempt, outcome, t)

    def _arq_failure_line(self, attempt: Attempt, outcome: Failed, t: float) -> None:
        """arq's own line for this failure: its wording for a job that never reached its task, else ``!``."""
        reason, error = outcome.reason, outcome.error
        if reason is FailureReason.unknown_task:
            arq_log.warning("job %s, function %r not found", attempt.job_id, attempt.task_name)
        elif reason is FailureReason.expired:
            arq_log.warning("job %s expired", attempt.job_id)
        elif reason is FailureReason.undecodable_payload:
            arq_log.error("deserializing job %s failed: %s", attempt.job_id, error)
        elif reason is FailureReason.result_not_serializable:
            arq_log.error("error serializing result of %s: %s", attempt.ref, error)
        elif reason is FailureReason.max_tries_exceeded and not attempt.started_ms and attempt.plan:
            since_enqueue = (attempt.claimed_ms - attempt.record.enqueue_ms) / 1000 if attempt.record else t
            arq_log.warning(
                "%6.2fs ! %s max retries %d exceeded", since_enqueue, attempt.ref, attempt.plan.max_tries
            )
        else:
            extra = getattr(error, "extra", None)
            arq_log.error(
                "%6.2fs ! %s failed, %s: %s",
                t,
                attempt.ref,
                type(error).__name__,
                error,
                extra={"extra": extra() if callable(extra) else extra},
            )

    def _arq_lines_on(self) -> bool:
        return self.arq_lines and arq_log.isEnabledFor(logging.INFO)

    def _fields(self, attempt: Attempt) -> dict[str, Any]:
        return {
            "job_id": attempt.job_id,
            "task": attempt.task_name,
            "queue": self.queue,
            "try": attempt.job_try,
        }

    def _arq_start_line(self, attempt: Attempt, record: JobRecord) -> None:
        if not self._arq_lines_on():
            return
        extra = f" try={attempt.job_try}" if attempt.job_try > 1 else ""
        if attempt.started_ms - attempt.score > 1200:
            extra += f" delayed={(attempt.started_ms - attempt.score) / 1000:0.2f}s"
        shown = args_to_string(record.args, record.kwargs)
        arq_log.info(
            "%6.2fs → %s(%s)%s", (attempt.started_ms - record.enqueue_ms) / 1000, attempt.ref, shown, extra
        )


# Errors that may pass if the job is tried again; any other reason fails the job at once.
_RETRYABLE = frozenset({FailureReason.raised, FailureReason.timed_out})


def _classify(exc: Exception, timed_out: bool, plan: TaskPlan) -> tuple[BaseException, FailureReason]:
    """The error to keep and why the try failed."""
    if timed_out:
        error = JobTimeoutError(f"task {plan.task.name!r} ran longer than its {plan.timeout_s:g} s timeout")
        return error, FailureReason.timed_out
    if isinstance(exc, ArgumentsRejectedError):
        return exc, FailureReason.arguments_rejected
    if isinstance(exc, ResultNotSerializableError):
        return exc, FailureReason.result_not_serializable
    if isinstance(exc, NonRetryableError):
        return exc, FailureReason.non_retryable
    return exc, FailureReason.raised


def _arguments(task: Task[..., Any], record: JobRecord) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The job's arguments rebuilt for the task's signature; ArgumentsRejectedError if they cannot fit."""
    try:
        return task.signature.bind(record.args, record.kwargs)
    except TaskArgumentsError as exc:
        raise ArgumentsRejectedError(str(exc)) from None


def _wrap(layer: Middleware, info: JobInfo, call_next: CallNext) -> CallNext:
    async def call() -> Any:
        try:
            return await layer(info, call_next)
        except Exception as exc:
            _note_origin(
                exc, _name(layer)
            )  # only if it did not come from further in (the task, inner layers)
            raise

    return call


def _where(error: BaseException | None) -> dict[str, str]:
    """``raised_in=<middleware>`` when a middleware, not the task, raised the error."""
    where = raised_in(error.__cause__ or error) if error is not None else None
    if where is None and error is not None:
        where = raised_in(error)
    return {"raised_in": where} if where else {}


TASK_ORIGIN = "task"
_ORIGIN = "__scalr_queue_raised_in__"


def _note_origin(exc: BaseException, where: str) -> None:
    """Remember where an exception was first seen on its way out: the task, or the middleware that raised it."""
    if not hasattr(exc, _ORIGIN):
        with contextlib.suppress(AttributeError, TypeError):  # an exception type that takes no attributes
            setattr(exc, _ORIGIN, where)


def raised_in(exc: BaseException | None) -> str | None:
    """The middleware that raised ``exc`` (None when the task did, or nobody noted it)."""
    where = getattr(exc, _ORIGIN, None)
    return None if where in (None, TASK_ORIGIN) else str(where)


def _name(layer: object) -> str:
    return type(layer).__name__ if not inspect.isfunction(layer) else layer.__qualname__


def _trace(exc: BaseException) -> str | None:
    return "".join(traceback.format_exception(exc)) if exc.__traceback__ else None


def now_ms() -> int:
    return int(time.time() * 1000)
