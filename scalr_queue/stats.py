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
for _, id in ipairs(front) do
  running = running + redis.call('EXISTS', ARGV[2] .. id)
end
return {due - running, running, later}
"""


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    in_progress: int
    deferred: int


async def queue_counts(redis: ArqRedis, queue: str) -> QueueCounts:
    """One round trip, one script: what waits, what runs, what is deferred."""
    now_ms = int(time.time() * 1000)
    queued, running, later = await redis.eval(  # type: ignore[misc]  # redis-py types eval as sync | async
        _COUNT_LUA, 1, keys.queue_key(queue), str(now_ms), keys.IN_PROGRESS_PREFIX, str(SCAN_LIMIT)
    )
    return QueueCounts(queued=int(queued), in_progress=int(running), deferred=int(later))
