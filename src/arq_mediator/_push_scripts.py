"""Pushing a job to an idle worker: the Lua parts of the enqueue, claim and stop scripts that do it.

An idle worker would otherwise hear a wake-up and then claim (two hops after the enqueue); pushed, it
gets the claim itself in the message that would have woken it (one hop). Only on one server (or a
sentinel-managed one): on Redis Cluster a worker's queues live on different nodes, and its one budget
could not be updated atomically from one queue's script, so there workers keep the wake-up + claim path
(they never register, and the enqueue finds nobody to push to).

The keys:

* ``arqm:pushready:<queue>``: sorted set of the worker instances ready for a push of *queue*'s jobs,
  scored by when their registration expires;
* ``arqm:push:<instance>``: hash of one registration: ``budget`` (pushes it may still take: its free
  slots after its last claim), ``expires`` (the authority: a queue's score may be later), and what a
  claim for it needs (``lease``, ``name``, ``max_bytes``, ``prefix``: the token of the claim that
  registered it);
* ``arqm:inbox:<instance>``: hash of the pushed claims the worker may not have started, id ->
  ``"<token> <deliveries> <score> <queue>"``; its next claim hands back the ones it has not started.

Strict priority: the CLAIM script registers a worker only when it came up short (nothing due that it
could take on any of its queues), until the earliest deferred job of its queues comes due or the soonest
lease deadline in their running sets (a lapsed lease makes its job due again); a script that makes a job
due later (a deferred enqueue, a retry, a release, a requeue, a lapsed lease swept back, a job due now
queued without a push) pulls the expiry of that queue's registrations to then (`hold_pushes`). A batch
over several queues pushes nothing. So a worker is pushed only jobs that arrive while none of its queues
has a due job.
"""

from __future__ import annotations

from ._script_parts import FENCE, NOW, RECORD

# Workers ready on *queue* stop being pushed to from *due* on, when a job of *queue* comes due.
HOLD = """
local function hold_pushes(queue, due)
  local ready = '{PUSH_READY}' .. queue
  local later = redis.pcall('ZRANGEBYSCORE', ready, '(' .. due, '+inf')
  if type(later) ~= 'table' or later.err then return end
  for _, instance in ipairs(later) do
    redis.call('ZADD', ready, due, instance)
    local registration = '{PUSH_WORKER}' .. instance
    local expires = tonumber(redis.pcall('HGET', registration, 'expires'))
    if expires and expires > tonumber(due) then redis.call('HSET', registration, 'expires', due) end
  end
end
"""

# A pushed claim as one message: each field as <length>:<bytes> (ids and bodies may hold any byte).
_ENCODE = """
local function netstrings(values)
  local parts = {}
  for i, value in ipairs(values) do
    value = tostring(value)
    parts[i] = #value .. ':' .. value
  end
  return table.concat(parts)
end
"""

# Whether *key* is missing or of type *wanted*: a key a write of that type cannot fail on.
_OF_TYPE = """
local function of_type(key, wanted)
  local found = redis.pcall('TYPE', key)
  found = type(found) == 'table' and found.ok or found
  return found == 'none' or found == wanted
end
"""

# Used by the enqueue scripts (with TAKE): claims job *id*, due now on *queue* (not on it yet), for the
# first ready worker with budget left, exactly as CLAIM claims one job, and publishes the claim on the
# worker's push channel. Returns false (nothing changed but the ready sets) when it pushes nothing: the
# caller queues the job and wakes the queue. A registration found expired, spent or not sane (a field or
# key a write below could fail on) leaves the queue's ready set on the way. Everything a write could fail
# on is checked before the first write: a script that failed past `take` would leave a leased job on no
# queue and in no running set, never swept back.
PUSH = (
    HOLD
    + _ENCODE
    + _OF_TYPE
    + """
local function whole(value)  -- a count Redis and Lua read alike ('1e3' and '1.5' are not)
  if type(value) ~= 'string' or #value > 15 or not string.match(value, '^%d+$') then return nil end
  return tonumber(value)
end
local function push_job(id, queue, score, body)
  local ready = '{PUSH_READY}' .. queue
  local running = '{RUNNING}' .. queue
  while true do
    local first = redis.pcall('ZRANGEBYSCORE', ready, now, '+inf', 'LIMIT', 0, 1)
    if type(first) ~= 'table' or first.err or #first == 0 then return false end
    local instance = first[1]
    local registration = '{PUSH_WORKER}' .. instance
    local inbox = '{PUSH_INBOX}' .. instance
    local found = redis.pcall('HMGET', registration, 'budget', 'expires', 'lease', 'name', 'max_bytes',
      'prefix')
    if found.err then found = {} end
    local budget, expires, lease = whole(found[1]), tonumber(found[2]), whole(found[3])
    local name, max_bytes, prefix = found[4], tonumber(found[5]), found[6]
    if not (budget and expires and lease and max_bytes and name and prefix and budget > 0 and expires > now
        and lease > 0 and of_type(inbox, 'hash') and of_type(running, 'zset')) then
      redis.call('ZREM', ready, instance)
    elseif #body > max_bytes or not take(id, prefix .. '-' .. budget, found[3]) then
      -- Queued due now (the claim path fails an oversized job with its problem): no worker of this
      -- queue may be pushed a later job of a lower queue before its claim takes this one.
      hold_pushes(queue, now)
      return false
    else
      local token = prefix .. '-' .. budget
      if budget == 1 then redis.call('ZREM', ready, instance) end
      redis.call('HSET', registration, 'budget', string.format('%d', budget - 1))
      local deliveries, problem = count_delivery(id, '')
      redis.call('ZADD', running, string.format('%d', now + lease), id)
      h_started(id, queue, deliveries, name, score)
      redis.call('HSET', inbox, id, token .. ' ' .. deliveries .. ' ' .. score .. ' ' .. queue)
      redis.call('PEXPIRE', inbox, found[3])
      redis.call('PUBLISH', '{PUSH}' .. instance,
        netstrings({now, token, id, queue, deliveries, score, body, problem}))
      return true
    end
  end
end
"""
)

