"""Every error scalr_queue raises derives from one base, so callers can catch them together.

ScalrQueueError
├── ConfigError (ValueError)              a setting is wrong; the message names the variable
│   └── WorkerSettingsError               a worker module exports nothing runnable, or a setting arq does not know
├── RedisUnavailableError (ConnectionError)  Redis did not answer in time; the URL is shown without its password
│   ├── EnqueueOutcomeUnknownError        the job was sent but no answer came: it may be queued (retry with _job_id)
│   └── RedisFullError                    Redis refused a write: out of memory (maxmemory with noeviction)
├── RedisPermissionError (PermissionError)  the Redis user may not run a command (its ACL); names the command
├── NotReplicatedError                    an enqueue reached the primary but too few replicas (WAIT) in time
├── TaskError
│   ├── UnknownTaskError (LookupError)    a task name nobody registered; the message suggests the closest
│   └── TaskArgumentsError (TypeError)    missing, unexpected or ill-typed arguments or enqueue options
│       └── ArgumentsRejectedError        (worker side) the stored arguments do not fit the task: no try can pass
├── SerializationError (ValueError)       an argument or a result that is not JSON-able
│   ├── PayloadTooLargeError              a job payload over SCALR_QUEUE_MAX_PAYLOAD
│   ├── UndecodableJobError               a record read from Redis that is not a job scalr_queue can run
│   └── ResultNotSerializableError        (worker side) a task returned something that is not JSON
├── JobNotFoundError (LookupError)        no job, result or queue entry with that id
├── UnknownQueueError (LookupError)       a queue nothing was enqueued to and no worker serves
├── JobAlreadyQueuedError (ValueError)    a failed job cannot be retried: the id is queued or running again
├── JobFailedError                        Job.result() of a job that ended in failure
├── DependencyFailedError                 (worker side) a job this one depends on failed for good
├── ResultTimeoutError (TimeoutError)     Job.result(timeout=...) waited that long and the job had not finished
├── JobTimeoutError (TimeoutError)        a try ran longer than its task's timeout
├── CommandInputError (ValueError)        a command-line argument that cannot be used as given
├── ProgressError (ValueError)            progress() with a fraction outside 0..1, or outside a task
├── MissingExtraError (ImportError)       an optional extra is not installed; the message names the pip command
└── NonRetryableError                     raise it in a task to fail the job at once
    ├── ArgumentsRejectedError
    └── ResultNotSerializableError
"""

from __future__ import annotations


class ScalrQueueError(Exception):
    """Base of every scalr_queue error."""


class ConfigError(ScalrQueueError, ValueError):
    """A setting has a value scalr_queue cannot use; raised at start-up, never papered over with a default."""


class WorkerSettingsError(ConfigError):
    """The worker module does not export what a worker needs, or its WorkerSettings holds an unknown name."""


class RedisUnavailableError(ScalrQueueError, ConnectionError):
    """Redis could not be reached within the configured time; nothing was written."""


class EnqueueOutcomeUnknownError(RedisUnavailableError):
    """The job was sent, but Redis did not answer in time: it may be queued and may run.

    Retrying may then run it twice; an idempotency key (``_job_id``) makes a retry safe.
    """


class RedisFullError(RedisUnavailableError):
    """Redis refused the write because it is out of memory (maxmemory reached, noeviction)."""


class RedisPermissionError(ScalrQueueError, PermissionError):
    """The Redis user's ACL does not allow a command scalr_queue needs."""


class NotReplicatedError(ScalrQueueError):
    """The job is on the primary, but fewer replicas than ``SCALR_QUEUE_WAIT_REPLICAS`` confirmed it in time.

    It will run unless the primary fails before it replicates; enqueue again with the same ``_job_id`` to be
    sure (a duplicate id returns None while the first job exists).
    """

    def __init__(self, job_ids: list[str], wanted: int, acknowledged: int, timeout_s: float) -> None:
        self.job_ids = job_ids
        self.wanted = wanted
        self.acknowledged = acknowledged
        shown = job_ids[0] if len(job_ids) == 1 else f"{job_ids[0]} and {len(job_ids) - 1} more"
        super().__init__(
            f"job {shown} is on the Redis primary but {acknowledged} of {wanted} replica(s) confirmed it within "
            f"{timeout_s:g} s (SCALR_QUEUE_WAIT_REPLICAS); it is lost if the primary fails before it replicates: "
            "enqueue again with the same _job_id to be sure"
        )


class TaskError(ScalrQueueError):
    """A task reference or its arguments do not match what the worker runs."""


class UnknownTaskError(TaskError, LookupError):
    """No registered task has this name."""


class TaskArgumentsError(TaskError, TypeError):
    """The arguments (or enqueue options) do not fit the task's signature."""


class SerializationError(ScalrQueueError, ValueError):
    """A value cannot be written as JSON, the only format scalr_queue puts in Redis."""


class PayloadTooLargeError(SerializationError):
    """A job's payload is over the size limit: pass ids, not data."""


class UndecodableJobError(SerializationError):
    """A job record read from Redis is not one scalr_queue can run (not JSON, a pickle, wrong field types)."""


class DependencyFailedError(ScalrQueueError):
    """A job this one depends on (``_depends_on``) failed for good, so this one fails without starting."""


class JobNotFoundError(ScalrQueueError, LookupError):
    """Redis holds nothing for this job id: never enqueued, or its result has expired."""


class UnknownQueueError(ScalrQueueError, LookupError):
    """No job was ever enqueued to this queue and no worker serves it."""


class JobAlreadyQueuedError(ScalrQueueError, ValueError):
    """A failed job cannot be queued again under its id: a job with that id is queued or running already."""


class JobFailedError(ScalrQueueError):
    """The job ended without success; carries the error the task raised, as recorded by the worker."""

    def __init__(self, job_id: str, error_type: str, message: str, traceback: str | None = None) -> None:
        self.job_id = job_id
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(
            f"job {job_id} failed: {error_type}: {message}"
            if message
            else f"job {job_id} failed: {error_type}"
        )


class ResultTimeoutError(ScalrQueueError, TimeoutError):
    """``Job.result(timeout=...)`` gave up waiting; the job itself goes on."""


class JobTimeoutError(ScalrQueueError, TimeoutError):
    """A try of a job ran longer than its timeout and was cancelled."""


class CommandInputError(ScalrQueueError, ValueError):
    """An argument on the command line that cannot be used as given."""


class ProgressError(ScalrQueueError, ValueError):
    """``progress(ctx, fraction)`` got a fraction that is not a number from 0 to 1, or a ctx that is not a job's."""


class MissingExtraError(ScalrQueueError, ImportError):
    """A feature needs an optional extra that is not installed: ``pip install 'scalr_queue[<extra>]'``."""


class NonRetryableError(ScalrQueueError):
    """Raise this from a task to fail the job at once, without further tries."""


class ArgumentsRejectedError(TaskArgumentsError, NonRetryableError):
    """The worker could not rebuild the job's arguments for the task's signature: no try can succeed."""


class ResultNotSerializableError(SerializationError, NonRetryableError):
    """The task returned something that cannot be stored as JSON."""
