"""Every Redis key scalr_queue reads or writes, in one place (docs/redis-keys.md is tested against it).

arq's own keys stay as arq names them, so a plain arq worker and scalr_queue share one data model.
"""

from __future__ import annotations

from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

QUEUE_PREFIX = "arq:queue:"
JOB_PREFIX = job_key_prefix
RESULT_PREFIX = result_key_prefix
IN_PROGRESS_PREFIX = in_progress_key_prefix
RETRY_PREFIX = retry_key_prefix
WORKERS_PREFIX = "arq:workers:"
FAILED_KEY = "arq:failed"
QUEUES_KEY = "arq:queues"
PAUSED_PREFIX = "arq:paused:"
NOTIFY_PREFIX = "arq:notify:"
NOTIFY_CAP = 100  # wake-up tokens kept per queue: enough to wake every idle worker
FAILED_RECORD_PREFIX = "arq:failed:"
WORKER_PREFIX = "arq:worker:"
FAILED_QUEUE_PREFIX = "arq:failed-queue:"
TIMELINE_PREFIX = "arq:timeline:"
COMPLETED_PREFIX = "arq:completed:"


def queue_key(name: str) -> str:
    """The sorted set of a logical queue: ``default`` -> ``arq:queue:default``; a full key passes unchanged."""
    return name if name.startswith(QUEUE_PREFIX) else QUEUE_PREFIX + name


def queue_name(key: str) -> str:
    """The logical name of a queue key: ``arq:queue:default`` -> ``default``."""
    return key.removeprefix(QUEUE_PREFIX)


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_PREFIX + job_id


def in_progress_key(job_id: str) -> str:
    return IN_PROGRESS_PREFIX + job_id


def retry_key(job_id: str) -> str:
    return RETRY_PREFIX + job_id


def workers_key(queue: str) -> str:
    """Sorted set of the workers serving a queue, scored by the time (ms) their heartbeat runs out."""
    return WORKERS_PREFIX + queue_name(queue)


def worker_key(worker_id: str) -> str:
    """One worker's heartbeat record (JSON), expiring soon after the worker stops beating."""
    return WORKER_PREFIX + worker_id


def paused_key(queue: str) -> str:
    """Present while a queue is paused: its workers take no new jobs."""
    return PAUSED_PREFIX + queue_name(queue)


def notify_key(queue: str) -> str:
    """List of wake-up tokens: enqueue pushes one for a job due now; an idle worker blocks on it."""
    return NOTIFY_PREFIX + queue_name(queue)


def failed_key(job_id: str) -> str:
    """One failure record (JSON); the ids of all records are in the sorted set ``arq:failed``."""
    return FAILED_RECORD_PREFIX + job_id


def failed_queue_key(queue: str) -> str:
    """Sorted set of one queue's failure records (job id -> failure time, ms): count and page without a scan."""
    return FAILED_QUEUE_PREFIX + queue_name(queue)


def timeline_key(queue: str, minute: int | str) -> str:
    """Hash of outcome -> count for one queue and one minute (unix time // 60), kept two hours."""
    return f"{TIMELINE_PREFIX}{queue_name(queue)}:{minute}"


def completed_key(queue: str) -> str:
    """Sorted set of the queue's most recently completed job ids (-> finish time, ms), capped."""
    return COMPLETED_PREFIX + queue_name(queue)


def arq_health_check_key(queue: str) -> str:
    """arq's own shared health key, kept fresh so that ``arq --check`` works too."""
    return queue_key(queue) + health_check_key_suffix
