"""When a failed try is tried again: the backoff policies and the ``retry_until`` deadline (pure functions)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from .exceptions import WorkerSettingsError

BackoffSpec = Literal["exponential"] | float | int | timedelta | Sequence[float | int | timedelta]

EXPONENTIAL_BASE_S = 2.0
JITTER = (
    0.2  # each exponential delay is spread over +-20 %, so a burst of failures does not retry in lockstep
)


def _seconds(value: float | int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next try.

    ``exponential`` (the default): 2 s, 4 s, 8 s, ... capped at ``cap_s``, with jitter. A number: that many
    seconds every time. A list: one delay per try, the last one repeating.
    """

    kind: Literal["exponential", "fixed", "list"] = "exponential"
    delays_s: tuple[float, ...] = ()
    cap_s: float = 300.0

    @classmethod
    def parse(cls, spec: BackoffSpec | Backoff | None, *, cap_s: float = 300.0) -> Backoff:
        if spec is None or spec == "exponential":
            return cls("exponential", (), cap_s)
        if isinstance(spec, Backoff):
            return spec
        if isinstance(spec, str):
            raise WorkerSettingsError(
                f"backoff must be 'exponential', a number of seconds or a list of them, not {spec!r}"
            )
        if isinstance(spec, int | float | timedelta):
            seconds = _seconds(spec)
            if seconds < 0:
                raise WorkerSettingsError("a backoff delay cannot be negative")
            return cls("fixed", (seconds,), cap_s)
        delays = tuple(_seconds(d) for d in spec)
        if not delays or any(d < 0 for d in delays):
            raise WorkerSettingsError("a backoff list needs at least one delay, none negative")
        return cls("list", delays, cap_s)

    def delay_s(self, failed_try: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after try ``failed_try`` (1 = the first try) failed."""
        if self.kind == "fixed":
            return self.delays_s[0]
        if self.kind == "list":
            return self.delays_s[min(failed_try, len(self.delays_s)) - 1]
        nominal = min(EXPONENTIAL_BASE_S * 2.0 ** (failed_try - 1), self.cap_s)
        spread: float = (rng or random).uniform(1 - JITTER, 1 + JITTER)
        return min(nominal * spread, self.cap_s)


def parse_backoff_setting(value: str) -> Backoff:
    """``SCALR_QUEUE_BACKOFF``: ``exponential``, ``5`` or ``1,5,30``."""
    text = value.strip().lower()
    if text == "exponential":
        return Backoff.parse("exponential")
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise WorkerSettingsError(
            "use 'exponential', a number of seconds, or a comma-separated list such as 1,5,30"
        ) from None
    return Backoff.parse(numbers[0] if len(numbers) == 1 else numbers)


def retry_deadline_ms(retry_until: datetime | timedelta | float | None, first_enqueue_ms: int) -> int | None:
    """The moment (ms) after which a job is not tried again: a datetime, or a duration from the first enqueue."""
    if retry_until is None:
        return None
    if isinstance(retry_until, datetime):
        return int(retry_until.timestamp() * 1000)
    return first_enqueue_ms + int(_seconds(retry_until) * 1000)
