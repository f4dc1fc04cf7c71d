"""The chaos suite's SIGTERM trap under load: lifecycle's tasks, with the stop-as-a-send-completes trap of
``sigterm_race`` armed once the queue holds no more than what runs (so it springs when the worker goes idle)."""

from __future__ import annotations

from tests.apps import sigterm_race
from tests.apps.lifecycle import record_run as _record_run
from tests.apps.lifecycle import traced_sleep

_ARMED_ONCE = {"done": False}  # one trapped SIGTERM per worker: a second one is an operator's "stop now"


async def record_run(ctx: dict, n: int, pad: str = "") -> int:
    result = await _record_run(ctx, n)
    if not _ARMED_ONCE["done"] and await ctx["redis"].zcard(ctx["scalr_queue"].queue) <= 100:
        _ARMED_ONCE["done"] = True
        sigterm_race.ARMED["blpop"] = True
    return result


tasks = [record_run, traced_sleep]
