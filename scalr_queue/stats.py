"""Counting a queue: due jobs waiting, jobs running, jobs deferred to later (a retry or a schedule)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from . import keys
from ._lua import scripts

# Jobs stay in arq's sorted set while they run; the running ones carry an in-progress key. Workers take the
# oldest due jobs first, so the running ones sit at the front: looking at the first SCAN_LIMIT is enough.
SCAN_LIMIT = 1000


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    in_progress: int
    deferred: int
    oldest_due_ms: int | None = None  # when the longest-waiting queued job became due


async def queue_counts(redis: Redis, queue: str) -> QueueCounts:
    """One round trip, one script: what waits, what runs, what is deferred."""
    now_ms = int(time.time() * 1000)
    queued, running, later, oldest = await scripts(redis).count(
        keys=[keys.queue_key(queue)], args=[now_ms, keys.IN_PROGRESS_PREFIX, SCAN_LIMIT]
    )
    oldest_ms = float(oldest) if oldest else None
    return QueueCounts(
        queued=int(queued),
        in_progress=int(running),
        deferred=int(later),
        oldest_due_ms=int(oldest_ms) if oldest_ms is not None and math.isfinite(oldest_ms) else None,
    )
