"""Reading records from Redis for display: everything there is untrusted, so nothing here raises on bad data.

A value that does not decode is shown as corrupt, with a short preview, instead of failing the page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import wire
from ..failed import FailedJob

PREVIEW_BYTES = 120
JSON_DISPLAY_CAP = 100_000  # characters of arguments or result shown on a page; the rest is cut
_TASK = re.compile(rb'"f"\s*:\s*("(?:[^"\\]|\\.)*")')
_ENQUEUED = re.compile(rb'"et"\s*:\s*(\d+)')


@dataclass(frozen=True)
class Peek:
    """What the first bytes of a job payload or result say: its task and enqueue time, or that it is corrupt."""

    task: str | None
    enqueued_ms: int | None
    corrupt: bool = False


def text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def preview(raw: bytes | None) -> str:
    """A short, printable rendering of bytes that are not what they should be."""
    if raw is None:
        return "(nothing)"
    return repr(raw[:PREVIEW_BYTES]) + (" …" if len(raw) > PREVIEW_BYTES else "")


def peek(raw: bytes | None, complete: bool) -> Peek | None:
    """The task and enqueue time of a job payload or result read with GETRANGE (``complete``: all of it).

    A whole value is parsed as JSON; a cut one is searched for its ``"f"`` and ``"et"`` fields, which arq's
    shape puts first (a large ``k`` may push ``et`` past the cut: then it is unknown).
    """
    if raw is None or raw == b"":
        return None
    if complete:
        data = loads(raw)
        if data is None:
            return Peek(None, None, corrupt=True)
        task = data.get("f")
        enqueued = data.get("et")
        return Peek(
            task if isinstance(task, str) else None,
            enqueued if isinstance(enqueued, int) and not isinstance(enqueued, bool) else None,
            corrupt=not isinstance(task, str),
        )
    if not raw.lstrip().startswith(b"{"):
        return Peek(None, None, corrupt=True)
    found = _TASK.search(raw)
    task = None
    if found:
        try:
            task = json.loads(found.group(1))
        except ValueError:
            task = None
    when = _ENQUEUED.search(raw)
    return Peek(task if isinstance(task, str) else None, int(when.group(1)) if when else None)


def loads(raw: bytes | None) -> dict[str, Any] | None:
    """A JSON object from Redis, or None if it is absent or not one."""
    if raw is None:
        return None
    try:
        data = wire.parse(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def failed_job(raw: bytes | None) -> FailedJob | None:
    """A failure record, or None if it is corrupt; fields of the wrong type are shown as text."""
    data = loads(raw)
    if data is None or not isinstance(data.get("job_id"), str):
        return None
    try:
        return FailedJob(
            job_id=data["job_id"],
            task=_str(data.get("task"), "<unknown>"),
            kwargs=data["kwargs"] if isinstance(data.get("kwargs"), dict) else {},
            queue=_str(data.get("queue"), "<unknown>"),
            tries=integer(data.get("tries")) or 0,
            reason=_str(data.get("reason"), "<unknown>"),
            error_type=_str(data.get("error_type"), "Error"),
            message=_str(data.get("message"), ""),
            traceback=data["traceback"] if isinstance(data.get("traceback"), str) else None,
            enqueued_at=data["enqueued_at"] if isinstance(data.get("enqueued_at"), str) else None,
            failed_at=_str(data.get("failed_at"), ""),
            max_tries=integer(data.get("max_tries")),
            worker_id=data["worker_id"] if isinstance(data.get("worker_id"), str) else None,
            extra=data["extra"] if isinstance(data.get("extra"), dict) else {},
        )
    except (TypeError, ValueError):  # pragma: no cover - every field is checked above
        return None


def worker_record(raw: bytes | None) -> dict[str, Any] | None:
    """A worker's heartbeat record with the fields the pages use made safe; None if corrupt."""
    data = loads(raw)
    if data is None or not isinstance(data.get("worker_id"), str):
        return None
    running = data.get("running")
    jobs = []
    for item in running if isinstance(running, list) else []:
        if isinstance(item, dict) and isinstance(item.get("job_id"), str):
            jobs.append({"job_id": item["job_id"], "task": _str(item.get("task"), "?")})
    return {
        "worker_id": data["worker_id"],
        "host": _str(data.get("host"), "?"),
        "pid": integer(data.get("pid")),
        "queue": _str(data.get("queue"), "?"),
        "tasks": [t for t in data.get("tasks") or [] if isinstance(t, str)]
        if isinstance(data.get("tasks"), list)
        else [],
        "started_at": _float(data.get("started_at")),
        "beat_at": _float(data.get("beat_at")),
        "running": jobs,
        "succeeded": integer(data.get("succeeded")) or 0,
        "failed": integer(data.get("failed")) or 0,
        "retried": integer(data.get("retried")) or 0,
    }


def as_json(value: Any) -> str:
    """Pretty JSON for a page, cut at ``JSON_DISPLAY_CAP`` characters."""
    shown = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    if len(shown) > JSON_DISPLAY_CAP:
        return shown[:JSON_DISPLAY_CAP] + f"\n… ({len(shown) - JSON_DISPLAY_CAP:,} more characters not shown)"
    return shown


def _str(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default if value is None else str(value)


def integer(value: Any) -> int | None:
    """A whole number from Redis data (an int, or digits in text), else None; a bool is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def iso_to_ms(value: str | None) -> int | None:
    """An ISO 8601 time (as the failed store writes them) in ms since the epoch, or None."""
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
