"""What a try became: one typed value, decided by the runner and written by the engine (DESIGN §8).

``Succeeded`` stores the result; ``RetryIn`` queues the job again after a delay, the try used; ``Failed`` sends it
to the failed store with its reason; ``Released`` puts it back without using a try (rate limit, lock, rollout
window, shutdown); ``Aborted`` ends it for good because somebody asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FailureReason(StrEnum):
    """Why a job ended without success."""

    raised = "raised"  # the last try raised
    timed_out = "timed_out"  # the last try ran past its timeout
    non_retryable = "non_retryable"  # the task raised NonRetryableError
    retry_until_passed = "retry_until_passed"  # the task's retry deadline had passed
    unknown_task = "unknown_task"  # no worker registered the task name, even after the rollout window
    undecodable_payload = "undecodable_payload"  # not a job we can run: not JSON, a pickle, wrong field types
    expired = "expired"  # the job's data expired before a worker took it
    max_tries_exceeded = "max_tries_exceeded"  # every try was cut short (the worker died) until none was left
    arguments_rejected = "arguments_rejected"  # the arguments do not fit the task's signature
    aborted = "aborted"  # aborted before it started or while it ran
    dependency_failed = (
        "dependency_failed"  # a job it depends on (_depends_on) failed for good: never started
    )
    result_not_serializable = "result_not_serializable"  # the task returned something that is not JSON


class ReleaseReason(StrEnum):
    """Why a job was put back without using a try."""

    unknown_task = "unknown_task"  # a task this worker does not know, within the rollout window
    worker_stopping = "worker_stopping"  # cancelled by a graceful stop: queued again at once
    rate_limited = "rate_limited"  # RateLimited: the window is full
    overlapping = "overlapping"  # WithoutOverlapping: another job holds the key
    redis_unavailable = (
        "redis_unavailable"  # a built-in middleware could not reach Redis: tried again shortly
    )


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: Any  # plain JSON data


@dataclass(frozen=True, slots=True)
class RetryIn:
    seconds: float
    error: BaseException | None  # None: the task asked for it (arq's Retry)


@dataclass(frozen=True, slots=True)
class Failed:
    reason: FailureReason
    error: BaseException
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Released:
    """Put the job back without using a try, due again in ``seconds``; ``key`` names what held it.

    Return it from a middleware instead of calling ``call_next()``. With ``why=ReleaseReason.overlapping``,
    ``key`` is a ``WithoutOverlapping`` lock's name: the job waits for that lock (woken when it is given back)
    and ``seconds`` is only what the log shows.
    """

    seconds: float
    why: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Aborted:
    pass


Outcome = Succeeded | RetryIn | Failed | Released | Aborted
