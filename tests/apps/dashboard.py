"""A worker for the dashboard and metrics tests: the basic tasks, plus hooks that do what the engine will do.

Until the engine calls ``scalr_queue.timeline.record`` and ``scalr_queue.metrics.job_finished`` itself (issue 13),
``after_job_end`` reads the job's outcome back from Redis and records it, and ``on_startup`` serves the worker's
metrics when ``SCALR_QUEUE_METRICS_PORT`` is set. Tests thus drive real worker processes end to end.
"""

from __future__ import annotations

from typing import Any

from scalr_queue import keys, metrics, task, timeline, wire
from scalr_queue.config import get_settings
from tests.apps import basic


@task(max_tries=1)
async def fails_while_flag(ctx: dict, flag: str) -> str:
    """Fails while the Redis key ``flag`` exists: a failure an operator fixes, then retries from the dashboard."""
    if await ctx["redis"].exists(flag):
        raise RuntimeError(f"{flag} is set: the fix is not deployed yet")
    return "fixed"


async def start_metrics(ctx: dict[str, Any]) -> None:
    port = get_settings().metrics_port
    if port:
        metrics.start_worker_server(port, addr="127.0.0.1")


async def record_outcome(ctx: dict[str, Any]) -> None:
    """The engine's future call sites, from outside: count the try in the timeline and the metrics."""
    redis, job_id = ctx["redis"], ctx["job_id"]
    queue = keys.queue_name(ctx["scalr_queue"].queue)
    raw = await redis.get(keys.result_key(job_id))
    result = wire.loads(raw) if raw else None
    if result is None:
        outcome = timeline.Outcome.retried
    elif result.get("s"):
        outcome = timeline.Outcome.succeeded
    else:
        outcome = timeline.Outcome.failed
    await timeline.record(redis, queue, outcome, job_ids=[job_id])
    task_name = str(result.get("f")) if result else "?"
    started, finished = (result or {}).get("st"), (result or {}).get("ft")
    duration = (finished - started) / 1000 if isinstance(started, int) and isinstance(finished, int) else None
    wait = (started - ctx["score"]) / 1000 if isinstance(started, int) else None
    metrics.job_finished(queue, task_name, outcome.value, duration, wait)


class WorkerSettings:
    functions = [*basic.tasks, fails_while_flag]
    on_startup = start_metrics
    after_job_end = record_outcome
