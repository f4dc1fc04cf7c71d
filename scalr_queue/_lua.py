"""Every Lua script scalr_queue runs, in one place, each registered once per Redis client (EVALSHA).

Keys come in from ``keys.py``: fixed keys as KEYS, and for keys named by job ids the script builds from an id,
the prefix as an argument. Scripts that write under a full Redis (``maxmemory`` with ``noeviction``) start with a
write that frees or grows nothing (DEL, PEXPIRE): Redis refuses a script's memory-growing command only when it is
its first write, so finishing a job frees its payload and then stores its result even when Redis is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# The failed store: a record per job (expiring with the retention age), the set of all of them and an index per
# queue (both scored by failure time), trimmed to the age and count bounds. An id trimmed for count leaves its
# queue's index too (the queue is read from the record).
_FAILED_STORE = """
local function keep_failed(failed_set, index, record_key, id, record, now, max_age)
  redis.call('SET', record_key, record, 'PX', max_age)
  redis.call('ZADD', failed_set, now, id)
  redis.call('ZADD', index, now, id)
  redis.call('PEXPIRE', index, max_age)
end
local function trim_failed(failed_set, index, record_prefix, index_prefix, now, max_age, max_count)
  local oldest = now - max_age
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', failed_set, '-inf', oldest)) do
    redis.call('DEL', record_prefix .. id)
  end
  redis.call('ZREMRANGEBYSCORE', failed_set, '-inf', oldest)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', oldest)
  local extra = redis.call('ZCARD', failed_set) - max_count
  if extra > 0 then
    for _, id in ipairs(redis.call('ZRANGE', failed_set, 0, extra - 1)) do
      local record = redis.call('GET', record_prefix .. id)
      if record then
        local ok, data = pcall(cjson.decode, record)
        if ok and type(data) == 'table' and type(data.queue) == 'string' then
          redis.call('ZREM', index_prefix .. data.queue, id)
        end
      end
      redis.call('DEL', record_prefix .. id)
    end
    redis.call('ZREMRANGEBYRANK', failed_set, 0, extra - 1)
  end
  redis.call('ZREMRANGEBYRANK', index, 0, -max_count - 1)
end
"""

# Queue a job unless a job or result with its id exists (arq's rule), and, for a cron run, only once per tick.
# A job due now, or a deferred one that is now the first due, pushes a wake-up token: an idle worker wakes at
# once (or re-arms its timer) instead of at its next look.
# KEYS: job, result, queue, queues set, notify list[, once key]
# ARGV: expiry ms, payload, score, job id, queue name, now ms, notify cap[, once ttl ms]
ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
if KEYS[6] and not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[8]) then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
local wake = tonumber(ARGV[3]) <= tonumber(ARGV[6])
if not wake then
  local first = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[6], '+inf', 'LIMIT', 0, 1)
  wake = first[1] == ARGV[4]
end
if wake then
  redis.call('RPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[7]), -1)
end
return 1
"""

# Take a job: its lease (the in-progress key, holding the worker's id), a try on arq's counter, its payload,
# whether it was aborted. A counter or payload of the wrong type is reported (false / 0), not fatal to the claim.
# ARGV: now ms, how many, scan limit, lease ms, worker id, in-progress prefix, retry prefix, job prefix,
#       retry ttl s, abort set
_TAKE = """
local taken = 0
local out = {false}
local function take(id, score)
  if not redis.call('SET', ARGV[6] .. id, ARGV[5], 'NX', 'PX', ARGV[4]) then return end
  local counter = ARGV[7] .. id
  local try = redis.pcall('INCR', counter)
  if type(try) == 'table' then try = false else redis.call('EXPIRE', counter, ARGV[9]) end
  local payload = redis.pcall('GET', ARGV[8] .. id)
  if type(payload) == 'table' then payload = 0 end
  out[#out + 1] = id
  out[#out + 1] = score
  out[#out + 1] = payload
  out[#out + 1] = try
  out[#out + 1] = redis.call('ZSCORE', ARGV[10], id) and 1 or 0
  taken = taken + 1
end
"""

