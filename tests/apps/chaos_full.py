"""The chaos suite's full-Redis worker: a task that writes nothing to Redis itself (its result is the proof)."""

from __future__ import annotations


async def echo(ctx: dict, n: int, value: str = "") -> int:
    return n


tasks = [echo]
