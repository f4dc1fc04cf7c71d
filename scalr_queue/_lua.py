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

# Queue a job unless a job or result with its id exists (arq's rule: 0), unless a unique job with the same
# unique key waits or runs (returns that job's id), and, for a cron run, only once per tick (0).
# A job due now, or a deferred one that is now the first due, pushes a wake-up token: an idle worker wakes at
# once (or re-arms its timer) instead of at its next look.
# The job also joins its priority's index (the queue's ready set for its priority, same score).
# KEYS: job, result, queue, queues set, notify list, once key, unique key (unused ones: any key, ignored),
#       priority index, the queue's priority levels
# ARGV: expiry ms, payload, score, job id, queue name, now ms, notify cap, once ttl ms ('' none), unique ttl ms
#       ('' none), priority
ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
if ARGV[9] ~= '' then
  local holder = redis.call('GET', KEYS[7])
  local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[4])
  if holder and redis.call('EXISTS', prefix .. holder) == 1 then return holder end
end
if ARGV[8] ~= '' and not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[8]) then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
if ARGV[9] ~= '' then redis.call('SET', KEYS[7], ARGV[4], 'PX', ARGV[9]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[8], ARGV[3], ARGV[4])
if ARGV[10] ~= '0' then redis.call('SETRANGE', KEYS[9], tonumber(ARGV[10]), '1') end
redis.call('SADD', KEYS[4], ARGV[5])
local wake = tonumber(ARGV[3]) <= tonumber(ARGV[6])
if not wake then
  local first = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[6], '+inf', 'LIMIT', 0, 1)
  wake = first[1] == ARGV[4]
end
if wake then
  if redis.call('RPUSH', KEYS[5], '1') > tonumber(ARGV[7]) then redis.call('LTRIM', KEYS[5], -tonumber(ARGV[7]), -1) end
end
return 1
"""

# Queue a job that depends on others (``_depends_on``), atomically with their state: unless a job or result with
# its id exists (0). Each dependency is succeeded (its result says so), pending (its job record exists: queued,
# running, retrying or itself waiting), or failed (a failed result, or only a failure record); an id with none of
# these answers {'unknown', id} and nothing is written. None pending: queued at once (as ENQUEUE). One failed:
# queued now and marked in the dependency-failed set (the worker fails it with reason dependency_failed). Else it
# waits: its record is stored, it joins each pending dependency's dependents set, and its waiting record (queue,
# priority index, notify list, run-at score, pending count) lets FINISH queue it when the last one succeeds.
# KEYS: job, result, queue, queues set, notify list, priority index, waiting record, dependency-failed set,
#       the queue's priority levels
# ARGV: expiry ms, payload, score, job id, queue name, now ms, notify cap, result prefix, job prefix, failure
#       record prefix, dependents prefix, priority, then the dependency ids
ENQUEUE_AFTER = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
local pending, failed = {}, false
for i = 13, #ARGV do
  local dep = ARGV[i]
  local result = redis.pcall('GET', ARGV[8] .. dep)
  if type(result) == 'string' then
    local ok, data = pcall(cjson.decode, result)
    if not (ok and type(data) == 'table' and data.s == true) then failed = true end
  elseif redis.call('EXISTS', ARGV[9] .. dep) == 1 then
    pending[#pending + 1] = dep
  elseif redis.call('EXISTS', ARGV[10] .. dep) == 1 then
    failed = true
  else
    return {'unknown', dep}
  end
end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[5])
if failed or #pending == 0 then
  local score = ARGV[3]
  if failed then
    redis.call('ZADD', KEYS[8], ARGV[6], ARGV[4])
    score = ARGV[6]
  end
  redis.call('ZADD', KEYS[3], score, ARGV[4])
  redis.call('ZADD', KEYS[6], score, ARGV[4])
  redis.call('SETRANGE', KEYS[9], tonumber(ARGV[12]), '1')
  redis.call('RPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[7]), -1)
  return 1
end
for _, dep in ipairs(pending) do redis.call('SADD', ARGV[11] .. dep, ARGV[4]) end
redis.call('HSET', KEYS[7], 'q', KEYS[3], 'i', KEYS[6], 'w', KEYS[5], 's', ARGV[3], 'n', #pending, 'l', KEYS[9],
  'p', ARGV[12])
redis.call('PEXPIRE', KEYS[7], ARGV[1])
return 1
"""

