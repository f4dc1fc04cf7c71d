"""The JSON wire format: what round-trips, what is refused, and that nothing in Redis is ever unpickled."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import socket
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from enum import Enum
from uuid import UUID

import pydantic
import pytest

from scalr_queue import SerializationError, UndecodableJobError, wire
from scalr_queue.records import JobRecord
from scalr_queue.tasks import TaskSignature


def payload(task: str, kwargs: dict[str, object], job_try: int | None = None, enqueue_ms: int = 0) -> bytes:
    return JobRecord(task=task, kwargs=kwargs, enqueue_ms=enqueue_ms, job_try=job_try).encode()


def test_job_payload_is_arq_shaped_json() -> None:
    """The payload keeps arq's keys, so a plain arq worker with our deserializer reads it."""
    assert json.loads(payload("add", {"x": 1}, None, 123)) == {
        "t": None,
        "f": "add",
        "a": [],
        "k": {"x": 1},
        "et": 123,
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({1: "a", "1": "b"}, "has a dict key 1 that is not a string"),
        ({None: 1}, "has a dict key None that is not a string"),
        (math.nan, "holds nan"),
        ([1.0, math.inf], "holds inf"),
        ({"deep": -math.inf}, "holds -inf"),
    ],
)
def test_what_json_would_change_is_refused_naming_the_argument(value: object, problem: str) -> None:
    """Non-string keys (JSON would merge or rename them) and NaN/infinities (not JSON) fail at enqueue."""
    with pytest.raises(SerializationError, match=rf"argument 'value' of task 'job' {problem}"):
        payload("job", {"value": value})


def test_nesting_is_bounded_at_enqueue() -> None:
    """Nesting deeper than the bound fails at enqueue, never later on the worker."""
    deep: object = 1
    for _ in range(wire.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested deeper than 64"):
        payload("job", {"value": deep})
    shallow: object = 1
    for _ in range(wire.MAX_DEPTH - 1):
        shallow = [shallow]
    assert JobRecord.decode(payload("job", {"value": shallow})).kwargs == {"value": shallow}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"t": "abc", "f": "echo", "a": [], "k": {}, "et": 1}', "the try \\(t\\) is 'abc'"),
        (b'{"t": [1], "f": "echo", "a": [], "k": {}, "et": 1}', "the try \\(t\\) is \\[1\\]"),
        (b'{"t": 1, "f": 7, "a": [], "k": {}, "et": 1}', "the task name \\(f\\) is 7"),
        (
            b'{"t": 1, "f": "echo", "a": [], "k": [1], "et": 1}',
            "keyword arguments \\(k\\) are \\[1\\], not a mapping",
        ),
        (b'{"t": 1, "f": "echo", "a": {}, "k": {}, "et": 1}', "positional arguments \\(a\\)"),
        (b'{"t": 1, "f": "echo", "a": [], "k": {}, "et": 1e30}', "the enqueue time \\(et\\)"),
        (b'{"t": 1, "f": "echo", "a": [], "k": {}, "et": "now"}', "the enqueue time \\(et\\)"),
        (b"[1, 2]", "JSON list, not an object"),
        (b"\x80\x04garbage", "a pickle"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_job_records_are_checked_field_by_field(raw: bytes, reason: str) -> None:
    """Everything read from Redis is untrusted: a record of the wrong shape is refused with the reason."""
    with pytest.raises(UndecodableJobError, match=reason):
        JobRecord.decode(raw)


def test_not_json_able_argument_is_named() -> None:
    """The error names the argument and the task, and says what to pass instead."""
    conn = socket.socket()
    try:
        with pytest.raises(
            SerializationError, match=r"argument 'conn' of task 'sync' is not JSON-able \(socket\)"
        ):
            payload("sync", {"ok": 1, "conn": conn})
    finally:
        conn.close()


def test_exceptions_are_stored_readably() -> None:
    """A failure stores type, message and traceback as JSON."""
    try:
        raise KeyError("missing")
    except KeyError as exc:
        record = json.loads(wire.dumps({"s": False, "r": exc}))
    assert record["r"]["type"] == "KeyError"
    assert record["r"]["message"] == "'missing'"
    assert "raise KeyError" in record["r"]["traceback"]


def test_non_finite_floats_round_trip() -> None:
    """NaN and infinities survive (as the JSON constants Python reads back)."""
    data = wire.loads(wire.dumps({"a": [math.inf, -math.inf], "n": math.nan}))
    assert data["a"] == [math.inf, -math.inf]
    assert math.isnan(data["n"])


def test_loads_refuses_anything_but_a_json_object() -> None:
    """A pickle or garbage never reaches pickle.loads: it is rejected as not JSON."""
    with pytest.raises(ValueError, match="expected value"):
        wire.loads(pickle.dumps({"f": "add"}))
    with pytest.raises(ValueError, match="JSON object"):
        wire.loads(b"[1, 2]")


class Size(Enum):
    small = 1


class Model(pydantic.BaseModel):
    at: datetime


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_documented_types_round_trip_through_a_signature() -> None:
    """Every type in the docs' wire-format table comes back as itself when the argument is annotated."""

    async def everything(
        ctx: object,
        a: tuple[int, str],
        b: set[int],
        c: frozenset[str],
        d: datetime,
        e: date,
        f: clock,
        g: timedelta,
        h: UUID,
        i: Decimal,
        j: Size,
        k: Model,
        m: Point,
        n: bytes,
        o: float,
    ) -> None:
        return None

    values = {
        "a": (1, "x"),
        "b": {1, 2},
        "c": frozenset({"q"}),
        "d": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "e": date(2026, 1, 2),
        "f": clock(23, 59, 1),
        "g": timedelta(days=1, seconds=5),
        "h": UUID(int=99),
        "i": Decimal("0.10"),
        "j": Size.small,
        "k": Model(at=datetime(2026, 1, 1, tzinfo=UTC)),
        "m": Point(1, 2),
        "n": b"bytes",
        "o": 1e300,
    }
    arrived = TaskSignature("everything", everything).validate(
        JobRecord.decode(payload("everything", values, 1)).kwargs
    )
    assert arrived == values
    assert {name: type(v) for name, v in arrived.items()} == {name: type(v) for name, v in values.items()}
