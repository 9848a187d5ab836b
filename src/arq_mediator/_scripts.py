"""Lua scripts: every change to a job's state is one atomic script call, one round trip.

Keys are built inside the scripts from arq's prefixes, as arq's own layout is not hash-tagged; like arq,
this needs a single Redis server (or a sentinel-managed one), not Redis Cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _keys

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from ._keys import Channels

_PREFIXES = {
    "QUEUE": _keys.QUEUE_PREFIX,
    "JOB": _keys.JOB_PREFIX,
    "LEASE": _keys.LEASE_PREFIX,
    "RESULT": _keys.RESULT_PREFIX,
    "DELIVERIES": _keys.DELIVERIES_PREFIX,
    "FAILED": _keys.FAILED_PREFIX,
    "ABORT_FLAG": _keys.ABORT_PREFIX,
    # The value a lease holds between a failed try and its retry: no worker holds the job then.
    "RETRY_MARK": "retry",
}

# ARGV: groups of (id, queue, score_ms, body). Returns per job a pair: 1 added, 0 already queued or
# running, 2 already finished (its result is still kept); then the queue the job is on (or was).
# Idle workers of each touched queue are woken once.
ENQUEUE = """
local out = {}
local touched = {}
local function queue_of(body, fallback)
  local ok, record = pcall(cjson.decode, body)
  if ok and type(record) == 'table' and type(record.queue) == 'string' then return record.queue end
  return fallback
