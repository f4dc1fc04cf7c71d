"""scalr_queue: background jobs for containerized FastAPI apps, a thin opinionated layer over arq."""

from importlib.metadata import version as _version

from arq.worker import Retry

from .client import Client, Job, JobStatus, close, enqueue, enqueue_many
from .exceptions import (
    ConfigError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NonRetryableError,
    NotReplicatedError,
    PayloadTooLargeError,
    RedisPermissionError,
    RedisUnavailableError,
    ScalrQueueError,
    SerializationError,
    TaskArgumentsError,
    TaskError,
    UnknownTaskError,
    WorkerSettingsError,
)
from .logs import configure_logging
from .tasks import Task, task

__version__ = _version("scalr_queue")

__all__ = [
    "Client",
    "ConfigError",
    "Job",
    "JobFailedError",
    "JobNotFoundError",
    "JobStatus",
    "JobTimeoutError",
    "NonRetryableError",
    "NotReplicatedError",
    "PayloadTooLargeError",
    "RedisPermissionError",
    "RedisUnavailableError",
    "Retry",
    "ScalrQueueError",
    "SerializationError",
    "Task",
    "TaskArgumentsError",
    "TaskError",
    "UnknownTaskError",
    "WorkerSettingsError",
    "__version__",
    "close",
    "configure_logging",
    "enqueue",
    "enqueue_many",
    "task",
]
