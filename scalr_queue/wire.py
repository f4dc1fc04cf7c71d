"""The JSON wire format: job payloads and results in Redis are JSON, never pickle.

Nothing read from Redis is ever unpickled, so no value in Redis can make a worker run code. arq's job and
result dicts keep their shape (``f``, ``a``, ``k``, ``t``, ``et``; results add ``s``, ``r``, ...), so a plain
arq worker configured with these two functions reads our jobs and we read its.
"""

from __future__ import annotations

import traceback
from typing import Any

import pydantic_core

from .exceptions import SerializationError


def error_payload(exc: BaseException) -> dict[str, Any]:
    """How an exception is stored: its type, message and traceback, readable by any client."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)) if exc.__traceback__ else None,
    }


def _fallback(value: Any) -> Any:
    if isinstance(value, BaseException):
        return error_payload(value)
    raise TypeError(f"{type(value).__qualname__} is not JSON-able")


def dumps(data: Any) -> bytes:
    """arq's ``job_serializer``: JSON bytes, exceptions as ``{type, message, traceback}``."""
    return pydantic_core.to_json(data, fallback=_fallback, inf_nan_mode="constants")


def loads(raw: bytes) -> dict[str, Any]:
    """arq's ``job_deserializer``: JSON only; anything else (a pickle, garbage) is rejected unread."""
    data = pydantic_core.from_json(raw)
    if not isinstance(data, dict):
        raise ValueError("a job payload must be a JSON object")
    return data


def job_payload(task: str, kwargs: dict[str, Any], job_try: int | None, enqueue_time_ms: int) -> bytes:
    """A job in arq's shape, as JSON; names the first argument that is not JSON-able."""
    try:
        return pydantic_core.to_json(
            {"t": job_try, "f": task, "a": [], "k": kwargs, "et": enqueue_time_ms}, inf_nan_mode="constants"
        )
    except pydantic_core.PydanticSerializationError:
        for name, value in kwargs.items():
            try:
                pydantic_core.to_json(value)
            except pydantic_core.PydanticSerializationError:
                raise SerializationError(
                    f"argument {name!r} of task {task!r} is not JSON-able ({type(value).__qualname__}); "
                    "pass plain data (str, int, float, bool, None, lists, dicts, datetime, date, UUID, "
                    "Decimal, Enum, pydantic models) - ids rather than objects"
                ) from None
        raise  # pragma: no cover - the payload failed but no single argument did


def to_jsonable(value: Any, *, what: str = "the result") -> Any:
    """``value`` as plain JSON data, or a SerializationError naming ``what`` it was."""
    try:
        return pydantic_core.to_jsonable_python(value, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError:
        raise SerializationError(
            f"{what} is not JSON-able ({type(value).__qualname__}); return plain data "
            "(str, int, float, bool, None, lists, dicts, datetime, UUID, Decimal, Enum, pydantic models)"
        ) from None