# ENQUEUE for many plain jobs of one queue in one call (enqueue_many: no unique key, no cron tick, no
# dependencies): the same writes per job, five arguments each instead of twenty, and the queue set, the priority
# levels and the wake-up tokens written once; the queue and each priority index take all their jobs in one ZADD
# (a ZADD per job was a quarter of the script's time). Returns 1 (stored) or 0 (its id exists) per job, in order.
# KEYS: queue, queues set, notify list, ready levels
# ARGV: now ms, notify cap, queue name, job prefix, result prefix, ready index prefix, then per job: id, payload,
#       score, expiry ms, priority
ENQUEUE_MANY = """
local now = tonumber(ARGV[1])
local out = {}
local ours = {}
local due_now = 0
local levels = {}  -- priority -> {score, id, score, id ...}
for i = 7, #ARGV, 5 do
  local id, score, priority = ARGV[i], ARGV[i + 2], ARGV[i + 4]
  if redis.call('EXISTS', ARGV[4] .. id, ARGV[5] .. id) > 0 then
    out[#out + 1] = 0
  else
    redis.call('PSETEX', ARGV[4] .. id, ARGV[i + 3], ARGV[i + 1])
    local level = levels[priority]
    if level == nil then
      level = {}
      levels[priority] = level
    end
    level[#level + 1] = score
    level[#level + 1] = id
    ours[id] = true
    if tonumber(score) <= now then due_now = due_now + 1 end
    out[#out + 1] = 1
  end
end
if next(ours) == nil then return out end
for priority, level in pairs(levels) do
  for from = 1, #level, 2000 do  -- unpack's stack has room for a few thousand values
    local upto = math.min(from + 1999, #level)
    redis.call('ZADD', KEYS[1], unpack(level, from, upto))
    redis.call('ZADD', ARGV[6] .. priority, unpack(level, from, upto))
  end
  if priority ~= '0' then redis.call('SETRANGE', KEYS[4], tonumber(priority), '1') end
end
redis.call('SADD', KEYS[2], ARGV[3])
local tokens = math.min(due_now, tonumber(ARGV[2]))
if tokens == 0 then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, 1)
  if first[1] and ours[first[1]] then tokens = 1 end
end
if tokens > 0 then
  local wake = {}
  for t = 1, tokens do wake[t] = '1' end
  redis.call('RPUSH', KEYS[3], unpack(wake))
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[2]), -1)
end
return out
"""

# Take a job: its lease (the in-progress key, holding the worker's id), a try on arq's counter, its payload,
# whether it was aborted, whether a job it depends on failed for good (the last KEYS entry is that set).
# A counter or payload of the wrong type is reported (false / 0), not fatal to the claim.
# ARGV: now ms, how many, scan limit, lease ms, worker id, in-progress prefix, retry prefix, job prefix,
#       retry ttl s, abort set
_TAKE = """
local taken = 0
local out = {false}
local dependency_failed = KEYS[#KEYS]
local any_dependency_failed = nil  -- read at the first take: an idle look stays one read
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
  if any_dependency_failed == nil then any_dependency_failed = redis.call('EXISTS', dependency_failed) == 1 end
  out[#out + 1] = any_dependency_failed and redis.call('ZSCORE', dependency_failed, id) and 1 or 0
  taken = taken + 1
end
"""