# Claim up to ARGV[2] due jobs, oldest first; returns the score of the next job not yet due (false: none;
# 'paused': the queue is paused), then id, score, payload (false: expired; 0: not a string), try (false: corrupt
# counter), aborted (1/0) for each claim. When it takes fewer than asked nothing else is due: spent wake-up
# tokens are dropped. A job scored +inf would never be due: it is taken (and failed) once nothing else waits.
# A paused queue answers 'paused' only when something is due (an idle look stays one read).
# KEYS: queue, paused flag, notify list. ARGV: as _TAKE.
CLAIM = (
    _TAKE
    + """
-- An idle look costs one read: the queue's first job, when nothing is due yet (or nothing waits at all).
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return out end
if head[2] == 'inf' then
  take(head[1], head[2])
  return out
end
if tonumber(head[2]) > tonumber(ARGV[1]) then
  out[1] = head[2]
  return out
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  out[1] = 'paused'
  return out
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
-- A write that grows nothing first, so a full Redis still hands out jobs: running them is what frees memory.
if #due > 0 then redis.call('PEXPIRE', KEYS[3], 3600000) end
local want = tonumber(ARGV[2])
for i = 1, #due, 2 do
  take(due[i], due[i + 1])
  if taken >= want then break end
end
if taken < want then
  if taken > 0 then redis.call('DEL', KEYS[3]) end
  local upcoming = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if upcoming[2] == 'inf' then take(upcoming[1], upcoming[2]) else out[1] = upcoming[2] or false end
end
return out
"""
)

# Claim the named jobs that are queued and due (arq's ``start_jobs``); same reply as CLAIM, no upcoming score.
# KEYS: queue. ARGV: as _TAKE, then the ids.
CLAIM_IDS = (
    _TAKE
    + """
for i = 11, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then take(ARGV[i], score) end
end
return out
"""
)

