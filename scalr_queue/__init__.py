"""scalr_queue: background jobs for containerized FastAPI apps, a thin opinionated layer over arq."""

from importlib.metadata import version as _version

from arq.worker import Retry

from .client import Client, Job, close, enqueue, enqueue_many
from .exceptions import (
    ConfigError,
    EnqueueOutcomeUnknownError,
    JobAlreadyQueuedError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NonRetryableError,
    NotReplicatedError,
    PayloadTooLargeError,
    RedisFullError,
    RedisPermissionError,
    RedisUnavailableError,
    ResultTimeoutError,
    ScalrQueueError,
    SerializationError,
    TaskArgumentsError,
    TaskError,
    UndecodableJobError,
    UnknownQueueError,
    UnknownTaskError,
    WorkerSettingsError,
)
from .logs import configure_logging
from .records import JobStatus
from .runner import JobInfo
from .tasks import Task, task

__version__ = _version("scalr_queue")

__all__ = [
    "Client",
    "ConfigError",
    "EnqueueOutcomeUnknownError",
    "Job",
    "JobAlreadyQueuedError",
    "JobFailedError",
    "JobInfo",
    "JobNotFoundError",
    "JobStatus",
    "JobTimeoutError",
    "NonRetryableError",
    "NotReplicatedError",
    "PayloadTooLargeError",
    "RedisFullError",
    "RedisPermissionError",
    "RedisUnavailableError",
    "ResultTimeoutError",
    "Retry",
    "ScalrQueueError",
    "SerializationError",
    "Task",
    "TaskArgumentsError",
    "TaskError",
    "UndecodableJobError",
    "UnknownQueueError",
    "UnknownTaskError",
    "WorkerSettingsError",
    "__version__",
    "close",
    "configure_logging",
    "enqueue",
    "enqueue_many",
    "task",
]
