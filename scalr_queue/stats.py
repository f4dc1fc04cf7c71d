"""Counting a queue: due jobs waiting, jobs running, jobs deferred to later (a retry or a schedule)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from arq.connections import ArqRedis

from . import keys

# Jobs stay in arq's sorted set while they run; the running ones carry an in-progress key. Workers take the
# oldest due jobs first, so the running ones sit at the front: looking at the first SCAN_LIMIT is enough.
SCAN_LIMIT = 1000
_COUNT_LUA = """
local due = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local later = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local front = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local running = 0
local oldest = false
for _, id in ipairs(front) do
  if redis.call('EXISTS', ARGV[2] .. id) == 1 then
    running = running + 1
  elseif not oldest then
    oldest = redis.call('ZSCORE', KEYS[1], id)
  end
end
return {due - running, running, later, oldest}
"""


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    in_progress: int
    deferred: int
    oldest_due_ms: int | None = None  # when the longest-waiting queued job became due


async def queue_counts(redis: ArqRedis, queue: str) -> QueueCounts:
    """One round trip, one script: what waits, what runs, what is deferred."""
    now_ms = int(time.time() * 1000)
    queued, running, later, oldest = await redis.eval(  # type: ignore[misc]  # redis-py types eval as sync | async
        _COUNT_LUA, 1, keys.queue_key(queue), str(now_ms), keys.IN_PROGRESS_PREFIX, str(SCAN_LIMIT)
    )
    return QueueCounts(
        queued=int(queued),
        in_progress=int(running),
        deferred=int(later),
        oldest_due_ms=int(float(oldest)) if oldest else None,
    )
