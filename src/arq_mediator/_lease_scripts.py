"""The scripts of a claimed job's life: the claim and its lease, the outcome, a retry, a release, heartbeats.

Each takes a *fenced* lease or checks one (`_script_parts.FENCE`); `_scripts` renders and registers them
with the others.
"""

from __future__ import annotations

from ._push_scripts import HOLD, INBOX, REGISTER
from ._script_parts import FENCE, NOW, RECORD, TAKE

# ARGV: how many, lease_ms, token prefix, max envelope bytes, worker name (for the history), how many more
# the first queue alone may give (the worker's prefetch), worker instance ('' when it takes no pushes), how
# long (ms) a registration for pushes lasts, number of queues, queue names by priority,
# then ids the caller holds already (their lease may have lapsed in an outage and the sweep put them back
# on their queue; they must not start twice). Takes ready jobs whose lease is free (or holds the retry
# mark: a retry due now), highest-priority queue first (the later queues only fill what the first left of
# "how many", never the prefetch), leasing each under the token prefix (this claim's token) and moving it
# from its queue to the queue's running set, so later claims do not read it again. Returns {server now,
# next due or -1, bad queues joined by newlines, the pushed claims handed back (`_push_scripts.INBOX`: per
# claim the six fields below and its token), then per job: id, queue, deliveries, score, body, problem}.
# The pushed claims count against how many; with fewer taken than how many (nothing due that it could
# take), the worker is registered for pushes of its queues' new jobs, its budget the free slots it asked
# for and did not fill. A job that cannot run as it stands (a key of the wrong type, an oversized body, a
# delivery counter that is no count) comes back with its problem and as much of its body as is safe, for
# the caller to fail it.
CLAIM = (
    NOW
    + FENCE
    + RECORD
    + TAKE
    + HOLD
    + INBOX
    + REGISTER
    + """
local want, lease, prefix, max_bytes = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
-- Numbers go to redis.call as text made once here: Lua formats a number argument with a slow printf at
-- every call, a cost paid per job.
local leased_until = string.format('%d', now + tonumber(lease))
local worker = ARGV[5]
local ahead = tonumber(ARGV[6])
local instance, register_ms = ARGV[7], tonumber(ARGV[8])
local last_queue = 9 + tonumber(ARGV[9])
local register_until = now + (register_ms or 0)  -- a registration's end, lease deadlines aside
local mine = {}
for i = last_queue + 1, #ARGV do mine[ARGV[i]] = true end
local pushed = {}
local out = {now, -1, '', pushed}
local handed_back = 0
if instance ~= '' then handed_back = pushed_back(instance, mine, lease, max_bytes, pushed) end
want = want - handed_back
local bad_queues = {}
local next_due = -1
-- A running job is off its queue, in the queue's running set scored by its lease deadline. One whose
-- lease lapsed (its worker died or lost Redis) goes back to its queue, due since its deadline; one whose
-- lease was renewed meanwhile is scored again.
local function sweep(queue, qkey, running)
  local lapsed = redis.pcall('ZRANGEBYSCORE', running, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 100)
  if lapsed.err then return end
  for i = 1, #lapsed, 2 do
    local id = lapsed[i]
    local left = redis.pcall('PTTL', '{LEASE}' .. id)
    if type(left) == 'number' and left > 0 then
      redis.call('ZADD', running, string.format('%d', now + left), id)
    else
      redis.call('ZREM', running, id)
      if redis.call('EXISTS', '{JOB}' .. id) == 1 then
        redis.pcall('ZADD', qkey, 'NX', lapsed[i + 1], id)
        hold_pushes(queue, now)
      end
    end
  end
end
for qi = 10, last_queue do
  local queue = ARGV[qi]
  if qi == 10 then want = want + ahead end
  local qkey = '{QUEUE}' .. queue
  local running = '{RUNNING}' .. queue
  sweep(queue, qkey, running)
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
      if want > 0 and not mine[id] and take(id, prefix, lease) then
        local body, problem = read(id, max_bytes)
        if body then
          local deliveries
          deliveries, problem = count_delivery(id, problem)
          redis.call('ZREM', qkey, id)
          removed = removed + 1
          redis.pcall('ZADD', running, leased_until, id)
          h_started(id, queue, deliveries, worker, score)
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
  if qi == 10 then want = math.max(want - ahead, 0) end
  local first = redis.pcall('ZRANGEBYSCORE', qkey, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if not first.err and #first > 0 then
    local due = tonumber(first[2])
    if next_due < 0 or due < next_due then next_due = due end
  end
  if instance ~= '' and register_ms > 0 then
    -- The soonest lease deadline: a job whose lease lapses then is due again for the next sweep, so
    -- pushes of later queues' jobs end then (a renewed lease moves its deadline ahead of this).
    local soonest = redis.pcall('ZRANGE', running, 0, 0, 'WITHSCORES')
    if not soonest.err and #soonest > 0 then
      local deadline = tonumber(soonest[2])
      if deadline and deadline < register_until then register_until = deadline end
    end
  end
end
out[2] = next_due
out[3] = table.concat(bad_queues, '\\n')
if instance ~= '' and register_ms > 0 then
  local expires = register_until
  if next_due >= 0 and next_due < expires then expires = next_due end
  -- Its free slots left: what it asked for less what it got (pushes are started, never held back).
  local budget = tonumber(ARGV[1]) - handed_back - (#out - 4) / 6
  register_push(instance, 10, last_queue, budget, expires, lease, worker, ARGV[4], prefix)
end
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
    NOW
    + FENCE
    + RECORD
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
    NOW
    + FENCE
    + RECORD
    + HOLD
    + """
local id, queue = ARGV[1], ARGV[4]
if not holds(id, ARGV[2], ARGV[3]) then return 0 end
if redis.call('EXISTS', '{ABORT_FLAG}' .. id) == 1 then return 2 end
local due = now + tonumber(ARGV[6])
redis.call('SET', '{JOB}' .. id, ARGV[5])
redis.call('ZADD', '{QUEUE}' .. queue, due, id)
redis.call('ZREM', '{RUNNING}' .. queue, id)
redis.call('SET', '{LEASE}' .. id, '{RETRY_MARK}', 'PX', tonumber(ARGV[6]) + tonumber(ARGV[7]))
hold_pushes(queue, due)
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
    NOW
    + FENCE
    + RECORD
    + HOLD
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
hold_pushes(queue, now + delay)
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
    NOW
    + FENCE
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
