"""The records scalr_queue keeps in Redis, as typed objects: a job, a result, and where a job stands.

arq's one-letter keys (``f``, ``a``, ``k``, ``t``, ``et``; results add ``s``, ``r``, ``st``, ``ft``, ``q``,
``id``) appear only here, so a plain arq worker reads our jobs and we read its. Everything read from Redis is
untrusted: ``decode`` checks every field and raises UndecodableJobError with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import wire
from .exceptions import UndecodableJobError

# The largest enqueue time a datetime can hold (9999-12-31), in ms since the epoch.
MAX_TIME_MS = 253_402_300_799_999
MAX_TRY = 1_000_000
PICKLE_MARK = b"\x80"  # every pickle protocol >= 2 starts with PROTO
META_KEY = "sq"  # scalr_queue's own additions to arq's job record; arq ignores unknown keys
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_BATCH_ID = re.compile(r"[0-9a-f]{32}")  # batch() makes its ids: 16 random bytes, hex


class JobStatus(StrEnum):
    """Where a job is; ``failed`` is a finished job whose last try did not succeed; ``aborted``, one somebody
    aborted (``Job.abort()``): it is ending, or ended, without success and is not tried again."""

    queued = "queued"
    deferred = "deferred"
    in_progress = "in_progress"
    complete = "complete"
    failed = "failed"
    aborted = "aborted"
    waiting = "waiting"  # held back by _depends_on until the jobs it depends on succeed
    not_found = "not_found"


ABORTED_MESSAGE = "aborted"  # the message of the CancelledError an aborted job's result holds (arq's shape)


def result_status(result: ResultRecord) -> JobStatus:
    """A finished job's status from its result: complete, failed, or aborted."""
    if result.success:
        return JobStatus.complete
    error = result.error or {}
    if error.get("type") == "CancelledError" and error.get("message") == ABORTED_MESSAGE:
        return JobStatus.aborted
    return JobStatus.failed


def batch_id_in(value: object) -> str | None:
    """A batch id read from a job record (untrusted): one ``batch()`` could have made, else None."""
    return value if isinstance(value, str) and _BATCH_ID.fullmatch(value) else None


def valid_name(name: object) -> bool:
    """A task name: 1-200 characters, no whitespace or control characters."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A queued job: ``arq:job:<id>``."""

    task: str
    kwargs: dict[str, Any]
    enqueue_ms: int
    args: tuple[Any, ...] = ()
    job_try: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "t": self.job_try,
            "f": self.task,
            "a": list(self.args),
            "k": self.kwargs,
            "et": self.enqueue_ms,
        }
        if self.meta:
            data[META_KEY] = self.meta
        return data

    def encode(self) -> bytes:
        """JSON, every argument checked (SerializationError names the first one that is not JSON-able)."""
        return wire.encode_arguments(self.task, self.kwargs, self.to_dict())

    @classmethod
    def decode(cls, raw: bytes) -> JobRecord:
        return cls.from_dict(_object(raw, "job"))

    @classmethod
    def from_dict(cls, data: dict[Any, Any]) -> JobRecord:
        """A job in arq's shape (decoded JSON, or an unpickled arq job), every field checked."""
        task = data.get("f")
        if not isinstance(task, str) or not task:
            raise UndecodableJobError(f"the task name (f) is {_shown(task)}, not a non-empty string")
        args = data.get("a", [])
        if not isinstance(args, list):
            raise UndecodableJobError(f"the positional arguments (a) are {_shown(args)}, not a list")
        kwargs = data.get("k", {})
        if not isinstance(kwargs, dict):
            raise UndecodableJobError(f"the keyword arguments (k) are {_shown(kwargs)}, not a mapping")
        job_try = data.get("t")
        if job_try is not None and not _int_in(job_try, 0, MAX_TRY):
            raise UndecodableJobError(f"the try (t) is {_shown(job_try)}, not a whole number of tries")
        enqueue_ms = data.get("et")
        if type(enqueue_ms) is not int or not 0 <= enqueue_ms <= MAX_TIME_MS:
            raise UndecodableJobError(f"the enqueue time (et) is {_shown(enqueue_ms)}, not a time in ms")
        meta = data.get(META_KEY)
        return cls(
            task=task,
            kwargs=kwargs,
            enqueue_ms=enqueue_ms,
            args=tuple(args),
            job_try=job_try,
            meta=meta if isinstance(meta, dict) else {},
        )


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A finished job: ``arq:result:<id>``; ``result`` is the return value, or the error when it failed."""

    job_id: str
    task: str
    success: bool
    result: Any
    job_try: int
    enqueue_ms: int
    start_ms: int
    finish_ms: int
    queue: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()

    def encode(self) -> bytes:
        return wire.dumps(
            {
                "t": self.job_try,
                "f": self.task,
                "a": list(self.args),
                "k": self.kwargs,
                "et": self.enqueue_ms,
                "s": self.success,
                "r": self.result,
                "st": self.start_ms,
                "ft": self.finish_ms,
                "q": self.queue,
                "id": self.job_id,
            }
        )

    @property
    def error(self) -> dict[str, Any] | None:
        """``{type, message, traceback}`` of a failed job; None for a success."""
        if self.success:
            return None
        if isinstance(self.result, dict) and "type" in self.result:
            return {
                "type": str(self.result.get("type")),
                "message": str(self.result.get("message") or ""),
                "traceback": self.result.get("traceback"),
            }
        return {"type": "Error", "message": str(self.result), "traceback": None}

    @classmethod
    def decode(cls, raw: bytes, job_id: str = "?") -> ResultRecord:
        return cls.from_dict(_object(raw, "result"), job_id)

    @classmethod
    def from_dict(cls, data: dict[Any, Any], job_id: str = "?") -> ResultRecord:
        success = data.get("s")
        if not isinstance(success, bool):
            raise UndecodableJobError(f"the success flag (s) is {_shown(success)}, not true or false")
        kwargs = data.get("k")
        args = data.get("a")
        return cls(
            job_id=str(data.get("id") or job_id),
            task=str(data.get("f") or "<unknown>"),
            success=success,
            result=data.get("r"),
            job_try=_int_or(data.get("t"), 0),
            enqueue_ms=_int_or(data.get("et"), 0),
            start_ms=_int_or(data.get("st"), 0),
            finish_ms=_int_or(data.get("ft"), 0),
            queue=str(data.get("q") or ""),
            kwargs=kwargs if isinstance(kwargs, dict) else {},
            args=tuple(args) if isinstance(args, list) else (),
        )


def _object(raw: bytes, what: str) -> dict[str, Any]:
    if raw.startswith(PICKLE_MARK):
        raise UndecodableJobError(
            f"the {what} is a pickle (plain arq's format); scalr_queue never unpickles: see "
            "docs/migrating.md (scalr-queue migrate)"
        )
    try:
        data = wire.parse(raw)
    except ValueError as exc:
        raise UndecodableJobError(f"the {what} is not JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise UndecodableJobError(f"the {what} is JSON {type(data).__name__}, not an object")
    return data


def _int_in(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _int_or(value: Any, default: int) -> int:
    return value if _int_in(value, 0, MAX_TIME_MS) else default


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def preview(raw: bytes | None, limit: int = 200) -> str | None:
    """The first bytes of an undecodable record, printable: kept in its failure record for the operator."""
    if raw is None:
        return None
    shown = repr(raw[:limit])
    return shown + ("…" if len(raw) > limit else "")
