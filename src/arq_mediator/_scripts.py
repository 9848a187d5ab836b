"""Lua scripts: every change to a job's state is one atomic script call, one round trip.

Time comes from the Redis server (``TIME``) inside each script, so due dates and lease deadlines do not
depend on the clocks of producers and workers. Every claim takes a *fenced* lease: its token names the
claim, and only the holder of that token can settle, retry or give back the job (see
`_script_parts.FENCE`; those scripts are in `_lease_scripts`, the enqueue and admin ones here). Keys are
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
from ._lease_scripts import CLAIM, COMPLETE, HEARTBEAT, RELEASE, RETRY
from ._push_scripts import HOLD, PUSH, STOP
from ._script_parts import FENCE, NOW, RECORD, TAKE, only_used

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
    "PUSH_READY": _keys.PUSH_READY_PREFIX,
    "PUSH_WORKER": _keys.PUSH_WORKER_PREFIX,
    "PUSH_INBOX": _keys.PUSH_INBOX_PREFIX,
}

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
local touched, pushed = {}, {}
-- Pushes only in a batch of one queue's jobs: a push of one job could take a worker's slot while a job of
-- its higher queue, earlier in the batch or later, waits on its queue.
local may_push = true
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
    local score = string.format('%d', now + tonumber(delay))
    redis.call('SET', '{JOB}' .. id, body)
    h_enqueued(id, queue, kind, parent, delay)
    if tonumber(delay) > 0 then
      redis.call('ZADD', '{QUEUE}' .. queue, score, id)
      hold_pushes(queue, score)
      touched[queue] = score
    elseif may_push and push_job(id, queue, score, body) then
      pushed[queue] = true
    else
      redis.call('ZADD', '{QUEUE}' .. queue, score, id)
      touched[queue] = score
    end
    out[#out + 1] = 1
    out[#out + 1] = queue
    out[#out + 1] = ''
  end
end
local function wake_touched()
  for queue in pairs(pushed) do
    if not touched[queue] then redis.call('SADD', '{QUEUES}', queue) end
  end
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
    NOW
    + FENCE
    + RECORD
    + TAKE
    + PUSH
    + _ENQUEUE_ONE
    + """
local out = {}
for i = 8, #ARGV, 6 do
  if ARGV[i] ~= ARGV[2] then may_push = false end
end
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
    NOW
    + FENCE
    + RECORD
    + TAKE
    + PUSH
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

# ARGV: id. Returns {state, detail}: 'finished' + result record, 'running', 'queued' or 'deferred' + body,
# or 'missing'.
STATUS = (
    NOW
    + FENCE
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
    NOW
    + FENCE
    + RECORD
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
local read, job = pcall(cjson.decode, body)  -- its type, for the history's indexes
local kind = read and type(job) == 'table' and type(job.type) == 'string' and job.type or ''
h_finished(id, removed_from, 'aborted', kind, '', '', 'aborted before it started', body)
redis.call('DEL', '{JOB}' .. id, '{DELIVERIES}' .. id, '{LEASE}' .. id, '{ABORT_FLAG}' .. id)
redis.call('SET', '{RESULT}' .. id, ARGV[3], 'PX', keep)
redis.call('PUBLISH', '{DONE}' .. id, ARGV[3])
return 1
"""
)

# ARGV: id, queue, new body. Puts a failed job back on its queue as a fresh job. Returns 1, or 0 when a job
# with that id is queued or running already (nothing changed).
REQUEUE = (
    NOW
    + RECORD
    + HOLD
    + """
local id, queue = ARGV[1], ARGV[2]
if redis.call('EXISTS', '{JOB}' .. id) == 1 then return 0 end
redis.call('SET', '{JOB}' .. id, ARGV[3])
redis.call('ZADD', '{QUEUE}' .. queue, now, id)
redis.call('DEL', '{RESULT}' .. id, '{DELIVERIES}' .. id, '{LEASE}' .. id, '{ABORT_FLAG}' .. id)
redis.call('ZREM', '{FAILED}' .. queue, id)
hold_pushes(queue, now)
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
    NOW
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
    return NOW + FENCE + RECORD + body


def render(source: str, channels: Channels, history: JobHistory | None) -> str:
    """Return *source* with the key prefixes, channel names and history functions of one database."""
    layout = channels.layout
    recording = recording_lua(history, layout.lua_name(channels.events), layout.lua_prefix(HISTORY_PREFIX))
    source = source.replace(RECORD, only_used(recording, source.replace(RECORD, "")))
    names = _PREFIXES | {
        "WAKE": channels.wake_prefix,
        "DONE": channels.done_prefix,
        "ABORT_CHANNEL": channels.abort,
        "PUSH": channels.push_prefix,
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
        self.stop_pushes: AsyncScript = register(STOP)
