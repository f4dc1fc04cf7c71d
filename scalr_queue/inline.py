"""``SCALR_QUEUE_MODE=sync``: run the job inline at enqueue, through the same checks and JSON round trip.

For tests and scripts that have no worker. The outcome is kept in this process (the most recent
``MAX_KEPT`` jobs) so that ``Job(job_id)`` can read it back, as it would from Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from arq.worker import Retry

from . import wire
from .exceptions import ConfigError
from .execution import JobDefaults, job_coroutine
from .tasks import Task

if TYPE_CHECKING:
    from .client import Client, Job

MAX_KEPT = 10_000


@dataclass(frozen=True)
class Outcome:
    success: bool
    record: dict[str, Any]  # the same shape as arq's result record in Redis


_outcomes: OrderedDict[str, Outcome] = OrderedDict()


def outcome(job_id: str) -> Outcome | None:
    return _outcomes.get(job_id)


def forget_all() -> None:
    _outcomes.clear()


async def run(
    client: Client, name: str, task: Task[..., Any] | None, payload: bytes, job_id: str, queue: str
) -> Job | None:
    """Run the job now; a raised error is kept on the handle, as a worker would record it."""
    if task is None:
        raise ConfigError(
            f"SCALR_QUEUE_MODE=sync cannot run task {name!r}: set SCALR_QUEUE_TASKS to the module that "
            "exports tasks = [...], or pass the function instead of its name"
        )
    if job_id in _outcomes:
        return None
    job = wire.loads(payload)  # the task sees what a worker would: JSON data, rebuilt by its signature
    ctx: dict[str, Any] = {
        "job_id": job_id,
        "job_try": 1,
        "enqueue_time": datetime.fromtimestamp(job["et"] / 1000, tz=UTC),
        "score": job["et"],
        "redis": None,
        "queue": queue,
    }
    started_ms = int(time.time() * 1000)
    settings = client.settings
    run_try = job_coroutine(
        task, JobDefaults(settings.job_timeout, settings.max_tries, settings.default_backoff)
    )
    while True:  # the same tries as on a worker, without the backoff waits
        try:
            result, success = await run_try(ctx, **job["k"]), True
        except Retry:
            ctx["job_try"] += 1
            continue
        except Exception as exc:
            result, success = exc, False
        break
    record = wire.loads(
        wire.dumps(
            {
                "t": ctx["job_try"],
                "f": name,
                "a": [],
                "k": job["k"],
                "et": job["et"],
                "s": success,
                "r": result,
                "st": started_ms,
                "ft": int(time.time() * 1000),
                "q": queue,
                "id": job_id,
            }
        )
    )
    _outcomes[job_id] = Outcome(success, record)
    while len(_outcomes) > MAX_KEPT:
        _outcomes.popitem(last=False)
    return client.job(job_id, queue)
