"""One try of one job: arguments rebuilt from JSON, a timeout, the result made JSON, and the job_* log events.

This is the coroutine arq's worker calls for every task (``functions``), so it behaves the same under
``python -m scalr_queue.worker``, under plain ``python -m arq`` and in sync mode.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from arq.typing import WorkerCoroutine
from arq.worker import Retry

from . import keys, wire
from .exceptions import JobTimeoutError, NonRetryableError, SerializationError, TaskArgumentsError
from .logs import get_logger
from .tasks import Task

STATE_KEY = "scalr_queue"

log = get_logger("scalr_queue.worker")


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


class ArgumentsRejectedError(TaskArgumentsError, NonRetryableError):
    """The worker could not rebuild the job's arguments for the task's signature: no try can succeed."""


class ResultNotSerializableError(SerializationError, NonRetryableError):
    """The task returned something that cannot be stored as JSON."""


def job_coroutine(task: Task[..., Any], default_timeout_s: float) -> WorkerCoroutine:
    """The coroutine registered with arq for ``task``."""
    timeout_s = task.options.timeout_s or default_timeout_s

    async def run_job(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        state: WorkerState | None = ctx.get(STATE_KEY)
        job_id = str(ctx.get("job_id", "?"))
        job_try = int(ctx.get("job_try") or 1)
        queue = keys.queue_name(state.queue) if state else str(ctx.get("queue", "?"))
        if state:
            state.running[job_id] = task.name
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            job_id=job_id, task=task.name, queue=queue, **{"try": job_try}
        ):
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
                if state:
                    state.retried += 1
                log.info(
                    "job_retrying", duration_ms=_ms_since(started), defer_s=(exc.defer_score or 0) / 1000
                )
                raise
            except asyncio.CancelledError:
                log.warning("job_cancelled", duration_ms=_ms_since(started))
                raise
            except Exception as exc:
                if state:
                    state.failed += 1
                if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                    timeout = JobTimeoutError(
                        f"task {task.name!r} ran longer than its {timeout_s:g} s timeout"
                    )
                    log.error("job_failed", duration_ms=_ms_since(started), **_error_fields(timeout))
                    raise timeout from None
                log.error("job_failed", duration_ms=_ms_since(started), exc_info=exc, **_error_fields(exc))
                raise
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


def _error_fields(exc: BaseException) -> dict[str, str]:
    return {"error_type": type(exc).__name__, "error": str(exc)}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
