"""The task registry workers publish, so a web process can check and route jobs without importing worker code.

Each worker writes its tasks to ``arq:tasks`` at start (name -> JSON: the task's queue, its parameters, which of
them are required). ``enqueue("name", ...)`` without ``SCALR_QUEUE_TASKS`` reads it once and then from memory:
a known name has its arguments checked and goes to its task's queue; a name no worker published yet is still
accepted (a rollout: the new worker may not be up yet), with a warning once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from . import keys
from .exceptions import TaskArgumentsError
from .logs import get_logger

log = get_logger("scalr_queue.client")

REFRESH_S = 60.0  # how long a producer trusts its copy of the registry
MISS_REFRESH_S = 5.0  # a name it does not know makes it look again, at most this often


@dataclass(frozen=True, slots=True)
class PublishedTask:
    """What a worker says of one of its tasks."""

    name: str
    queue: str | None
    params: tuple[str, ...]
    required: tuple[str, ...]
    accepts_any_keyword: bool
    signature: str
    unique: bool = False  # a unique task: its producer dedupes (DESIGN §8)
    unique_for_s: float | None = None
    unique_custom_id: bool = False  # its unique id comes from a function only the task's own code has

    def to_json(self) -> str:
        entry: dict[str, Any] = {
            "queue": self.queue,
            "params": list(self.params),
            "required": list(self.required),
            "accepts_any_keyword": self.accepts_any_keyword,
            "signature": self.signature,
            "published_at": time.time(),
        }
        if self.unique:
            entry["unique"] = {"for_s": self.unique_for_s, "custom_id": self.unique_custom_id}
        return json.dumps(entry)

    @classmethod
    def from_json(cls, name: str, raw: bytes) -> PublishedTask | None:
        """The entry, or None if it is not one a worker wrote (then the name is treated as unpublished)."""
        try:
            data = json.loads(raw)
            queue, params, required = data["queue"], data["params"], data["required"]
            if not (queue is None or isinstance(queue, str)):
                return None
            if not all(isinstance(p, str) for p in [*params, *required]):
                return None
            unique = data.get("unique")
            unique_for = unique.get("for_s") if isinstance(unique, dict) else None
            if not (unique_for is None or (isinstance(unique_for, int | float) and unique_for > 0)):
                return None
            return cls(
                name=name,
                queue=queue,
                params=tuple(params),
                required=tuple(required),
                accepts_any_keyword=bool(data.get("accepts_any_keyword")),
                signature=str(data.get("signature") or name),
                unique=isinstance(unique, dict),
                unique_for_s=None if unique_for is None else float(unique_for),
                unique_custom_id=isinstance(unique, dict) and unique.get("custom_id") is True,
            )
        except (ValueError, KeyError, TypeError):
            return None

    def check(self, kwargs: dict[str, Any]) -> None:
        """Missing and unexpected arguments, as the worker that published the task would see them."""
        missing = [n for n in self.required if n not in kwargs]
        unexpected = [] if self.accepts_any_keyword else [n for n in kwargs if n not in self.params]
        problems = []
        if missing:
            problems.append("missing " + ", ".join(map(repr, missing)))
        if unexpected:
            problems.append("unexpected " + ", ".join(map(repr, unexpected)))
        if problems:
            raise TaskArgumentsError(
                f"task {self.name!r}: {'; '.join(problems)}; it takes {self.signature} (as published by its workers)"
            )


def describe(task: Any) -> PublishedTask:
    """The published form of a Task."""
    signature = task.signature
    return PublishedTask(
        name=task.name,
        queue=task.options.queue,
        params=tuple(sorted(signature.names)),
        required=tuple(signature.required),
        accepts_any_keyword=signature.accepts_any_keyword,
        signature=signature.describe(),
        unique=task.options.unique,
        unique_for_s=task.options.unique_for_s,
        unique_custom_id=task.options.unique_id is not None,
    )


async def publish_tasks(redis: Redis, queue: str, plans: Iterable[Any]) -> None:
    """Write this worker's tasks to ``arq:tasks``."""
    entries = {plan.task.name: describe(plan.task).to_json() for plan in plans if not plan.is_cron}
    if entries:
        await redis.hset(keys.TASKS_KEY, mapping=entries)  # type: ignore[misc]  # typed sync | async


class PublishedRegistry:
    """A producer's copy of ``arq:tasks``, read lazily and refreshed now and then."""

    def __init__(self) -> None:
        self.tasks: dict[str, PublishedTask] = {}
        self._read_at = 0.0
        self._warned: set[str] = set()
        self._reading: asyncio.Future[None] | None = None  # one read at a time, however many enqueues wait

    @property
    def read(self) -> bool:
        """Whether it was ever read: a registry Redis never gave is no reason to warn about a name."""
        return self._read_at > 0

    def stale(self, name: str) -> bool:
        age = time.monotonic() - self._read_at
        return age > REFRESH_S or (name not in self.tasks and age > MISS_REFRESH_S)

    async def refresh(self, redis: Redis) -> None:
        """Read the registry again; concurrent callers share one read."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read(redis))
        await asyncio.shield(self._reading)

    async def _read(self, redis: Redis) -> None:
        raw: dict[bytes, bytes] = await redis.hgetall(keys.TASKS_KEY)  # type: ignore[misc]
        tasks = {}
        for field, value in raw.items():
            name = field.decode(errors="replace")
            entry = PublishedTask.from_json(name, value)
            if entry is not None:
                tasks[name] = entry
        self.tasks = tasks
        self._read_at = time.monotonic()

    def lookup(self, name: str) -> PublishedTask | None:
        entry = self.tasks.get(name)
        if entry is None and name not in self._warned:
            self._warned.add(name)
            log.warning(
                "task_not_published",
                task=name,
                detail="no worker has published this task yet: queued unchecked (a rollout?); "
                "check the name, or set SCALR_QUEUE_TASKS to check it against the worker module",
            )
        return entry
