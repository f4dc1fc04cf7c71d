"""Claiming due jobs: one script call takes a batch, with each job's payload and try number.

arq claims one id at a time (WATCH, EXISTS, ZSCORE, MULTI), then reads the payload and counts the try in another
transaction: four to six round trips per job, and workers reading the same ids mostly lose races to each other.
Here the claim is still arq's in-progress key (set only if absent, as a lease) and the try is still arq's retry
counter: the data model is arq's, the round trips are one per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from .. import keys

SCAN_LIMIT = 1000  # due ids looked at per claim: running jobs sit at the front of the queue
RETRY_KEY_TTL_S = 88_400  # arq's expiry on its try counter

# KEYS: queue, paused flag, notify list. ARGV: now (ms), how many, scan limit, lease (ms), key prefix.
# Returns the score of the next job not yet due (or false), then id, score, payload (or false), try for each claim.
# When it takes some but fewer than asked, nothing else is due: the wake-up tokens are spent, so they are dropped.
# An idle look (nothing due) costs two reads.
_CLAIM_LUA = """
local now = tonumber(ARGV[1])
local out = {false}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 and redis.call('EXISTS', KEYS[2]) == 1 then return out end
local want = tonumber(ARGV[2])
local taken = 0
for i = 1, #due, 2 do
  local id = due[i]
  if redis.call('SET', ARGV[5] .. 'in-progress:' .. id, '1', 'NX', 'PX', ARGV[4]) then
    local retry = ARGV[5] .. 'retry:' .. id
    local try = redis.call('INCR', retry)
    redis.call('EXPIRE', retry, RETRY_TTL)
    out[#out + 1] = id
    out[#out + 1] = due[i + 1]
    out[#out + 1] = redis.call('GET', ARGV[5] .. 'job:' .. id)
    out[#out + 1] = try
    taken = taken + 1
    if taken >= want then break end
  end
end
if taken < want then
  if taken > 0 then redis.call('DEL', KEYS[3]) end
  local upcoming = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  out[1] = upcoming[2] or false
end
return out
""".replace("RETRY_TTL", str(RETRY_KEY_TTL_S))


@dataclass(frozen=True)
class Claimed:
    job_id: str
    score: int
    payload: bytes | None  # None: the job's data expired
    job_try: int


class Claimer:
    """Claims batches of due jobs from one queue for one worker."""

    def __init__(self, redis: ArqRedis, queue_key: str, lease_s: float) -> None:
        self.queue_key = queue_key
        self.lease_ms = int(lease_s * 1000)
        self._script = redis.register_script(_CLAIM_LUA)

    async def claim(self, count: int) -> tuple[list[Claimed], int | None]:
        """Up to ``count`` due jobs, and when (ms) the next job not yet due becomes due (None: none waits)."""
        flat: list[Any] = await self._script(
            keys=[self.queue_key, keys.paused_key(self.queue_key), keys.notify_key(self.queue_key)],
            args=[int(time.time() * 1000), count, SCAN_LIMIT, self.lease_ms, "arq:"],
        )
        upcoming = int(float(flat[0])) if flat[0] else None
        claimed = [
            Claimed(flat[i].decode(), int(float(flat[i + 1])), flat[i + 2] or None, int(flat[i + 3]))
            for i in range(1, len(flat), 4)
        ]
        return claimed, upcoming