# Claim up to ARGV[2] due jobs, oldest first; returns the score of the next job not yet due (false: none;
# 'paused': the queue is paused), then id, score, payload (false: expired; 0: not a string), try (false: corrupt
# counter), aborted (1/0) for each claim. When it takes fewer than asked nothing else is due: spent wake-up
# tokens are dropped. A job scored +inf would never be due: it is taken (and failed) once nothing else waits.
# A paused queue answers 'paused' only when something is due (an idle look stays one read).
# Priorities: the due jobs of priority 0's index are taken first (oldest first), then priority 1's ... 9's; an
# index entry leaves its index when read (a job put back rejoins it in FINISH). Then, if slots are left, the queue
# itself, oldest first, as before: jobs in no index (queued by plain arq, migrated, retried from the failed store,
# taken back after their worker died) run after every indexed due job. An index entry whose job left the queue
# (purged) is dropped; one the queue scores later (moved) is rescored.
# Which priorities above 0 were ever used on the queue is kept in its levels string (byte p is '1' once a job of
# priority p was queued; set at enqueue, never cleared; priority 0's index, the default's, is always read): a queue
# using one priority costs two reads more per claim, not ten.
# KEYS: queue, paused flag, notify list, priority levels, dependency-failed set. ARGV: as _TAKE, then the queue's
# priority index prefix.
CLAIM = (
    _TAKE
    + """
-- '~ms': a claim sent ahead, with a BLPOP (it runs when that returns): now is the later of ms and Redis's clock,
-- and the reply ends with it (the worker reads the reply later than Redis ran it if its loop was blocked meanwhile).
local now = ARGV[1]
local ahead = string.sub(now, 1, 1) == '~'
if ahead then
  local clock = redis.call('TIME')
  now = tostring(math.max(tonumber(string.sub(now, 2)), clock[1] * 1000 + math.floor(clock[2] / 1000)))
end
local function claim()
-- An idle look costs one read: the queue's first job, when nothing is due yet (or nothing waits at all).
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return out end
if head[2] == 'inf' then
  take(head[1], head[2])
  return out
end
if tonumber(head[2]) > tonumber(now) then
  out[1] = head[2]
  return out
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  out[1] = 'paused'
  return out
end
-- A write that grows nothing first, so a full Redis still hands out jobs: running them is what frees memory.
redis.call('PEXPIRE', KEYS[3], 3600000)
local want = tonumber(ARGV[2])
local levels = redis.call('GET', KEYS[4]) or ''
for priority = 0, 9 do
  if taken >= want then break end
  if priority == 0 or string.sub(levels, priority + 1, priority + 1) == '1' then
    local index = ARGV[11] .. priority
    local ready = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
    for _, id in ipairs(ready) do
      redis.call('ZREM', index, id)
      local score = redis.call('ZSCORE', KEYS[1], id)
      if score then
        if tonumber(score) <= tonumber(now) then take(id, score) else redis.call('ZADD', index, score, id) end
      end
      if taken >= want then break end
    end
  end
end
if taken >= want then return out end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due, 2 do
  take(due[i], due[i + 1])
  if taken >= want then break end
end
if taken < want then
  if taken > 0 then redis.call('DEL', KEYS[3]) end
  local upcoming = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if upcoming[2] == 'inf' then take(upcoming[1], upcoming[2]) else out[1] = upcoming[2] or false end
end
return out
end
local reply = claim()
if ahead then reply[#reply + 1] = now end
return reply
"""
)