# Finish a group of jobs in one call, each op applied whole; a job whose lease another worker holds now is left
# to that worker (its id is returned). Ops: S succeeded / F failed (result and failure record written), R retry
# at a score, P put back at a score with its try handed back, T a running job claimed again by its own worker
# (after an outage): keep its lease (data: lease ms) and hand the try back. R, P and T set the try counter to the
# tries used (ttl field): the try of a put-back job does not count.
# The dashboard's counts ride along: this minute's outcome counts (succeeded / failed / retried) and the capped
# index of completed jobs.
# KEYS: queue, abort set, failed set, notify list, the queue's failed index, this minute's timeline bucket,
#       the queue's completed index
# ARGV: now ms, worker id, failed max age ms, failed max count, notify cap, in-progress prefix, job prefix,
#       retry prefix, result prefix, failed record prefix, failed index prefix, timeline ttl s, completed cap,
#       then per job: op, id, data, ttl ms or try, failure record, its id (the job id as text: ids that are not
#       UTF-8 are backslash-escaped), the try counter's value when this worker claimed it
# A job is this worker's while its lease holds this worker's id, or (the lease ran out, as in an outage) while the
# try counter still shows this worker's claim: once another worker claimed it, the counter moved on.
FINISH = (
    _FAILED_STORE
    + """
local now = tonumber(ARGV[1])
local lost = {}
local failed = false
local counts = {succeeded = 0, failed = 0, retried = 0}
local function wake_if_first(id, score)
  local wake = tonumber(score) <= now
  if not wake then
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, 1)
    wake = first[1] == id
  end
  if wake then
    redis.call('RPUSH', KEYS[4], '1')
    redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
  end
end
for i = 14, #ARGV, 7 do
  local op, id, data, ttl, record = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local lease = ARGV[6] .. id
  local holder = redis.call('GET', lease)
  local mine = holder == ARGV[2] or (not holder and redis.call('GET', ARGV[8] .. id) == ARGV[i + 6])
  if not mine then
    lost[#lost + 1] = id
  elseif op == 'T' then
    redis.call('PEXPIRE', lease, data)
    redis.call('SET', ARGV[8] .. id, ttl, 'KEEPTTL')
  elseif op == 'R' or op == 'P' then
    redis.call('DEL', lease)
    redis.call('ZADD', KEYS[1], 'XX', data, id)
    redis.call('SET', ARGV[8] .. id, ttl, 'KEEPTTL')
    wake_if_first(id, data)
    if op == 'R' then counts.retried = counts.retried + 1 end
  else
    redis.call('DEL', ARGV[7] .. id, ARGV[8] .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if data ~= '' then
      if ttl == '' then
        redis.call('SET', ARGV[9] .. id, data)
      else
        redis.call('SET', ARGV[9] .. id, data, 'PX', ttl)
      end
    end
    if record ~= '' then
      keep_failed(KEYS[3], KEYS[5], ARGV[10] .. ARGV[i + 5], ARGV[i + 5], record, now, tonumber(ARGV[3]))
      failed = true
      counts.failed = counts.failed + 1
    else
      redis.call('ZADD', KEYS[7], now, id)
      counts.succeeded = counts.succeeded + 1
    end
    redis.call('DEL', lease)
  end
end
local counted = false
for outcome, n in pairs(counts) do
  if n > 0 then
    redis.call('HINCRBY', KEYS[6], outcome, n)
    counted = true
  end
end
if counted then redis.call('EXPIRE', KEYS[6], ARGV[12]) end
if counts.succeeded > 0 then redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -tonumber(ARGV[13]) - 1) end
if failed then
  trim_failed(KEYS[3], KEYS[5], ARGV[10], ARGV[11], now, tonumber(ARGV[3]), tonumber(ARGV[4]))
end
return lost
"""
)

# Renew the leases of the jobs a worker runs: extend its own; take back one that ran out (an outage longer than
# the lease) if nobody claimed the job since (its try counter is still this worker's claim, its record still
# there); report one another worker holds or took since (never renewed). Returns {taken back, lost}.
# ARGV: worker id, lease ms, in-progress prefix, retry prefix, job prefix, then per job: id, try counter claimed
RENEW = """
local retaken, lost = {}, {}
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local lease = ARGV[3] .. id
  local holder = redis.call('GET', lease)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', lease, ARGV[2])
  elseif not holder and redis.call('GET', ARGV[4] .. id) == ARGV[i + 1]
      and redis.call('EXISTS', ARGV[5] .. id) == 1 then
    redis.call('DEL', lease)  -- a write that grows nothing, so the SET passes a full Redis
    redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
    retaken[#retaken + 1] = id
  else
    lost[#lost + 1] = id
  end
end
return {retaken, lost}
"""

# One worker's heartbeat: its record, its member of the queue's worker set (scored by when it runs out), and
# now and then (ARGV[6] = 1) dead members swept and the queue noted in the queues set. Starts with a PEXPIRE so it
# passes a full Redis.
# KEYS: worker record, workers set, queues set. ARGV: record, ttl ms, worker id, now ms, queue name, sweep (1/0)
HEARTBEAT = """
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[3])
if ARGV[6] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[5])
end
return 1
"""

# Where a job stands, read atomically: its result, whether it holds a lease, its score. Read-only, so it also
# answers when Redis is full (a MULTI would be refused then).
# KEYS: result, in-progress, queue
STATUS = """
return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('ZSCORE', KEYS[3], ARGV[1])}
"""

