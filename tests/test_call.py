"""``call(task, **kwargs)``: a job described, not queued, checked when built as ``enqueue`` checks; dispatched by
``enqueue_many`` or ``await c.enqueue()``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import scalr_queue
from scalr_queue import (
    Call,
    SerializationError,
    TaskArgumentsError,
    UnknownTaskError,
    call,
    enqueue_many,
)
from tests.apps import basic
from tests.conftest import WorkerProcess


def test_call_is_exported() -> None:
    """``call`` (and its type) are public names."""
    assert "call" in scalr_queue.__all__ and "Call" in scalr_queue.__all__


def test_call_checks_like_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown task, bad arguments, bad options and values that are not JSON raise when the call is built."""
    with pytest.raises(TaskArgumentsError):
        call(basic.add, x=1)  # y missing
    with pytest.raises(TaskArgumentsError):
        call(basic.add, x=1, y=2, z=3)
    with pytest.raises(TaskArgumentsError, match="_priority"):
        call(basic.add, x=1, y=2, _priority=11)
    with pytest.raises(TaskArgumentsError, match="unknown enqueue option '_defer'"):
        call(basic.add, x=1, y=2, _defer=3)
    with pytest.raises(SerializationError):
        call(basic.untyped, value=object())
    with pytest.raises(UnknownTaskError):
        call("not a name")
    monkeypatch.setenv("SCALR_QUEUE_TASKS", "tests.apps.basic")
    scalr_queue.testing.reset()
    with pytest.raises(UnknownTaskError, match="did you mean 'add'"):
        call("ad", x=1, y=2)
    assert call("add", x=1, y=2) == Call("add", {"x": 1, "y": 2})


async def test_calls_dispatch_with_enqueue_many(spawn: Callable[..., WorkerProcess]) -> None:
    """Calls and pairs mix in enqueue_many; a call queues alone with ``enqueue()``; options ride along."""
    worker = spawn("tests.apps.basic")
    worker.wait_started()
    first, second = await enqueue_many([call(basic.add, x=1, y=2, _priority=3), ("add", {"x": 2, "y": 2})])
    assert first is not None and second is not None
    assert await first.result(timeout=10) == 3
    assert await second.result(timeout=10) == 4
    alone = await call(basic.add, x=5, y=5, _job_id="call-alone").enqueue()
    assert alone is not None and alone.job_id == "call-alone"
    assert await alone.result(timeout=10) == 10
    assert await call(basic.add, x=5, y=5, _job_id="call-alone").enqueue() is None  # arq's duplicate rule