end
for i = 1, #ARGV, 4 do
  local id, queue = ARGV[i], ARGV[i + 1]
  local existing = redis.call('GET', '{JOB}' .. id)
  local finished = (not existing) and redis.call('GET', '{RESULT}' .. id)
  if existing then
    out[#out + 1] = 0
    out[#out + 1] = queue_of(existing, queue)
  elseif finished then
    out[#out + 1] = 2
    out[#out + 1] = queue_of(finished, queue)
  else
    redis.call('SET', '{JOB}' .. id, ARGV[i + 3])
    redis.call('ZADD', '{QUEUE}' .. queue, ARGV[i + 2], id)
    touched[queue] = ARGV[i + 2]
    out[#out + 1] = 1
    out[#out + 1] = queue
  end
end
for queue, score in pairs(touched) do
  redis.call('PUBLISH', '{WAKE}' .. queue, score)
end
return out
"""

# ARGV: now_ms, how many, lease_ms, lease token, number of queues, queue names by priority, then ids
# the caller runs already (their lease may have lapsed in an outage; they must not start twice). Takes
# ready jobs whose lease is free, highest-priority queue first, leasing each. Returns {next_due_ms or -1,
# then per job: id, queue, deliveries, body}. Queue entries whose body is gone are stale and dropped.
CLAIM = """
local now, want, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local last_queue = 5 + tonumber(ARGV[5])
local mine = {}
for i = last_queue + 1, #ARGV do mine[ARGV[i]] = true end
local out = {-1}
local next_due = -1
for qi = 6, last_queue do
  local queue = ARGV[qi]
  local qkey = '{QUEUE}' .. queue
  local offset = 0
  while want > 0 do
    local ids = redis.call('ZRANGEBYSCORE', qkey, '-inf', now, 'LIMIT', offset, want + 32)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      if want > 0 and not mine[id] and redis.call('SET', '{LEASE}' .. id, token, 'NX', 'PX', lease) then
        local body = redis.call('GET', '{JOB}' .. id)
        if body then
          out[#out + 1] = id
          out[#out + 1] = queue
          out[#out + 1] = redis.call('INCR', '{DELIVERIES}' .. id)
          out[#out + 1] = body
          want = want - 1
        else
          redis.call('ZREM', qkey, id)
          redis.call('DEL', '{LEASE}' .. id)
        end
      end
    end
    offset = offset + #ids
  end
  local first = redis.call('ZRANGEBYSCORE', qkey, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first > 0 then
    local due = tonumber(first[2])
    if next_due < 0 or due < next_due then next_due = due end
  end
end
out[1] = next_due
return out
"""

# ARGV: id, queue, result record, keep_ms, failed (1/0), now_ms. Stores the result, forgets the job,
# lists it as failed when it failed, and publishes the record to whoever awaits it.
COMPLETE = """
local id, queue, record = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', '{RESULT}' .. id, record, 'PX', ARGV[4])
redis.call('DEL', '{JOB}' .. id, '{LEASE}' .. id, '{DELIVERIES}' .. id, '{ABORT_FLAG}' .. id)
redis.call('ZREM', '{QUEUE}' .. queue, id)
if ARGV[5] == '1' then redis.call('ZADD', '{FAILED}' .. queue, ARGV[6], id) end
redis.call('PUBLISH', '{DONE}' .. id, record)
return 1
"""

# ARGV: id, queue, new body, due_ms, now_ms. Puts a failed try back for a later try. The lease becomes a
# marker that lapses when the retry is due, so a heartbeat already on its way cannot re-take it.
RETRY = """
local id, queue = ARGV[1], ARGV[2]
local wait = tonumber(ARGV[4]) - tonumber(ARGV[5])
redis.call('SET', '{JOB}' .. id, ARGV[3])
redis.call('ZADD', '{QUEUE}' .. queue, ARGV[4], id)
if wait > 0 then
  redis.call('SET', '{LEASE}' .. id, '{RETRY_MARK}', 'PX', wait)
else
  redis.call('DEL', '{LEASE}' .. id)
end
redis.call('PUBLISH', '{WAKE}' .. queue, ARGV[4])
return 1
"""

# ARGV: id, queue. Gives a job back untried (graceful shutdown): its delivery does not count.
RELEASE = """
local id, queue = ARGV[1], ARGV[2]
redis.call('DEL', '{LEASE}' .. id)
if tonumber(redis.call('GET', '{DELIVERIES}' .. id) or '0') > 0 then
  redis.call('DECR', '{DELIVERIES}' .. id)
end
redis.call('PUBLISH', '{WAKE}' .. queue, '0')
return 1
"""

# ARGV: worker key, worker record, ttl_ms, lease_ms, lease token, now_ms, number of queues, the worker's
# queues, then ids of running jobs. Renews the heartbeat and every lease, re-taking a lease that lapsed
# (an outage longer than the lease) unless another worker holds it now or the job was settled meanwhile.
# Returns the depth (ready or running) of each queue, then the ids asked to abort.
HEARTBEAT = """
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
local out = {}
local last_queue = 7 + tonumber(ARGV[7])
for i = 8, last_queue do out[#out + 1] = redis.call('ZCOUNT', '{QUEUE}' .. ARGV[i], '-inf', ARGV[6]) end
for i = last_queue + 1, #ARGV do
  local key = '{LEASE}' .. ARGV[i]
  local holder = redis.call('GET', key)
  if holder == ARGV[5] or (not holder and redis.call('EXISTS', '{JOB}' .. ARGV[i]) == 1) then
    redis.call('SET', key, ARGV[5], 'PX', ARGV[4])
  end
  if redis.call('EXISTS', '{ABORT_FLAG}' .. ARGV[i]) == 1 then out[#out + 1] = ARGV[i] end
end
return out
"""

# ARGV: id, now_ms. Returns {state, detail}: 'finished' + result record, 'running', 'queued' or
# 'deferred' + body, or 'missing'.
STATUS = """
local id = ARGV[1]
local result = redis.call('GET', '{RESULT}' .. id)
if result then return {'finished', result} end
local body = redis.call('GET', '{JOB}' .. id)
if not body then return {'missing', ''} end
local holder = redis.call('GET', '{LEASE}' .. id)
if holder and holder ~= '{RETRY_MARK}' then return {'running', body} end
local ok, job = pcall(cjson.decode, body)
if not ok or type(job) ~= 'table' or type(job.queue) ~= 'string' then return {'queued', body} end
local score = redis.call('ZSCORE', '{QUEUE}' .. job.queue, id)
if score and tonumber(score) > tonumber(ARGV[2]) then return {'deferred', body} end
return {'queued', body}
"""

# ARGV: id, body as read, aborted record, keep_ms, now_ms, then the queues it may be on. Returns 1
# removed before it ran, 2 running: its worker was asked to cancel it, 0 already finished, -1 unknown,
# -2 changed meanwhile (try again).
ABORT = """
local id = ARGV[1]
if redis.call('EXISTS', '{RESULT}' .. id) == 1 then return 0 end
local holder = redis.call('GET', '{LEASE}' .. id)
if holder and holder ~= '{RETRY_MARK}' then
  redis.call('SET', '{ABORT_FLAG}' .. id, '1', 'PX', 86400000)
  redis.call('PUBLISH', '{ABORT_CHANNEL}', id)
  return 2
end
local body = redis.call('GET', '{JOB}' .. id)
if not body then return -1 end
if body ~= ARGV[2] then return -2 end
for i = 6, #ARGV do redis.call('ZREM', '{QUEUE}' .. ARGV[i], id) end
redis.call('DEL', '{JOB}' .. id, '{DELIVERIES}' .. id, '{LEASE}' .. id)
redis.call('SET', '{RESULT}' .. id, ARGV[3], 'PX', ARGV[4])
redis.call('PUBLISH', '{DONE}' .. id, ARGV[3])
return 1
"""

# ARGV: id, queue, new body, now_ms. Puts a failed job back on its queue as a fresh job.
REQUEUE = """
local id, queue = ARGV[1], ARGV[2]
if redis.call('EXISTS', '{JOB}' .. id) == 1 then return 0 end
redis.call('SET', '{JOB}' .. id, ARGV[3])
redis.call('ZADD', '{QUEUE}' .. queue, ARGV[4], id)
redis.call('DEL', '{RESULT}' .. id, '{DELIVERIES}' .. id)
redis.call('ZREM', '{FAILED}' .. queue, id)
redis.call('PUBLISH', '{WAKE}' .. queue, ARGV[4])
return 1
"""

# ARGV: now_ms, then queue names. Returns per queue: ready (not running), running, deferred, failed.
QUEUE_STATS = """
local now = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local qkey = '{QUEUE}' .. ARGV[i]
  local ids = redis.call('ZRANGEBYSCORE', qkey, '-inf', now)
  local running = 0
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', '{LEASE}' .. id) == 1 then running = running + 1 end
  end
  out[#out + 1] = #ids - running
  out[#out + 1] = running
  out[#out + 1] = redis.call('ZCOUNT', qkey, '(' .. now, '+inf')
  out[#out + 1] = redis.call('ZCARD', '{FAILED}' .. ARGV[i])
end
return out
"""


def _render(source: str, channels: Channels) -> str:
    names = _PREFIXES | {
        "WAKE": channels.wake_prefix,
        "DONE": channels.done_prefix,
        "ABORT_CHANNEL": channels.abort,
    }
    for name, prefix in names.items():
        source = source.replace("{" + name + "}", prefix)
    return source


class Scripts:
    """The scripts, registered on one client; each call is EVALSHA, loading the script on first miss."""

    def __init__(self, redis: Redis, channels: Channels) -> None:
        def register(source: str) -> AsyncScript:
            return redis.register_script(_render(source, channels))

        self.enqueue: AsyncScript = register(ENQUEUE)
        self.claim: AsyncScript = register(CLAIM)
        self.complete: AsyncScript = register(COMPLETE)
        self.retry: AsyncScript = register(RETRY)
        self.release: AsyncScript = register(RELEASE)
        self.heartbeat: AsyncScript = register(HEARTBEAT)
        self.status: AsyncScript = register(STATUS)
        self.abort: AsyncScript = register(ABORT)
        self.requeue: AsyncScript = register(REQUEUE)
        self.queue_stats: AsyncScript = register(QUEUE_STATS)