# Claim the named jobs that are queued and due (arq's ``start_jobs``); same reply as CLAIM, no upcoming score.
# KEYS: queue, dependency-failed set. ARGV: as _TAKE, then the ids.
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
# A job that ends (S/F) releases the jobs waiting on it (``_depends_on``): on success each dependent counts one
# dependency less and is queued (at its own run-at time, or now) when none is left; on a failure for good every
# dependent is queued now and marked in the dependency-failed set, so the worker that claims it fails it with reason
# dependency_failed, which in turn releases its own dependents the same way (the cascade).
# KEYS: queue, abort set, failed set, notify list, the queue's failed index, this minute's timeline bucket,
#       the queue's completed index, dependency-failed set
# ARGV: now ms, worker id, failed max age ms, failed max count, notify cap, in-progress prefix, job prefix,
#       retry prefix, result prefix, failed record prefix, failed index prefix, timeline ttl s, completed cap,
#       released-info prefix, lock prefix, lock waiters prefix, waiting-job prefix, dependents prefix, batch
#       prefix, batch pending prefix, batch succeeded prefix, batch failed prefix, then per job:
#       op, id, data, ttl ms or try,
#       failure record (P/Q: the release's reason as JSON), its id (the job id as text: ids that are not UTF-8
#       are backslash-escaped), the try counter's value when this worker claimed it, its unique key ('' none:
#       freed when the job ends), its priority index (R/P/Q: it rejoins it at its new score; S/F: it leaves it),
#       its batch id ('' none)
# A job of a batch that ends (S/F) moves from the batch's pending set to its succeeded or failed set (SMOVE: a job
# counts once, however often its end is written); the first failure for good queues the batch's ``catch`` job, the
# last job to end queues its ``then`` job and drops a ``catch`` nothing needed. Each callback waits as a held job
# (a waiting record, like a ``_depends_on`` job): queueing it deletes that record, so it is queued once at most.
# Q is P for a job whose WithoutOverlapping lock (data: the lock's name) is held by another job: while the lock is
# held, the job joins the lock's waiters and is due when the lock would run out (a dead holder's lease); the
# holder's release wakes the oldest waiter at once. A lock free by now: due now. Decided here, atomically, so a
# release between the middleware's look and this write cannot leave the job waiting.
# A job is this worker's while its lease holds this worker's id, or (the lease ran out, as in an outage) while the
# try counter still shows this worker's claim: once another worker claimed it, the counter moved on.
FINISH = (
    _FAILED_STORE
    + """
local now = tonumber(ARGV[1])
local lost = {}
local failed = false
local counts = {succeeded = 0, failed = 0, retried = 0, released = 0}
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
local function release_dependents(id, failed_for_good)
  local dependents = ARGV[18] .. id
  local waiting = redis.call('SMEMBERS', dependents)
  if #waiting == 0 then return end
  redis.call('DEL', dependents)
  for _, d in ipairs(waiting) do
    local hold = ARGV[17] .. d
    local info = redis.call('HMGET', hold, 'q', 'i', 'w', 's')
    local level = redis.call('HMGET', hold, 'l', 'p')
    if info[1] and info[2] and info[3] then
      local due = tonumber(info[4]) or now
      local release = failed_for_good or redis.call('HINCRBY', hold, 'n', -1) <= 0
      if failed_for_good then
        redis.call('ZADD', KEYS[8], now, d)
        due = now
      end
      if release then
        redis.call('DEL', hold)
        if due < now then due = now end
        redis.call('ZADD', info[1], due, d)
        redis.call('ZADD', info[2], due, d)
        if level[1] and tonumber(level[2]) then redis.call('SETRANGE', level[1], tonumber(level[2]), '1') end
        redis.call('RPUSH', info[3], '1')
        redis.call('LTRIM', info[3], -tonumber(ARGV[5]), -1)
      end
    end
  end
end
local function queue_held(d)
  local hold = ARGV[17] .. d
  local info = redis.call('HMGET', hold, 'q', 'i', 'w', 'l', 'p')
  if not (info[1] and info[2] and info[3]) then return end
  redis.call('DEL', hold)
  redis.call('ZADD', info[1], now, d)
  redis.call('ZADD', info[2], now, d)
  if info[4] and tonumber(info[5]) then redis.call('SETRANGE', info[4], tonumber(info[5]), '1') end
  redis.call('RPUSH', info[3], '1')
  redis.call('LTRIM', info[3], -tonumber(ARGV[5]), -1)
end
local function batch_ended(bid, id, failed_for_good)
  local pending = ARGV[20] .. bid
  local into = (failed_for_good and ARGV[22] or ARGV[21]) .. bid
  if redis.call('SMOVE', pending, into, id) == 0 then return end
  local state = ARGV[19] .. bid
  if redis.call('SCARD', into) == 1 then
    local ttl = redis.call('PTTL', state)
    if ttl > 0 then redis.call('PEXPIRE', into, ttl) end
  end
  local callbacks = redis.call('HMGET', state, 'then', 'catch')
  local catch = callbacks[2]
  if failed_for_good and catch and catch ~= '' then queue_held(catch) end
  if redis.call('EXISTS', pending) == 0 then
    redis.call('HSET', state, 'done', ARGV[1])
    if callbacks[1] and callbacks[1] ~= '' then queue_held(callbacks[1]) end
    if catch and catch ~= '' and redis.call('EXISTS', ARGV[17] .. catch) == 1 then
      redis.call('DEL', ARGV[17] .. catch, ARGV[7] .. catch)
    end
  end
end
for i = 23, #ARGV, 10 do
  local op, id, data, ttl, record = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local lease = ARGV[6] .. id
  local holder = redis.call('GET', lease)
  local mine = holder == ARGV[2] or (not holder and redis.call('GET', ARGV[8] .. id) == ARGV[i + 6])
  if not mine then
    lost[#lost + 1] = id
  elseif op == 'T' then
    redis.call('PEXPIRE', lease, data)
    redis.call('SET', ARGV[8] .. id, ttl, 'KEEPTTL')
  elseif op == 'R' or op == 'P' or op == 'Q' then
    redis.call('DEL', lease)
    local due = data
    if op == 'Q' then
      local left = redis.call('PTTL', ARGV[15] .. data)
      due = now
      if left ~= -2 then
        if left < 0 then left = 1000 end  -- a key without expiry is not one of ours: look again in a second
        due = now + left
        local waiters = ARGV[16] .. data
        redis.call('ZADD', waiters, 'NX', now, KEYS[1] .. '\\n' .. KEYS[4] .. '\\n' .. id)
        redis.call('PEXPIRE', waiters, 86400000)
      end
    end
    redis.call('ZADD', KEYS[1], 'XX', due, id)
    -- back in its priority's index (its level is set since its enqueue); a stale entry (the job left the queue
    -- meanwhile) is dropped by the claim that reads it
    if ARGV[i + 8] ~= '' then redis.call('ZADD', ARGV[i + 8], due, id) end
    redis.call('SET', ARGV[8] .. id, ttl, 'KEEPTTL')
    wake_if_first(id, due)
    if op == 'R' then
      counts.retried = counts.retried + 1
    else
      counts.released = counts.released + 1
      if record ~= '' then
        local info = ARGV[14] .. ARGV[i + 5]
        redis.call('HSET', info, 'last', record, 'at', ARGV[1])
        redis.call('HINCRBY', info, 'count', 1)
        redis.call('PEXPIRE', info, 86400000)
      end
    end
  else
    redis.call('DEL', ARGV[7] .. id, ARGV[8] .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if ARGV[i + 8] ~= '' then redis.call('ZREM', ARGV[i + 8], id) end
    redis.call('ZREM', KEYS[8], id)
    release_dependents(id, record ~= '')
    if ARGV[i + 9] ~= '' then batch_ended(ARGV[i + 9], id, record ~= '') end
    local unique = ARGV[i + 7]
    if unique ~= '' and redis.call('GET', unique) == id then redis.call('DEL', unique) end
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

# Where a job stands, read atomically: its result, whether it holds a lease, its score, whether it was aborted.
# Read-only, so it also answers when Redis is full (a MULTI would be refused then).
# Without a result, lease or score, the failure record's reason (a job kept no result: was it aborted?).
# A job held back by ``_depends_on`` has its waiting record (6th: 1).
# KEYS: result, in-progress, queue, abort set, failure record, waiting record
STATUS = """
local out = {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('ZSCORE', KEYS[3], ARGV[1]),
  redis.call('ZSCORE', KEYS[4], ARGV[1]), false, redis.call('EXISTS', KEYS[6])}
if not out[1] and out[2] == 0 and not out[3] then
  local record = redis.pcall('GET', KEYS[5])
  if type(record) == 'string' then
    local ok, data = pcall(cjson.decode, record)
    if ok and type(data) == 'table' and type(data.reason) == 'string' then out[5] = data.reason end
  end
end
return out
"""

# Abort a job, atomically with where it stands. Finished (a result, or a failure record): nothing changes
# ('finished'). Running: its id joins arq's abort set, and the worker running it cancels it at its next abort
# poll ('running'). Waiting (queued or deferred, a retry's wait too): the id joins the abort set and the job is
# made due now, with a wake-up token, so a worker claims it at once and ends it as aborted without starting it
# ('queued'). Unknown: 'not_found'. A job aborted already answers as it stands (abort again is harmless).
# A job held back by ``_depends_on`` is queued now, aborted, and leaves its waiting record ('queued').
# KEYS: result, in-progress, queue, abort set, notify list, failure record, waiting record
# ARGV: job id, now ms, notify cap, the queue's priority index prefix
ABORT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'finished' end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  return 'running'
end
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if score then
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  if tonumber(score) > tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
    for priority = 0, 9 do redis.call('ZADD', ARGV[4] .. priority, 'XX', ARGV[2], ARGV[1]) end
  end
  redis.call('RPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[3]), -1)
  return 'queued'
end
local held = redis.call('HMGET', KEYS[7], 'q', 'i', 'w', 'l', 'p')
if held[1] and held[2] and held[3] then
  if held[4] and tonumber(held[5]) then redis.call('SETRANGE', held[4], tonumber(held[5]), '1') end
  redis.call('DEL', KEYS[7])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
  redis.call('ZADD', held[1], ARGV[2], ARGV[1])
  redis.call('ZADD', held[2], ARGV[2], ARGV[1])
  redis.call('RPUSH', held[3], '1')
  redis.call('LTRIM', held[3], -tonumber(ARGV[3]), -1)
  return 'queued'
end
if redis.call('EXISTS', KEYS[6]) == 1 then return 'finished' end
return 'not_found'
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

# RateLimited: at most ARGV[2] starts per key in any window of ARGV[1] ms (a sorted set of start times in µs, on
# the Redis server's clock so that workers on different hosts agree; whole milliseconds would let two starts a
# window apart by the ms count be a window less a fraction of a millisecond apart). Returns 0 when this start fits (and records it),
# else how many ms until the oldest start leaves the window. KEYS: the key's window. ARGV: window ms, how many,
# this start's member
RATE_LIMIT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local window = tonumber(ARGV[1]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(math.ceil((tonumber(oldest[2]) + window - now) / 1000), 1)
"""

# WithoutOverlapping, take the key: a lock holding the taker's token, a lease of ARGV[2] ms, and the job out of
# the key's waiters. Returns -1 when taken, else the ms until the lock runs out (FINISH's Q op then makes the job a
# waiter). KEYS: lock, waiters. ARGV: token, lease ms, this job's waiter member
LOCK_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return -1
end
return redis.call('PTTL', KEYS[1])
"""

# Extend a lock this token holds (the job still runs). KEYS: lock. ARGV: token, lease ms
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Give a lock back and wake its oldest waiter that is still queued (its score set to now, a wake-up token on its
# queue's list). A waiter member is "<queue key>\\n<notify key>\\n<job id>".
# The woken job's priority index entry is made due too (the index is named from the queue key: ARGV[4] is the
# queues' key prefix, ARGV[5] the indexes' prefix).
# KEYS: lock, waiters. ARGV: token, now ms, notify cap, queue key prefix, priority index prefix
LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
while true do
  local popped = redis.call('ZPOPMIN', KEYS[2])
  if #popped == 0 then return 1 end
  local queue, notify, id = string.match(popped[1], '^(.-)\\n(.-)\\n(.*)$')
  if queue and redis.call('ZSCORE', queue, id) then
    redis.call('ZADD', queue, 'XX', ARGV[2], id)
    local name = queue
    if string.sub(queue, 1, #ARGV[4]) == ARGV[4] then name = string.sub(queue, #ARGV[4] + 1) end
    for priority = 0, 9 do redis.call('ZADD', ARGV[5] .. name .. ':' .. priority, 'XX', ARGV[2], id) end
    redis.call('RPUSH', notify, '1')
    redis.call('LTRIM', notify, -tonumber(ARGV[3]), -1)
    return 2
  end
end
"""

# Give back a unique job's key when it starts (``unique_until_processing``), if it is still this job's.
# KEYS: unique key. ARGV: job id
UNIQUE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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
    enqueue_many: AsyncScript
    enqueue_after: AsyncScript
    claim: AsyncScript
    claim_ids: AsyncScript
    finish: AsyncScript
    renew: AsyncScript
    heartbeat: AsyncScript
    status: AsyncScript
    abort: AsyncScript
    count: AsyncScript
    purge: AsyncScript
    record_failure: AsyncScript
    retry_failed: AsyncScript
    migrate: AsyncScript
    rate_limit: AsyncScript
    lock_take: AsyncScript
    lock_renew: AsyncScript
    lock_release: AsyncScript
    unique_release: AsyncScript


_ATTRIBUTE = "_scalr_queue_scripts"  # kept on the client: they live and die with it


def scripts(redis: Redis) -> Scripts:
    """The scripts registered on ``redis``; registering costs nothing until the first call."""
    found: Scripts | None = getattr(redis, _ATTRIBUTE, None)
    if found is None:
        found = Scripts(
            enqueue=redis.register_script(ENQUEUE),
            enqueue_many=redis.register_script(ENQUEUE_MANY),
            enqueue_after=redis.register_script(ENQUEUE_AFTER),
            claim=redis.register_script(CLAIM),
            claim_ids=redis.register_script(CLAIM_IDS),
            finish=redis.register_script(FINISH),
            renew=redis.register_script(RENEW),
            heartbeat=redis.register_script(HEARTBEAT),
            status=redis.register_script(STATUS),
            abort=redis.register_script(ABORT),
            count=redis.register_script(COUNT),
            purge=redis.register_script(PURGE),
            record_failure=redis.register_script(RECORD_FAILURE),
            retry_failed=redis.register_script(RETRY_FAILED),
            migrate=redis.register_script(MIGRATE),
            rate_limit=redis.register_script(RATE_LIMIT),
            lock_take=redis.register_script(LOCK_TAKE),
            lock_renew=redis.register_script(LOCK_RENEW),
            lock_release=redis.register_script(LOCK_RELEASE),
            unique_release=redis.register_script(UNIQUE_RELEASE),
        )
        setattr(redis, _ATTRIBUTE, found)
    return found
