"""Typed task handles as users write them: mypy --strict passes on this file (tests/test_typing.py)."""

from __future__ import annotations

from typing import Any, assert_type

from scalr_queue import Job, task


@task
async def send_invoice_email(ctx: dict[str, Any], invoice_id: int, *, cc: str | None = None) -> str:
    return f"sent {invoice_id}"


@task(max_tries=3, queue="bulk")
async def rebuild(ctx: dict[str, Any], report_id: int) -> dict[str, int]:
    return {"report_id": report_id}


async def main() -> None:
    job = await send_invoice_email.enqueue(invoice_id=7)
    assert_type(job, Job[str] | None)
    if job is not None:
        assert_type(await job.result(timeout=5), str)
    other = await send_invoice_email.enqueue(invoice_id=8, cc="boss@example.com")
    later = await rebuild.with_options(_defer_by=10, _priority=9).enqueue(report_id=1)
    if later is not None:
        assert_type(await later.result(), dict[str, int])
    plain = Job("some-id")  # rebuilt from an id: its result is Any
    assert_type(await plain.result(), Any)
    assert_type(other, Job[str] | None)
    assert_type(await send_invoice_email({}, 7), str)  # calling the task still calls the function
