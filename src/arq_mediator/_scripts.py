"""Lua scripts: every change to a job's state is one atomic script call, one round trip.

Time comes from the Redis server (``TIME``) inside each script, so due dates and lease deadlines do not
depend on the clocks of producers and workers. Every claim takes a *fenced* lease: its token names the
claim, and only the holder of that token can settle, retry or give back the job (see `_FENCE`). Keys are
built inside the scripts from placeholders (``'{JOB}' .. id``) that `render` fills in per layout: on one
server (or a sentinel-managed one) with arq's own prefixes, so the scripts are arq's layout unchanged; on
Redis Cluster with prefixes that carry the hash tag of the call's queue, given as the call's one key
(`_layout.Layout`), and PUBLISH becomes SPUBLISH. There every call is about one queue, so it touches one
slot: the callers split what spans queues (a batch of outcomes, a claim over several queues) per queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _keys
from ._history import HISTORY_PREFIX, recording_lua

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from ._history import JobHistory
    from ._keys import Channels

_PREFIXES = {
    "QUEUE": _keys.QUEUE_PREFIX,
    "JOB": _keys.JOB_PREFIX,
    "LEASE": _keys.LEASE_PREFIX,
    "RESULT": _keys.RESULT_PREFIX,
    "DELIVERIES": _keys.DELIVERIES_PREFIX,
    "FAILED": _keys.FAILED_PREFIX,
    "RUNNING": _keys.RUNNING_PREFIX,
    "ABORT_FLAG": _keys.ABORT_PREFIX,
    "RECURRING": _keys.RECURRING_PREFIX,
    "RETRY_MARK": _keys.RETRY_MARK,
    "QUEUES": _keys.QUEUES_KEY,
    "WORKERS": _keys.WORKERS_KEY,
    "HISTORY": HISTORY_PREFIX,
}

# The server's clock in ms, read once per script call.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Where the history's recording functions (`_history`) go in a script: after the clock, before their use.
_RECORD = "\n{RECORDING}\n"

# A lease token names one claim ('<worker instance>.<claim number>'). The caller holds the job when the lease
# holds its token, or when the lease lapsed and nobody claimed the job since (the delivery counter still
# says the caller's delivery). Any other holder, the retry mark included, means the caller lost it.
_FENCE = """
local function get(key)
  local reply = redis.pcall('GET', key)
  if type(reply) == 'table' then return nil end
  return reply
end
local function holds(id, token, deliveries)
  local holder = get('{LEASE}' .. id)
  if holder then return holder == token end
  return get('{DELIVERIES}' .. id) == deliveries
