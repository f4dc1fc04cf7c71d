"""The JSON wire format: job payloads and results in Redis are JSON, never pickle.

Nothing read from Redis is ever unpickled, so no value in Redis can make a worker run code. What the producer
accepts, the worker can decode: arguments are checked here before anything is written (string keys only, finite
numbers, bounded nesting), with an error that names the argument.
"""

from __future__ import annotations

import asyncio
import math
import traceback
from typing import Any

import pydantic_core

from .exceptions import JobFailedError, SerializationError

MAX_DEPTH = 64  # nesting of lists and dicts in one argument; the worker's JSON parser stops near 200
_PLAIN = (str, int, bool, type(None))
PLAIN_DATA_HINT = (
    "pass plain data (str, int, float, bool, None, lists, dicts with str keys, datetime, date, UUID, "
    "Decimal, Enum, pydantic models) - ids rather than objects"
)


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


def parse(raw: bytes | str) -> Any:
    """JSON text to data; ValueError for anything else (a pickle, garbage)."""
    return pydantic_core.from_json(raw)


def loads(raw: bytes) -> dict[str, Any]:
    """arq's ``job_deserializer``: JSON only; anything else (a pickle, garbage) is rejected unread.

    A failed result's stored error comes back as an exception, as arq's ``Job.result()`` expects: a
    ``CancelledError`` for an aborted job (so arq's ``Job.abort()`` works), else ``JobFailedError``.
    """
    data = parse(raw)
    if not isinstance(data, dict):
        raise ValueError("a job payload must be a JSON object")
    if data.get("s") is False and isinstance(error := data.get("r"), dict) and "type" in error:
        data["r"] = stored_error(str(data.get("id", "?")), error)
    return data


def stored_error(job_id: str, error: dict[str, Any]) -> BaseException:
    """The exception a stored ``{type, message, traceback}`` stands for, for arq's readers."""
    if error.get("type") == "CancelledError":
        return asyncio.CancelledError(str(error.get("message") or ""))
    return JobFailedError(
        job_id, str(error.get("type")), str(error.get("message") or ""), error.get("traceback")
    )


def check_argument(task: str, name: str, value: Any) -> None:
    """Refuse what JSON would silently change: non-string dict keys, NaN and infinities, deep nesting."""
    problem = _problem(value, 0)
    if problem:
        raise SerializationError(f"argument {name!r} of task {task!r} {problem}; {PLAIN_DATA_HINT}")


def _problem(value: Any, depth: int) -> str | None:
    kind = type(value)
    if kind in _PLAIN:
        return None
    if kind is float:
        return None if math.isfinite(value) else f"holds {value!r}, which JSON cannot carry"
    if depth >= MAX_DEPTH:
        return f"is nested deeper than {MAX_DEPTH} levels"
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"has a dict key {key!r} that is not a string (JSON would turn it into one)"
            problem = _problem(item, depth + 1)
            if problem:
                return problem
        return None
    if kind in (list, tuple, set, frozenset):
        for item in value:
            problem = _problem(item, depth + 1)
            if problem:
                return problem
    return None  # datetime, UUID, Decimal, Enum, models ...: pydantic serializes them


def encode_arguments(task: str, kwargs: dict[str, Any], payload: dict[str, Any]) -> bytes:
    """``payload`` as JSON, every argument checked first; names the first argument that is not JSON-able."""
    for name, value in kwargs.items():
        check_argument(task, name, value)
    try:
        encoded = pydantic_core.to_json(payload, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError:
        for name, value in kwargs.items():
            try:
                pydantic_core.to_json(value)
            except pydantic_core.PydanticSerializationError:
                raise SerializationError(
                    f"argument {name!r} of task {task!r} is not JSON-able ({type(value).__qualname__}); "
                    + PLAIN_DATA_HINT
                ) from None
        raise  # pragma: no cover - the payload failed but no single argument did
    if (b"NaN" in encoded or b"Infinity" in encoded) and _has_constant(encoded):
        raise SerializationError(
            f"an argument of task {task!r} holds NaN or Infinity (inside a model or object), which JSON "
            "cannot carry"
        )
    return encoded


def _has_constant(encoded: bytes) -> bool:
    """Whether the JSON holds a bare NaN/Infinity (not inside a string); rare, so checked only when seen."""
    import json

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        json.loads(encoded, parse_constant=refuse)
    except ValueError:
        return True
    return False


def to_jsonable(value: Any, *, what: str = "the result") -> Any:
    """``value`` as plain JSON data, or a SerializationError naming ``what`` it was."""
    try:
        return pydantic_core.to_jsonable_python(value, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError:
        raise SerializationError(
            f"{what} is not JSON-able ({type(value).__qualname__}); return plain data "
            "(str, int, float, bool, None, lists, dicts, datetime, UUID, Decimal, Enum, pydantic models)"
        ) from None
