"""Running our tasks under plain ``python -m arq``: arq's loop, our runner, outcomes turned into what arq expects.

arq claims the job, decodes it and counts its tries; the coroutine registered here runs the task through the same
runner as scalr_queue's worker, then: a success returns the result, ``RetryIn`` and ``Released`` raise arq's
``Retry`` (arq counts a try for a release: documented), ``Failed`` writes the failure record and raises the error
(arq stores it as the result), ``Aborted`` raises ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from arq.typing import WorkerCoroutine
from arq.worker import Retry

from .. import keys
from ..config import Settings, redact_url
from ..failed import FailedStore, failure_record
from ..health import Heartbeat, WorkerState, new_worker_id
from ..logs import configure_logging, get_logger
from ..outcome import Aborted, Failed, Released, RetryIn, Succeeded
from ..records import JobRecord
from ..runner import Attempt, Runner, TaskPlan, now_ms, plan_for
from ..tasks import Task

log = get_logger("scalr_queue.worker")

STATE_KEY = "scalr_queue"
HEARTBEAT_KEY = "scalr_queue_heartbeat"


def job_coroutine(plan: TaskPlan, queue_key: str, settings: Settings) -> WorkerCoroutine:
    """The coroutine arq calls for one task."""
    runner = Runner(
        {plan.task.name: plan},
        queue=keys.queue_name(queue_key),
        rollout_window_s=0.0,
        arq_lines=False,  # arq logs its own
    )

    async def run_job(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        enqueued = ctx.get("enqueue_time")
        job_id = str(ctx.get("job_id", "?"))
        attempt = Attempt(
            job_id=job_id,
            raw_id=job_id.encode(),
            score=float(ctx.get("score") or now_ms()),
            job_try=int(ctx.get("job_try") or 1),
            payload=None,
            claimed_ms=now_ms(),
            record=JobRecord(
                task=plan.task.name,
                kwargs=kwargs,
                args=args,
                enqueue_ms=int(enqueued.timestamp() * 1000) if enqueued else now_ms(),
            ),
            plan=plan,
        )
        outcome = await runner.run(attempt, ctx)
        if isinstance(outcome, Succeeded):
            return outcome.result
        if isinstance(outcome, RetryIn | Released):
            raise Retry(defer=outcome.seconds)
        if isinstance(outcome, Aborted):
            raise asyncio.CancelledError
        await _record(ctx, attempt, outcome, settings)
        raise outcome.error

    run_job.__qualname__ = run_job.__name__ = plan.task.name
    run_job.__scalr_task__ = plan.task  # type: ignore[attr-defined]
    return cast(WorkerCoroutine, run_job)


async def _record(ctx: dict[str, Any], attempt: Attempt, outcome: Failed, settings: Settings) -> None:
    state: WorkerState | None = ctx.get(STATE_KEY)
    store = FailedStore(ctx["redis"], max_age_s=settings.failed_max_age, max_count=settings.failed_max_count)
    record = failure_record(
        job_id=attempt.job_id,
        task=attempt.task_name,
        kwargs=attempt.record.kwargs if attempt.record else {},
        queue=state.queue if state else "?",
        tries=attempt.job_try,
        max_tries=attempt.plan.max_tries if attempt.plan else None,
        reason=outcome.reason,
        error=outcome.error,
        traceback=outcome.traceback,
        enqueue_ms=attempt.record.enqueue_ms if attempt.record else None,
        worker_id=state.worker_id if state else None,
    )
    try:
        await store.record(record)
    except Exception as exc:  # the job's own outcome still lands in arq's result key
        log.error("failed_record_not_written", job_id=attempt.job_id, error=str(exc) or type(exc).__name__)
    if state is not None:
        state.failed += 1


def arq_hooks(
    user: dict[str, Any], settings: Settings, queue_key: str, names: list[str]
) -> tuple[Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], Any]]:
    """``on_startup``/``on_shutdown`` for arq: ours (logging, heartbeat) around the user's."""
    user_startup = user.get("on_startup")
    user_shutdown = user.get("on_shutdown")

    async def on_startup(ctx: dict[str, Any]) -> None:
        configure_logging(settings.log_format, settings.log_level)
        state = ctx[STATE_KEY] = WorkerState(worker_id=new_worker_id(), queue=queue_key, tasks=names)
        if user_startup is not None:
            await user_startup(ctx)
        heartbeat = Heartbeat(ctx["redis"], state, settings.health_interval)
        await heartbeat.start()
        ctx[HEARTBEAT_KEY] = heartbeat
        log.info(
            "worker_started",
            worker_id=state.worker_id,
            queue=keys.queue_name(queue_key),
            tasks=names,
            redis_url=redact_url(settings.redis_url),
            engine="arq",
        )

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        heartbeat: Heartbeat | None = ctx.pop(HEARTBEAT_KEY, None)
        if heartbeat is not None:
            await heartbeat.stop()
        if user_shutdown is not None:
            await user_shutdown(ctx)

    return on_startup, on_shutdown


def arq_plan(t: Task[..., Any], defaults: dict[str, Any], *, is_cron: bool) -> TaskPlan:
    """The task's plan under plain arq: the WorkerSettings' values as the worker's defaults."""
    return plan_for(
        t,
        timeout_s=defaults["job_timeout"],
        max_tries=defaults["max_tries"],
        keep_result_s=defaults["keep_result"],
        keep_result_forever=defaults["keep_result_forever"],
        backoff=defaults["backoff"],
        is_cron=is_cron,
    )
