"""SCALR_QUEUE_MODE=sync: the job runs inline at enqueue, through the same checks and JSON round trip."""

from __future__ import annotations

import pytest

import scalr_queue
from scalr_queue import (
    ConfigError,
    Job,
    JobFailedError,
    JobStatus,
    SerializationError,
    TaskArgumentsError,
    enqueue,
)
from scalr_queue.config import reset_settings
from tests.apps import basic


@pytest.fixture
async def sync_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALR_QUEUE_MODE", "sync")
    monkeypatch.setenv("SCALR_QUEUE_TASKS", "tests.apps.basic")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing may touch Redis in sync mode
    reset_settings()
    await scalr_queue.close()


@pytest.mark.usefixtures("sync_mode")
async def test_runs_inline_and_keeps_the_outcome() -> None:
    """The handle reports complete and the result at once; Job(job_id) finds it too."""
    job = await enqueue("add", x=2, y=3)
    assert job is not None
    assert await job.status() is JobStatus.complete
    assert await job.result() == 5
    assert await Job(job.job_id).result() == 5


@pytest.mark.usefixtures("sync_mode")
async def test_errors_are_kept_on_the_handle() -> None:
    """A task that raises gives a failed handle whose result() raises JobFailedError; enqueue does not raise."""
    job = await enqueue("boom", message="nope")
    assert job is not None
    assert await job.status() is JobStatus.failed
    with pytest.raises(JobFailedError, match="ValueError: nope"):
        await job.result()


@pytest.mark.usefixtures("sync_mode")
async def test_same_checks_and_json_round_trip() -> None:
    """Arguments are checked and pass through JSON: a datetime arrives rebuilt, an object is refused."""
    from datetime import date
    from decimal import Decimal

    with pytest.raises(TaskArgumentsError, match="missing 'y'"):
        await enqueue("add", x=1)
    with pytest.raises(SerializationError, match="argument 'value'"):
        await enqueue("untyped", value=object())
    invoice = basic.Invoice(id=1, total=Decimal("5.00"), issued=date(2026, 1, 1))
    job = await enqueue(
        "describe",
        when="2026-01-01T10:00:00+00:00",
        day=date(2026, 1, 1),
        ident="00000000-0000-0000-0000-000000000007",
        amount=Decimal("1.5"),
        colour="red",
        invoice=invoice,
        tags=["x"],
    )
    assert job is not None
    assert (await job.result())["types"] == [
        "datetime",
        "date",
        "UUID",
        "Decimal",
        "Colour",
        "Invoice",
        "set",
    ]
    untyped = await enqueue("untyped", value=date(2026, 1, 1))
    assert untyped is not None
    assert await untyped.result() == {"type": "str", "value": "2026-01-01"}
    failing = await enqueue("unserializable")
    assert failing is not None
    with pytest.raises(JobFailedError, match="ResultNotSerializableError"):
        await failing.result()


@pytest.mark.usefixtures("sync_mode")
async def test_duplicate_job_id_returns_none() -> None:
    """As with Redis, a second enqueue with the same _job_id is refused."""
    assert await enqueue("add", x=1, y=1, _job_id="once") is not None
    assert await enqueue("add", x=1, y=1, _job_id="once") is None


async def test_sync_mode_with_a_function_needs_no_tasks_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passing the function is enough; a bare name without SCALR_QUEUE_TASKS is a clear error."""
    monkeypatch.setenv("SCALR_QUEUE_MODE", "sync")
    reset_settings()
    await scalr_queue.close()
    job = await enqueue(basic.add, x=4, y=4)
    assert job is not None
    assert await job.result() == 8
    with pytest.raises(ConfigError, match="set SCALR_QUEUE_TASKS"):
        await enqueue("add", x=1, y=1)
