"""scalr_queue: background jobs for containerized FastAPI apps, a thin opinionated layer over arq."""

from importlib.metadata import version as _version

from arq.worker import Retry

from ._progress import Progress, progress
from .batches import Batch, BatchResult, batch
from .client import Client, Job, close, enqueue, enqueue_many
from .exceptions import (
    ConfigError,
    DependencyFailedError,
    EnqueueOutcomeUnknownError,
    JobAlreadyQueuedError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NonRetryableError,
    NotReplicatedError,
    PayloadTooLargeError,
    ProgressError,
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
from .sync import close_sync, enqueue_many_sync, enqueue_sync
from .tasks import Task, task
from .workflows import Call, Chain, Every, call, chain, every

__version__ = _version("scalr_queue")

__all__ = [
    "Batch",
    "BatchResult",
    "Call",
    "Chain",
    "Client",
    "ConfigError",
    "DependencyFailedError",
    "EnqueueOutcomeUnknownError",
    "Every",
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
    "Progress",
    "ProgressError",
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
    "batch",
    "call",
    "chain",
    "close",
    "close_sync",
    "configure_logging",
    "enqueue",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "every",
    "progress",
    "task",
]
