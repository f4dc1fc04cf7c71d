"""Progress of a running job: ``await progress(ctx, 0.4, "rendered 4 of 10 pages")`` in a task, read back with
``await job.progress()``, ``scalr-queue job ID`` and the dashboard's job page.

Kept in ``arq:progress:<id>`` as JSON ``{"fraction", "message", "at"}``; each report replaces the last and
expires with the job's result (SCALR_QUEUE_JOB_TIMEOUT + SCALR_QUEUE_KEEP_RESULT after it). What is read back
came from Redis: anything that is not such a record reads as no progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from . import keys, wire
from .config import get_settings
from .exceptions import ProgressError

MAX_MESSAGE = 500  # characters of a progress message; a longer one is cut

__all__ = ["Progress", "decode_progress", "progress", "read_progress"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's last progress report: how far (0 to 1), what it said, and when (UTC)."""

    fraction: float
    message: str | None
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "message": self.message, "at": self.at.isoformat()}

    def __str__(self) -> str:
        said = f" {self.message}" if self.message else ""
        return f"{self.fraction:.0%}{said} (at {self.at.isoformat(timespec='seconds')})"


async def progress(ctx: dict[str, Any], fraction: float, message: str | None = None) -> None:
    """Report how far the running job is, from 0 to 1, with an optional message (cut at 500 characters).

    ProgressError for a fraction that is not a number from 0 to 1, or a ``ctx`` that is not a job's. In sync mode
    (no Redis) the report is dropped."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
        raise ProgressError(f"progress must be a fraction from 0 to 1 (0.4 is 40%), not {fraction!r}")
    if not isinstance(ctx, dict) or not isinstance(ctx.get("job_id"), str):
        raise ProgressError("progress(ctx, ...) needs the ctx a task was called with (it names the job)")
    if message is not None and not isinstance(message, str):
        raise ProgressError(f"the progress message must be a string or None, not {type(message).__name__}")
    redis = ctx.get("redis")
    if redis is None:
        return
    settings = get_settings()  # the worker's: its results are kept as long
    record = {
        "fraction": float(fraction),
        "message": message[:MAX_MESSAGE] if message else None,
        "at": int(time.time() * 1000),
    }
    ttl_ms = max(int((settings.job_timeout + settings.keep_result) * 1000), 1000)
    await redis.set(keys.progress_key(ctx["job_id"]), wire.dumps(record), px=ttl_ms)


def decode_progress(raw: object) -> Progress | None:
    """A progress record read from Redis, or None if absent or not one."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        data = wire.parse(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fraction, message, at = data.get("fraction"), data.get("message"), data.get("at")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction):
        return None
    if type(at) is not int or not 0 <= at <= 253_402_300_799_999:
        return None
    return Progress(
        fraction=min(max(float(fraction), 0.0), 1.0),
        message=message[:MAX_MESSAGE] if isinstance(message, str) else None,
        at=datetime.fromtimestamp(at / 1000, tz=UTC),
    )


async def read_progress(redis: Redis, job_id: str) -> Progress | None:
    """The job's last progress report, or None."""
    return decode_progress(await redis.get(keys.progress_key(job_id)))