end
"""

# Adds one job unless its id is queued, running or still has a result: 1 added, 0 already there, 2
# already finished; then the queue the job is on (or was) and, for an existing job, its message type.
_ENQUEUE_ONE = """
local function facts_of(body, fallback, out)
  local ok, record = pcall(cjson.decode, body)
  if not ok or type(record) ~= 'table' then record = {} end
  if type(record.job) == 'table' then record.type = record.type or record.job.type end
  out[#out + 1] = type(record.queue) == 'string' and record.queue or fallback
  out[#out + 1] = type(record.type) == 'string' and record.type or ''
end
local touched = {}
local function enqueue_one(id, queue, delay, body, kind, parent, out)
  local existing = redis.pcall('GET', '{JOB}' .. id)
  if type(existing) == 'table' then existing = '' end
  local finished = (not existing) and get('{RESULT}' .. id)
  if existing then
    out[#out + 1] = 0
    facts_of(existing, queue, out)
  elseif finished then
    out[#out + 1] = 2
    facts_of(finished, queue, out)
  else
    local score = now + tonumber(delay)
    redis.call('SET', '{JOB}' .. id, body)
    redis.call('ZADD', '{QUEUE}' .. queue, score, id)
    touched[queue] = score
    h_enqueued(id, queue, kind, parent, delay)
    out[#out + 1] = 1
    out[#out + 1] = queue
    out[#out + 1] = ''
  end
end
local function wake_touched()
  for queue, score in pairs(touched) do
    redis.call('SADD', '{QUEUES}', queue)
    redis.call('PUBLISH', '{WAKE}' .. queue, score)
  end
  h_publish_pending()
end
"""

# ARGV: groups of (id, queue, delay_ms, body, request type, parent job id or ""). Returns per job a pair
# from `enqueue_one`. Idle workers of each touched queue are woken once.
ENQUEUE = (
    _NOW
    + _FENCE
    + _RECORD
    + _ENQUEUE_ONE
    + """
local out = {}
for i = 1, #ARGV, 6 do
  enqueue_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], out)
end
wake_touched()
return out
"""
)

# ARGV: schedule key, tick_ms, then one job as in ENQUEUE. Enqueues the tick of a recurring job unless this
# tick or a later one was enqueued already (by any worker, whatever became of its job). Returns
# {1 added / 0 not, queue, type}.
ENQUEUE_TICK = (
    _NOW
    + _FENCE
    + _RECORD
    + _ENQUEUE_ONE
    + """
local last = tonumber(get(ARGV[1]) or '')
if last and last >= tonumber(ARGV[2]) then return {0, ARGV[4], ''} end
redis.call('SET', ARGV[1], ARGV[2])
local out = {}
enqueue_one(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], out)
wake_touched()
return out
"""
)

# ARGV: how many, lease_ms, token prefix, max envelope bytes, worker name (for the history), number of
# queues, queue names by priority,
# then ids the caller runs already (their lease may have lapsed in an outage; they must not start twice).
# Takes ready jobs whose lease is free (or holds the retry mark: a retry due now), highest-priority queue
# first, leasing each under the token prefix (this claim's token) and moving it from its queue to the
# queue's running set, so later claims do not read it again. Returns {server now, next due or -1,
# bad queues joined by newlines, then per job: id, queue, deliveries, score, body, problem}. A job that
# cannot run as it stands (a key of the wrong type, an oversized body, a delivery counter that is no
# count) comes back with its problem and as much of its body as is safe, for the caller to fail it.
CLAIM = (
    _NOW
    + _FENCE
    + _RECORD
    + """
local want, lease, prefix, max_bytes = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
-- Numbers go to redis.call as text made once here: Lua formats a number argument with a slow printf at
-- every call, a cost paid per job.
local leased_until = string.format('%d', now + tonumber(lease))
local worker = ARGV[5]
local last_queue = 6 + tonumber(ARGV[6])
local mine = {}
for i = last_queue + 1, #ARGV do mine[ARGV[i]] = true end
local out = {now, -1, ''}
local bad_queues = {}
local next_due = -1
local function take(id)
  if redis.call('SET', '{LEASE}' .. id, prefix, 'NX', 'PX', lease) then return true end
  local holder = redis.pcall('GET', '{LEASE}' .. id)
  if holder == '{RETRY_MARK}' or type(holder) == 'table' then
    redis.call('SET', '{LEASE}' .. id, prefix, 'PX', lease)
    return true
  end
  return false
end
local function read(id)  -- returns the body (nil: gone) and a problem ('' when none)
  local key = '{JOB}' .. id
  local size = redis.pcall('STRLEN', key)
  if type(size) == 'table' then
    return '', 'its job key holds a ' .. redis.call('TYPE', key).ok .. ', not a JSON envelope'
  end
  if size > max_bytes then
    local problem = 'its envelope is ' .. size .. ' bytes, over the limit of ' .. max_bytes
    return redis.call('GETRANGE', key, 0, 4095), problem
  end
  return redis.call('GET', key), ''
end
local function count_delivery(id, problem)
  local key = '{DELIVERIES}' .. id
  local deliveries = redis.pcall('INCR', key)
  if type(deliveries) == 'number' and deliveries >= 1 then return deliveries, problem end
  if problem == '' then problem = 'its delivery counter holds ' .. tostring(get(key)) .. ', not a count' end
  redis.call('DEL', key)
  return redis.call('INCR', key), problem
end
-- A running job is off its queue, in the queue's running set scored by its lease deadline. One whose
-- lease lapsed (its worker died or lost Redis) goes back to its queue, due since its deadline; one whose
-- lease was renewed meanwhile is scored again.
local function sweep(qkey, running)
  local lapsed = redis.pcall('ZRANGEBYSCORE', running, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 100)
  if lapsed.err then return end
  for i = 1, #lapsed, 2 do
    local id = lapsed[i]
    local left = redis.pcall('PTTL', '{LEASE}' .. id)
    if type(left) == 'number' and left > 0 then
      redis.call('ZADD', running, string.format('%d', now + left), id)
    else
      redis.call('ZREM', running, id)
      if redis.call('EXISTS', '{JOB}' .. id) == 1 then redis.pcall('ZADD', qkey, 'NX', lapsed[i + 1], id) end
    end
  end
end
for qi = 7, last_queue do
  local queue = ARGV[qi]
  local qkey = '{QUEUE}' .. queue
  local running = '{RUNNING}' .. queue
  sweep(qkey, running)
  local offset = 0
  while want > 0 do
    local ids = redis.pcall('ZRANGEBYSCORE', qkey, '-inf', now, 'WITHSCORES', 'LIMIT', offset, want + 32)
    if ids.err then
      bad_queues[#bad_queues + 1] = queue .. ': ' .. ids.err
      break
    end
    if #ids == 0 then break end
    local removed = 0  -- entries this pass took off the queue: the next pass starts that much earlier
    for i = 1, #ids, 2 do
      local id, score = ids[i], ids[i + 1]
      if want > 0 and not mine[id] and take(id) then
        local body, problem = read(id)
        if body then
          local deliveries
          deliveries, problem = count_delivery(id, problem)
          redis.call('ZREM', qkey, id)
          removed = removed + 1
          redis.pcall('ZADD', running, leased_until, id)
          h_started(id, queue, deliveries, worker)
          for _, value in ipairs({id, queue, deliveries, score, body, problem}) do out[#out + 1] = value end
          want = want - 1
        else  -- a queue entry whose job is gone: stale, dropped
          redis.call('ZREM', qkey, id)
          removed = removed + 1
          redis.call('DEL', '{LEASE}' .. id)
        end
      end
    end
    offset = offset + math.floor(#ids / 2) - removed
  end
  local first = redis.pcall('ZRANGEBYSCORE', qkey, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if not first.err and #first > 0 then
    local due = tonumber(first[2])
    if next_due < 0 or due < next_due then next_due = due end
  end
end
out[2] = next_due
out[3] = table.concat(bad_queues, '\\n')
h_publish_pending()
return out
"""
)

# How many arguments one job's outcome takes in COMPLETE.
COMPLETE_ARGS = 14

# ARGV: per job, in groups of COMPLETE_ARGS: id, token, deliveries, queue, result record, keep_ms, failed
# (1/0), record id (the id the record is kept under; differs from the id only for an id that is not
# text), then for the history: the final state (succeeded, failed, aborted), the request type, the
# worker, a detail (the error type), the envelope to keep ("" for none) and when (ms, server time) the
# try was claimed. Per job: stores the result,
# forgets the job, lists it as failed (scored by when its record expires) when it failed, and publishes
# the record to whoever awaits it. Returns per job 1, or 0 when the caller no longer holds the job: a late
# outcome, dropped. A worker's outcomes of one event-loop turn go in one call: the history's indexes and
# counters then take one write per key for them all.
COMPLETE = (
    _NOW
    + _FENCE
    + _RECORD
    + """
local out = {}
for i = 1, #ARGV, {COMPLETE_ARGS} do
  local id, queue, record = ARGV[i], ARGV[i + 3], ARGV[i + 4]
  if holds(id, ARGV[i + 1], ARGV[i + 2]) then
    local keep = ARGV[i + 5]  -- text: redis.call would format a number with a slow printf
    local record_id = ARGV[i + 7]
    h_finish_one(record_id, queue, ARGV[i + 8], ARGV[i + 9], ARGV[i + 2], ARGV[i + 10], ARGV[i + 11],
      ARGV[i + 12], ARGV[i + 13])
    redis.call('SET', '{RESULT}' .. record_id, record, 'PX', keep)
    redis.call('DEL', '{JOB}' .. id, '{LEASE}' .. id, '{DELIVERIES}' .. id, '{ABORT_FLAG}' .. id)
    redis.call('ZREM', '{QUEUE}' .. queue, id)
    redis.call('ZREM', '{RUNNING}' .. queue, id)
    if ARGV[i + 6] == '1' then
      local failed = '{FAILED}' .. queue
      redis.call('ZADD', failed, now + tonumber(keep), record_id)
      local expired = redis.call('ZRANGEBYSCORE', failed, '-inf', now, 'LIMIT', 0, 100)
      if #expired > 0 then redis.call('ZREM', failed, unpack(expired)) end
    end
    redis.call('PUBLISH', '{DONE}' .. record_id, record)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
h_finish_flush()
h_publish_pending()
return out
""".replace("{COMPLETE_ARGS}", str(COMPLETE_ARGS))
)

# ARGV: id, token, deliveries, queue, new body, delay_ms, lease_ms, then for the history what failed, when
# (ms, server time) the try was claimed and by which worker. Puts
# a failed try back for a later try. The lease becomes the retry mark: no worker holds the job, a claim
# may take it once it is due, and a heartbeat already on its way cannot take it back. Returns 1, 0 when
# the caller no longer holds the job, 2 when the job was asked to abort (the caller then records it
# aborted instead).
RETRY = (
    _NOW
    + _FENCE
    + _RECORD
    + """
local id, queue = ARGV[1], ARGV[4]
if not holds(id, ARGV[2], ARGV[3]) then return 0 end
if redis.call('EXISTS', '{ABORT_FLAG}' .. id) == 1 then return 2 end
local due = now + tonumber(ARGV[6])
redis.call('SET', '{JOB}' .. id, ARGV[5])
redis.call('ZADD', '{QUEUE}' .. queue, due, id)
redis.call('ZREM', '{RUNNING}' .. queue, id)
redis.call('SET', '{LEASE}' .. id, '{RETRY_MARK}', 'PX', tonumber(ARGV[6]) + tonumber(ARGV[7]))
h_retrying(id, queue, ARGV[3], due, ARGV[8], ARGV[9], ARGV[10])
h_publish_pending()
redis.call('PUBLISH', '{WAKE}' .. queue, due)
return 1
"""
)

# ARGV: id, token, deliveries, queue, delay_ms, lease_ms, the score it was claimed at. Gives a job back
# untried (shutdown, or a type this worker cannot run) to its queue: its delivery does not count. With a
# delay it becomes due again only then, without one it keeps its place. Returns as RETRY.
RELEASE = (
    _NOW
    + _FENCE
    + _RECORD
    + """
local id, queue, delay = ARGV[1], ARGV[4], tonumber(ARGV[5])
if not holds(id, ARGV[2], ARGV[3]) then return 0 end
if redis.call('EXISTS', '{ABORT_FLAG}' .. id) == 1 then return 2 end
local deliveries = tonumber(get('{DELIVERIES}' .. id) or '0') or 0
if deliveries > 0 then redis.call('DECR', '{DELIVERIES}' .. id) end
redis.call('ZREM', '{RUNNING}' .. queue, id)
if delay > 0 then
  redis.call('ZADD', '{QUEUE}' .. queue, now + delay, id)
  redis.call('SET', '{LEASE}' .. id, '{RETRY_MARK}', 'PX', delay + tonumber(ARGV[6]))
else
  redis.call('ZADD', '{QUEUE}' .. queue, tonumber(ARGV[7]) or now, id)
  redis.call('DEL', '{LEASE}' .. id)
end
h_released(id, queue)
h_publish_pending()
redis.call('PUBLISH', '{WAKE}' .. queue, now + delay)
return 1
"""
)

# ARGV: worker key, worker record, ttl_ms, lease_ms, number of queues, the worker's queues, then (id, queue,
# token, deliveries) of each running job. Renews the heartbeat and every lease the worker still holds
# (taking back one that lapsed in an outage if nobody claimed the job since). Returns the depth (ready
# or running) of each queue, the number of jobs it no longer holds and their ids, then the ids asked to
# abort. A job taken back after its lease lapsed may have been swept back to its queue: it leaves it again.
HEARTBEAT = (
    _NOW
    + _FENCE
    + """
local lease = tonumber(ARGV[4])
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', '{WORKERS}', now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', '{WORKERS}', '-inf', now)
local out = {}
local last_queue = 5 + tonumber(ARGV[5])
for i = 6, last_queue do
  local depth = redis.pcall('ZCOUNT', '{QUEUE}' .. ARGV[i], '-inf', now)
  local running = redis.pcall('ZCARD', '{RUNNING}' .. ARGV[i])
  out[#out + 1] = (type(depth) == 'number' and depth or 0) + (type(running) == 'number' and running or 0)
end
local lost, aborts = {}, {}
for i = last_queue + 1, #ARGV, 4 do
  local id, queue, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if holds(id, token, ARGV[i + 3]) then
    redis.call('SET', '{LEASE}' .. id, token, 'PX', lease)
    redis.call('ZADD', '{RUNNING}' .. queue, now + lease, id)
    redis.pcall('ZREM', '{QUEUE}' .. queue, id)
    if redis.call('EXISTS', '{ABORT_FLAG}' .. id) == 1 then aborts[#aborts + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
out[#out + 1] = #lost
for _, id in ipairs(lost) do out[#out + 1] = id end
for _, id in ipairs(aborts) do out[#out + 1] = id end
return out
"""
)

# ARGV: id. Returns {state, detail}: 'finished' + result record, 'running', 'queued' or 'deferred' + body,
# or 'missing'.
STATUS = (
    _NOW
    + _FENCE
    + """
local id = ARGV[1]
local result = get('{RESULT}' .. id)
if result then return {'finished', result} end
local body = get('{JOB}' .. id)
if not body then return {'missing', ''} end
local holder = get('{LEASE}' .. id)
if holder and holder ~= '{RETRY_MARK}' then return {'running', body} end
local ok, job = pcall(cjson.decode, body)
if not ok or type(job) ~= 'table' or type(job.queue) ~= 'string' then return {'queued', body} end
local score = redis.pcall('ZSCORE', '{QUEUE}' .. job.queue, id)
if type(score) == 'string' and tonumber(score) > now then return {'deferred', body} end
return {'queued', body}
"""
)

# ARGV: id, body as read, aborted record, keep_ms, then the queues it may be on. Returns 1 removed before
# it ran (recorded as failed by JobAbortedError, like a job aborted while running), 2 running: its worker was
# asked to cancel it, 0 already finished, -1 unknown, -2 changed meanwhile (try again).
ABORT = (
    _NOW
    + _FENCE
    + _RECORD
    + """
local id = ARGV[1]
if redis.call('EXISTS', '{RESULT}' .. id) == 1 then return 0 end
local holder = get('{LEASE}' .. id)
if holder and holder ~= '{RETRY_MARK}' then
  redis.call('SET', '{ABORT_FLAG}' .. id, '1', 'PX', 86400000)
  redis.call('PUBLISH', '{ABORT_CHANNEL}', id)
  return 2
end
local body = get('{JOB}' .. id)
if not body then return -1 end
if body ~= ARGV[2] then return -2 end
local keep = tonumber(ARGV[4])
local removed_from = ''
for i = 5, #ARGV do
  local lapsed = redis.pcall('ZREM', '{RUNNING}' .. ARGV[i], id)  -- its lease lapsed, not swept yet
  if redis.call('ZREM', '{QUEUE}' .. ARGV[i], id) == 1 or lapsed == 1 then
    redis.call('ZADD', '{FAILED}' .. ARGV[i], now + keep, id)
    removed_from = ARGV[i]
  end
end
h_finished(id, removed_from, 'aborted', '', '', '', 'aborted before it started', body)
redis.call('DEL', '{JOB}' .. id, '{DELIVERIES}' .. id, '{LEASE}' .. id, '{ABORT_FLAG}' .. id)
redis.call('SET', '{RESULT}' .. id, ARGV[3], 'PX', keep)
redis.call('PUBLISH', '{DONE}' .. id, ARGV[3])
return 1
"""
)

# ARGV: id, queue, new body. Puts a failed job back on its queue as a fresh job. Returns 1, or 0 when a job
# with that id is queued or running already (nothing changed).
REQUEUE = (
    _NOW
    + _RECORD
    + """
local id, queue = ARGV[1], ARGV[2]
if redis.call('EXISTS', '{JOB}' .. id) == 1 then return 0 end
redis.call('SET', '{JOB}' .. id, ARGV[3])
redis.call('ZADD', '{QUEUE}' .. queue, now, id)
redis.call('DEL', '{RESULT}' .. id, '{DELIVERIES}' .. id, '{LEASE}' .. id, '{ABORT_FLAG}' .. id)
redis.call('ZREM', '{FAILED}' .. queue, id)
h_requeued(id, queue)
h_publish_pending()
redis.call('PUBLISH', '{WAKE}' .. queue, now)
return 1
"""
)

# ARGV: queue names. Returns per queue: ready (not running), running, deferred, failed; each a count on a
# sorted set, so the cost does not grow with the backlog. A running job is off its queue; one whose lease
# lapsed counts as ready, as the next claim puts it back.
QUEUE_STATS = (
    _NOW
    + """
local out = {}
local function count(key, low, high)
  local reply = redis.pcall('ZCOUNT', key, low, high)
  if type(reply) == 'number' then return reply end
  return 0
end
for i = 1, #ARGV do
  local queue = ARGV[i]
  local due = count('{QUEUE}' .. queue, '-inf', now) + count('{RUNNING}' .. queue, '-inf', now)
  local running = count('{RUNNING}' .. queue, '(' .. now, '+inf')
  out[#out + 1] = due
  out[#out + 1] = running
  out[#out + 1] = count('{QUEUE}' .. queue, '(' .. now, '+inf')
  out[#out + 1] = count('{FAILED}' .. queue, '(' .. now, '+inf')
end
return out
"""
)


def with_history(body: str) -> str:
    """Return a script of *body* that has the clock (``now``), ``get`` and the history's functions."""
    return _NOW + _FENCE + _RECORD + body


def render(source: str, channels: Channels, history: JobHistory | None) -> str:
    """Return *source* with the key prefixes, channel names and history functions of one database."""
    layout = channels.layout
    recording = recording_lua(history, layout.lua_name(channels.events), layout.lua_prefix(HISTORY_PREFIX))
    source = source.replace(_RECORD, recording)
    names = _PREFIXES | {
        "WAKE": channels.wake_prefix,
        "DONE": channels.done_prefix,
        "ABORT_CHANNEL": channels.abort,
    }
    for name, value in names.items():
        if name != "RETRY_MARK":  # a value, not a key
            value = layout.lua_prefix(value) if value.endswith(":") else layout.lua_name(value)
        source = source.replace("{" + name + "}", value)
    return layout.lua(source)


class Scripts:
    """The scripts, registered on one client; each call is EVALSHA, loading the script on first miss."""

    def __init__(self, redis: Redis, channels: Channels, history: JobHistory | None = None) -> None:
        def register(source: str) -> AsyncScript:
            return redis.register_script(render(source, channels, history))

        self.enqueue: AsyncScript = register(ENQUEUE)
        self.enqueue_tick: AsyncScript = register(ENQUEUE_TICK)
        self.claim: AsyncScript = register(CLAIM)
        self.complete: AsyncScript = register(COMPLETE)
        self.retry: AsyncScript = register(RETRY)
        self.release: AsyncScript = register(RELEASE)
        self.heartbeat: AsyncScript = register(HEARTBEAT)
        self.status: AsyncScript = register(STATUS)
        self.abort: AsyncScript = register(ABORT)
        self.requeue: AsyncScript = register(REQUEUE)
        self.queue_stats: AsyncScript = register(QUEUE_STATS)
