"""A worker module exporting tasks = [...], as users write it."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from uuid import UUID

import pydantic
import structlog

from scalr_queue import NonRetryableError, Retry, task

logger = logging.getLogger("tests.apps.basic")


class Colour(Enum):
    red = "red"
    blue = "blue"


class Invoice(pydantic.BaseModel):
    id: int
    total: Decimal
    issued: date


async def add(ctx: dict, x: int, y: int) -> int:
    return x + y


async def describe(
    ctx: dict,
    when: datetime,
    day: date,
    ident: UUID,
    amount: Decimal,
    colour: Colour,
    invoice: Invoice,
    tags: set[str],
) -> dict:
    """Reports the type each argument arrived as, to prove the JSON round trip rebuilt it."""
    return {
        "types": [type(v).__name__ for v in (when, day, ident, amount, colour, invoice, tags)],
        "when": when.isoformat(),
        "amount": str(amount),
        "invoice_total": str(invoice.total),
    }


async def untyped(ctx, value):  # type: ignore[no-untyped-def]
    return {"type": type(value).__name__, "value": value}


@task(max_tries=1)
async def boom(ctx: dict, message: str = "boom") -> None:
    raise ValueError(message)


@task(max_tries=3, backoff=0.1)
async def flaky(ctx: dict, fail_times: int) -> int:
    """Fails on its first ``fail_times`` tries, then returns the try that succeeded."""
    if ctx["job_try"] <= fail_times:
        raise ConnectionError(f"try {ctx['job_try']} failed")
    return ctx["job_try"]


@task(max_tries=3, backoff=[0.1, 0.2])
async def always_fails(ctx: dict, label: str) -> None:
    raise RuntimeError(f"{label}: try {ctx['job_try']} failed")


@task(timeout=0.5, max_tries=2, backoff=0.1)
async def slow_then_fast(ctx: dict) -> int:
    if ctx["job_try"] == 1:
        await asyncio.sleep(5)
    return ctx["job_try"]


@task(max_tries=5, backoff=2, retry_until=timedelta(seconds=1))
async def past_deadline(ctx: dict) -> None:
    raise RuntimeError("still failing")


async def give_up(ctx: dict) -> None:
    raise NonRetryableError("no point trying again")


async def unserializable(ctx: dict) -> object:
    return object()


async def log_inside(ctx: dict, note: str) -> str:
    logger.info("stdlib line from a task: %s", note)
    structlog.get_logger("tests.apps.basic").info("structlog line from a task", note=note)
    return note


async def retry_once(ctx: dict) -> int:
    if ctx["job_try"] == 1:
        raise Retry(defer=0.1)
    return ctx["job_try"]


async def sleep(ctx: dict, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task(timeout=0.5, max_tries=1)
async def too_slow(ctx: dict) -> None:
    await asyncio.sleep(10)


@task(queue="bulk", name="rebuild")
async def rebuild_report(ctx: dict, report_id: int) -> str:
    return f"rebuilt {report_id}"


tasks = [
    flaky,
    always_fails,
    slow_then_fast,
    past_deadline,
    add,
    describe,
    untyped,
    boom,
    give_up,
    unserializable,
    log_inside,
    retry_once,
    sleep,
    too_slow,
    rebuild_report,
]
