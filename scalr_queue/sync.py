"""Enqueue from synchronous code: a ``def`` FastAPI handler, a management command, a script, a Celery-era view.

``enqueue_sync`` and ``enqueue_many_sync`` take the same arguments as their async twins and do the same checks;
each calling thread gets a private event loop, run only for the length of the call, with its own default client.
An error is raised in the caller, as with ``await enqueue(...)``. From ``async def`` code, ``await enqueue(...)``:
these refuse to run on a thread whose event loop is running (they would block it).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from .client import Job, close, enqueue, enqueue_many
from .exceptions import ScalrQueueError

__all__ = ["close_sync", "enqueue_many_sync", "enqueue_sync"]

T = TypeVar("T")


class _ThreadLoops:
    """One event loop per calling thread, run only while a call waits on it (``run_until_complete``): no thread of
    ours and no hand-over between threads, so a call costs little more than its ``await`` twin. Each thread's loop
    has its own default client (a pool of one connection for sequential calls)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loops: list[asyncio.AbstractEventLoop] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise ScalrQueueError(
                "enqueue_sync was called on a thread whose event loop is running (it would block it): "
                "in async code, use `await enqueue(...)`"
            )
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._loops.append(loop)
        return loop.run_until_complete(coro)

    def stop(self) -> None:
        """Close every thread's pool and loop (at exit; or ``close_sync()``, from a thread not using them)."""
        with self._lock:
            loops, self._loops = self._loops, []
        for loop in loops:
            if loop.is_closed() or loop.is_running():
                continue
            with contextlib.suppress(Exception):  # at exit: a pool that will not close goes with the process
                loop.run_until_complete(close())
            loop.close()


_LOOPS = _ThreadLoops()
atexit.register(_LOOPS.stop)


def enqueue_sync(task: str | Callable[..., Any], /, **kwargs: Any) -> Job | None:
    """``enqueue`` for synchronous code: the same arguments, checks, errors and result, without ``await``."""
    job = _LOOPS.run(enqueue(task, **kwargs))
    return None if job is None else _detached(job)


def enqueue_many_sync(
    jobs: Iterable[tuple[str | Callable[..., Any], Mapping[str, Any]]], *, _queue_name: str | None = None
) -> list[Job | None]:
    """``enqueue_many`` for synchronous code."""
    found = _LOOPS.run(enqueue_many(list(jobs), _queue_name=_queue_name))
    return [None if job is None else _detached(job) for job in found]


def close_sync() -> None:
    """Close the sync entry points' pools and loops (done at exit anyway); the next call opens new ones."""
    _LOOPS.stop()


def _detached(job: Job) -> Job:
    """A handle not tied to the private loop's client: awaited later in async code, it uses that loop's client."""
    handle = Job(job.job_id, job.queue)
    handle.deduplicated = job.deduplicated
    return handle
