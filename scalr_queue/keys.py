"""Every Redis key scalr_queue reads or writes, in one place (docs/redis-keys.md is tested against it).

arq's own keys stay as arq names them, so a plain arq worker and scalr_queue share one data model. Nothing
outside this module spells a key or a prefix; Lua scripts get their keys passed in.
"""

from __future__ import annotations

from arq.constants import (
    abort_jobs_ss,
    default_queue_name,
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

QUEUE_PREFIX = "arq:queue:"
# arq's own default queue key: a plain arq app enqueues here; `--queue arq:queue` serves it as it is.
ARQ_DEFAULT_QUEUE = default_queue_name
JOB_PREFIX = job_key_prefix
RESULT_PREFIX = result_key_prefix
IN_PROGRESS_PREFIX = in_progress_key_prefix
RETRY_PREFIX = retry_key_prefix
ABORT_KEY = abort_jobs_ss
WORKERS_PREFIX = "arq:workers:"
FAILED_KEY = "arq:failed"
QUEUES_KEY = "arq:queues"
TASKS_KEY = "arq:tasks"
PAUSED_PREFIX = "arq:paused:"
NOTIFY_PREFIX = "arq:notify:"
WORKER_WAKE_PREFIX = "arq:wake:"
NOTIFY_CAP = 100  # wake-up tokens kept per queue: enough to wake every idle worker
FAILED_RECORD_PREFIX = "arq:failed:"
WORKER_PREFIX = "arq:worker:"
CRON_PREFIX = "arq:cron:"
RATE_PREFIX = "arq:rate:"
LOCK_PREFIX = "arq:lock:"
LOCK_WAITERS_PREFIX = "arq:lock-waiters:"
UNIQUE_PREFIX = "arq:unique:"
RELEASED_PREFIX = "arq:released:"
FAILED_QUEUE_PREFIX = "arq:failed-queue:"
TIMELINE_PREFIX = "arq:timeline:"
COMPLETED_PREFIX = "arq:completed:"
PROGRESS_PREFIX = "arq:progress:"
READY_PREFIX = "arq:ready:"
READY_LEVELS_PREFIX = "arq:ready-levels:"
WAITING_PREFIX = "arq:waiting:"
DEPENDENTS_PREFIX = "arq:dependents:"
DEPENDENCY_FAILED_KEY = "arq:dependency-failed"
BATCH_PREFIX = "arq:batch:"
BATCH_PENDING_PREFIX = "arq:batch-pending:"
BATCH_SUCCEEDED_PREFIX = "arq:batch-succeeded:"
BATCH_FAILED_PREFIX = "arq:batch-failed:"
PRIORITIES = range(10)  # _priority 0..9: lower is claimed first


def queue_key(name: str) -> str:
    """The sorted set of a logical queue: ``default`` -> ``arq:queue:default``; a full key passes unchanged."""
    if name.startswith(QUEUE_PREFIX) or name == ARQ_DEFAULT_QUEUE:
        return name
    return QUEUE_PREFIX + name


def queue_name(key: str) -> str:
    """The logical name of a queue key: ``arq:queue:default`` -> ``default``; arq's ``arq:queue`` stays."""
    return key.removeprefix(QUEUE_PREFIX)


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_PREFIX + job_id


def in_progress_key(job_id: str) -> str:
    """A running job's lease: holds the id of the worker running it, expires unless renewed."""
    return IN_PROGRESS_PREFIX + job_id


def retry_key(job_id: str) -> str:
    """arq's try counter: how many tries of the job have started."""
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


def worker_wake_key(worker_id: str) -> str:
    """One worker's own wake-up list, beside its queue's notify list in its BLPOP: its main loop pushes a token to
    have the claim waiting behind that BLPOP run now (a deferred job fell due, Redis came back)."""
    return WORKER_WAKE_PREFIX + worker_id


def notify_key(queue: str) -> str:
    """List of wake-up tokens: a job due now (or a new earliest deferred one) pushes one; idle workers block on it."""
    return NOTIFY_PREFIX + queue_name(queue)


def failed_key(job_id: str) -> str:
    """One failure record (JSON); the ids of all records are in the sorted set ``arq:failed``."""
    return FAILED_RECORD_PREFIX + job_id


def cron_tick_key(name: str, tick_ms: int) -> str:
    """Set once by the worker that queues this run of a cron job: one run per tick, however many workers."""
    return f"{CRON_PREFIX}{name}:{tick_ms}"


def failed_queue_key(queue: str) -> str:
    """Sorted set of one queue's failure records (job id -> failure time, ms): count and page without a scan."""
    return FAILED_QUEUE_PREFIX + queue_name(queue)


def timeline_key(queue: str, minute: int | str) -> str:
    """Hash of outcome -> count for one queue and one minute (unix time // 60), kept two hours."""
    return f"{TIMELINE_PREFIX}{queue_name(queue)}:{minute}"


def completed_key(queue: str) -> str:
    """Sorted set of the queue's most recently completed job ids (-> finish time, ms), capped."""
    return COMPLETED_PREFIX + queue_name(queue)


def progress_key(job_id: str) -> str:
    """A running job's last reported progress (JSON: fraction, message, at), expiring like its result."""
    return PROGRESS_PREFIX + job_id


def ready_prefix(queue: str) -> str:
    """The prefix of a queue's priority indexes: ``ready_prefix(q) + str(priority)`` is ``ready_key(q, priority)``."""
    return f"{READY_PREFIX}{queue_name(queue)}:"


def ready_key(queue: str, priority: int) -> str:
    """Sorted set of the queue's waiting jobs of one priority (0..9), scored like the queue (run-at time, ms):
    the claim reads priority 0's first. The queue itself stays arq's (every job, scored by run-at time)."""
    return f"{ready_prefix(queue)}{priority}"


def waiting_key(job_id: str) -> str:
    """A job held back by ``_depends_on`` (hash: its queue, priority index, notify list, run-at score, and how many
    dependencies are still pending); gone once the job is queued."""
    return WAITING_PREFIX + job_id


def dependents_key(job_id: str) -> str:
    """Set of the ids of the jobs waiting for this one to end (``_depends_on``)."""
    return DEPENDENTS_PREFIX + job_id


def batch_key(batch_id: str) -> str:
    """A batch's state (hash: ``total`` jobs, ``then``/``catch`` callback job ids, ``created`` and, once every job
    ended, ``done`` (ms)); the job records of its jobs name it (meta ``batch``)."""
    return BATCH_PREFIX + batch_id


def batch_pending_key(batch_id: str) -> str:
    """Set of the batch's jobs that have not ended for good yet; FINISH moves each out as it ends."""
    return BATCH_PENDING_PREFIX + batch_id


def batch_succeeded_key(batch_id: str) -> str:
    """Set of the batch's jobs that succeeded."""
    return BATCH_SUCCEEDED_PREFIX + batch_id


def batch_failed_key(batch_id: str) -> str:
    """Set of the batch's jobs that failed for good (retries used up, aborted, dependency failed)."""
    return BATCH_FAILED_PREFIX + batch_id


def ready_levels_key(queue: str) -> str:
    """Which of the queue's priority indexes may hold entries: a string whose byte p is '1' for priority p."""
    return READY_LEVELS_PREFIX + queue_name(queue)


def rate_key(key: str) -> str:
    """RateLimited's window for one key: a sorted set of start times (ms), expiring with the window."""
    return RATE_PREFIX + key


def lock_key(key: str) -> str:
    """WithoutOverlapping's lock for one key: the holder's token, a lease renewed while its job runs."""
    return LOCK_PREFIX + key


def lock_waiters_key(key: str) -> str:
    """The jobs waiting for a WithoutOverlapping key, oldest first: the holder's release wakes the oldest."""
    return LOCK_WAITERS_PREFIX + key


def unique_key(task: str, unique_id: str) -> str:
    """Held (holding the job's id) while a unique job waits, and unless ``unique_until_processing``, runs."""
    return f"{UNIQUE_PREFIX}{task}:{unique_id}"


def released_key(job_id: str) -> str:
    """How often a job was put back without using a try, and the last reason (hash: last, at, count)."""
    return RELEASED_PREFIX + job_id


def arq_health_check_key(queue: str) -> str:
    """arq's own shared health key, kept fresh so that ``arq --check`` works too."""
    return queue_key(queue) + health_check_key_suffix