# Used by CLAIM (with TAKE and FENCE): hands back the pushed claims of *instance* its caller has not
# started (not among *mine*) and still holds, renewing their leases; forgets the others. Appends each
# claim's fields, its token last, to *out*; returns how many.
INBOX = """
local function pushed_back(instance, mine, lease, max_bytes, out)
  local inbox = '{PUSH_INBOX}' .. instance
  local entries = redis.pcall('HGETALL', inbox)
  if entries.err then  -- a key of another type holds no claim: dropped, so the worker can be pushed again
    redis.call('DEL', inbox)
    return 0
  end
  if #entries == 0 then return 0 end
  redis.call('DEL', inbox)
  local count = 0
  for i = 1, #entries, 2 do
    local id = entries[i]
    local token, deliveries, score, queue = string.match(entries[i + 1], '^(%S+) (%S+) (%S+) (.*)$')
    if token and not mine[id] and holds(id, token, deliveries) then
      redis.call('SET', '{LEASE}' .. id, token, 'PX', lease)
      redis.pcall('ZADD', '{RUNNING}' .. queue, string.format('%d', now + tonumber(lease)), id)
      redis.pcall('ZREM', '{QUEUE}' .. queue, id)  -- its lease lapsed and a sweep put it back meanwhile
      local body, problem = read(id, max_bytes)
      if body then
        for _, value in ipairs({id, queue, deliveries, score, body, problem, token}) do
          out[#out + 1] = value
        end
        count = count + 1
      end
    end
  end
  return count
end
"""

# Used by CLAIM: registers *instance* as ready on *queues* (ARGV[first..last])
# with *budget* pushes until *expires*, or, with no budget, no time left or an inbox a push could not
# write, takes its registration back.
REGISTER = (
    _OF_TYPE
    + """
local function register_push(instance, first, last, budget, expires, lease, name, max_bytes, prefix)
  local registration = '{PUSH_WORKER}' .. instance
  if budget <= 0 or expires <= now or not of_type('{PUSH_INBOX}' .. instance, 'hash') then
    if redis.pcall('DEL', registration) == 1 then
      for qi = first, last do redis.pcall('ZREM', '{PUSH_READY}' .. ARGV[qi], instance) end
    end
    return
  end
  local at = string.format('%d', expires)
  local written = redis.pcall('HSET', registration, 'budget', budget, 'expires', at, 'lease', lease, 'name',
    name, 'max_bytes', max_bytes, 'prefix', prefix)
  if type(written) == 'table' and written.err then return end  -- a key of another type: no pushes
  redis.call('PEXPIRE', registration, expires - now + 1000)
  for qi = first, last do
    local ready = '{PUSH_READY}' .. ARGV[qi]
    redis.pcall('ZREMRANGEBYSCORE', ready, '-inf', now)
    redis.pcall('ZADD', ready, at, instance)
  end
end
"""
)

# ARGV: instance, number of queues, the queues, then the ids the worker runs. A stopping worker's
# deregistration: no push reaches it after this; each pushed claim it has not started goes back to its
# queue untried, as RELEASE gives a job back. Returns how many went back.
STOP = (
    NOW
    + FENCE
    + RECORD
    + HOLD
    + """
local instance = ARGV[1]
local last_queue = 2 + tonumber(ARGV[2])
redis.call('DEL', '{PUSH_WORKER}' .. instance)
for qi = 3, last_queue do redis.pcall('ZREM', '{PUSH_READY}' .. ARGV[qi], instance) end
local mine = {}
for i = last_queue + 1, #ARGV do mine[ARGV[i]] = true end
local inbox = '{PUSH_INBOX}' .. instance
local entries = redis.pcall('HGETALL', inbox)
redis.call('DEL', inbox)
if entries.err then entries = {} end
local given = 0
for i = 1, #entries, 2 do
  local id = entries[i]
  local token, deliveries, score, queue = string.match(entries[i + 1], '^(%S+) (%S+) (%S+) (.*)$')
  if token and not mine[id] and holds(id, token, deliveries) then
    if (tonumber(get('{DELIVERIES}' .. id) or '0') or 0) > 0 then redis.call('DECR', '{DELIVERIES}' .. id) end
    redis.call('ZREM', '{RUNNING}' .. queue, id)
    redis.call('ZADD', '{QUEUE}' .. queue, score, id)
    redis.call('DEL', '{LEASE}' .. id)
    hold_pushes(queue, now)
    h_released(id, queue)
    redis.call('PUBLISH', '{WAKE}' .. queue, now)
    given = given + 1
  end
end
h_publish_pending()
return given
"""
)
