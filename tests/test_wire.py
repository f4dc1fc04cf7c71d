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

from scalr_queue import SerializationError, wire
from scalr_queue.tasks import TaskSignature


def test_job_payload_is_arq_shaped_json() -> None:
    """The payload keeps arq's keys, so a plain arq worker with our deserializer reads it."""
    payload = json.loads(wire.job_payload("add", {"x": 1}, None, 123))
    assert payload == {"t": None, "f": "add", "a": [], "k": {"x": 1}, "et": 123}


def test_not_json_able_argument_is_named() -> None:
    """The error names the argument and the task, and says what to pass instead."""
    conn = socket.socket()
    try:
        with pytest.raises(
            SerializationError, match=r"argument 'conn' of task 'sync' is not JSON-able \(socket\)"
        ):
            wire.job_payload("sync", {"ok": 1, "conn": conn}, None, 0)
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
        "o": math.inf,
    }
    arrived = TaskSignature("everything", everything).validate(
        wire.loads(wire.job_payload("everything", values, 1, 0))["k"]
    )
    assert arrived == values
    assert {name: type(v) for name, v in arrived.items()} == {name: type(v) for name, v in values.items()}
