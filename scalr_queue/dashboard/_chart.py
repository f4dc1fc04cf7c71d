"""The last-hour chart as SVG geometry: drawn on the server, so it needs no JavaScript and no chart library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..timeline import Minute

WIDTH = 720
HEIGHT = 140
BAR_GAP = 2


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_h: float
    retry_y: float
    retry_h: float
    fail_y: float
    fail_h: float
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int
    succeeded: int
    failed: int
    retried: int
    width: int = WIDTH
    height: int = HEIGHT


def chart(minutes: list[Minute]) -> Chart:
    """Stacked bars per minute (succeeded, retried, failed), scaled to the busiest minute."""
    peak = max((m.succeeded + m.retried + m.failed for m in minutes), default=0)
    scale = (HEIGHT - 4) / peak if peak else 0.0
    slot = WIDTH / max(len(minutes), 1)
    bars = []
    for index, m in enumerate(minutes):
        ok_h, retry_h, fail_h = m.succeeded * scale, m.retried * scale, m.failed * scale
        base = float(HEIGHT)
        when = datetime.fromtimestamp(m.start_s, tz=UTC).strftime("%H:%M")
        bars.append(
            Bar(
                x=index * slot + BAR_GAP / 2,
                width=max(slot - BAR_GAP, 1.0),
                ok_y=base - ok_h,
                ok_h=ok_h,
                retry_y=base - ok_h - retry_h,
                retry_h=retry_h,
                fail_y=base - ok_h - retry_h - fail_h,
                fail_h=fail_h,
                title=f"{when} UTC: {m.succeeded} succeeded, {m.retried} retried, {m.failed} failed",
            )
        )
    return Chart(
        bars=bars,
        peak=peak,
        succeeded=sum(m.succeeded for m in minutes),
        failed=sum(m.failed for m in minutes),
        retried=sum(m.retried for m in minutes),
    )
