"""The JSON wire format: what round-trips, what is refused, and that nothing in Redis is ever unpickled."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import socket
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from enum import Enum
from pathlib import Path
from uuid import UUID

import pydantic
import pytest

from scalr_queue import Job, JobFailedError, SerializationError, enqueue, wire
from scalr_queue.tasks import TaskSignature
from scalr_queue.worker import serve


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


class _RunsCode:
    """A pickle that would create a file if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


async def test_pickle_and_garbage_payloads_never_run_and_worker_keeps_serving(
    redis, queue: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Jobs whose payload is a code-running pickle or garbage fail with the reason; nothing runs; others complete."""
    marker = tmp_path / "pwned"
    now_ms = int(time.time() * 1000)
    for job_id, raw in (("evil-pickle", pickle.dumps(_RunsCode(marker))), ("garbage", b"\x00\xffnot json")):
        await redis.set(f"arq:job:{job_id}", raw, px=60_000)
        await redis.zadd(f"arq:queue:{queue}", {job_id: now_ms})
    good = await enqueue("add", x=1, y=2)
    assert good is not None
    await serve("tests.apps.basic", burst=True, handle_signals=False)
    assert not marker.exists()
    assert await good.result(timeout=1) == 3
    for job_id in ("evil-pickle", "garbage"):
        with pytest.raises(JobFailedError, match="DeserializationError: unable to deserialize job"):
            await Job(job_id).result(timeout=1)
        record = json.loads(await redis.get(f"arq:result:{job_id}"))
        assert record["s"] is False


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