# Count a queue: due jobs waiting, running ones (with a lease), deferred ones, and when the oldest waiting job
# became due. Running jobs sit at the front (workers take the oldest first): the first ARGV[3] are looked at.
# KEYS: queue. ARGV: now ms, in-progress prefix, scan limit
COUNT = """
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

# Remove up to ARGV[4] waiting (not running) jobs and their data from the front of a queue.
# KEYS: queue. ARGV: in-progress prefix, job prefix, retry prefix, how many
PURGE = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ARGV[2] .. id, ARGV[3] .. id)
    removed = removed + 1
  end
end
return {removed, #ids}
"""

# Move one waiting job from another queue key (arq's own) into ours, only if it is still there, not running and
# unchanged since it was read (its data's SHA-1); a plain arq worker claiming it meanwhile (a WATCH on its
# in-progress key) is made to fail its claim by the SET/DEL of that key.
# KEYS: source queue, destination queue, job, in-progress, queues set, notify list
# ARGV: job id, sha1 of the data read, new data ('' keeps it), destination name, now ms, notify cap
MIGRATE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 'gone' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'running' end
local data = redis.call('GET', KEYS[3])
if not data or redis.sha1hex(data) ~= ARGV[2] then return 'changed' end
redis.call('SET', KEYS[4], 'migrating', 'PX', 1000)
redis.call('DEL', KEYS[4])
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'KEEPTTL') end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('SADD', KEYS[5], ARGV[4])
if tonumber(score) <= tonumber(ARGV[5]) then
  redis.call('RPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], -tonumber(ARGV[6]), -1)
end
return 'moved'
"""

# Write one failure record and trim the store (plain arq workers' path; ours write records in FINISH).
# KEYS: failed set, record, the queue's failed index
# ARGV: record, max age ms, now ms, job id, max count, record prefix, index prefix
RECORD_FAILURE = (
    _FAILED_STORE
    + """
local now, max_age = tonumber(ARGV[3]), tonumber(ARGV[2])
keep_failed(KEYS[1], KEYS[3], KEYS[2], ARGV[4], ARGV[1], now, max_age)
trim_failed(KEYS[1], KEYS[3], ARGV[6], ARGV[7], now, max_age, tonumber(ARGV[5]))
return 1
"""
)

# Put a failed job back on its queue under the same id with fresh tries, and drop its failure record.
# KEYS: record, failed set, job, result, retry, in-progress, queue, notify, the queue's failed index
# ARGV: expiry ms, payload, score, id
RETRY_FAILED = """
local record = redis.call('GET', KEYS[1])
if not record then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
redis.call('PSETEX', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[8], '1')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[9], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts, registered on one client: each is sent once, then called by its SHA."""

    enqueue: AsyncScript
    claim: AsyncScript
    claim_ids: AsyncScript
    finish: AsyncScript
    renew: AsyncScript
    heartbeat: AsyncScript
    status: AsyncScript
    count: AsyncScript
    purge: AsyncScript
    record_failure: AsyncScript
    retry_failed: AsyncScript
    migrate: AsyncScript


_ATTRIBUTE = "_scalr_queue_scripts"  # kept on the client: they live and die with it


def scripts(redis: Redis) -> Scripts:
    """The scripts registered on ``redis``; registering costs nothing until the first call."""
    found: Scripts | None = getattr(redis, _ATTRIBUTE, None)
    if found is None:
        found = Scripts(
            enqueue=redis.register_script(ENQUEUE),
            claim=redis.register_script(CLAIM),
            claim_ids=redis.register_script(CLAIM_IDS),
            finish=redis.register_script(FINISH),
            renew=redis.register_script(RENEW),
            heartbeat=redis.register_script(HEARTBEAT),
            status=redis.register_script(STATUS),
            count=redis.register_script(COUNT),
            purge=redis.register_script(PURGE),
            record_failure=redis.register_script(RECORD_FAILURE),
            retry_failed=redis.register_script(RETRY_FAILED),
            migrate=redis.register_script(MIGRATE),
        )
        setattr(redis, _ATTRIBUTE, found)
    return found
