"""Job history: what the engine records of each job's life, for the dashboard, in bounded Redis memory.

Every record is written by the scripts that change a job's state (`_scripts`), inside the same atomic
call, so recording costs no round trip of its own. Per job one hash (``arqm:history:job:<id>``) holds its
facts and its steps; finished jobs are indexed by state, newest first, in sorted sets (also per queue,
per request type and per both); counters per second, minute and hour feed the throughput graphs. The
scripts trim the indexes as they add to them (a bounded number of entries per call): entries older than
`JobHistory.keep_jobs`, or past `JobHistory.max_jobs` per state, go with their job's hash.

Layout (all under ``arqm:history:``)::

    job:<id>                 hash: type, queue, state, enqueued, started, finished, tries, worker,
                             parent, progress, body (the envelope, when small), steps (one line a step)
    logs:<id>                list: the handler's last log lines, JSON each
    index:<state>            sorted set of finished ids (succeeded, failed, aborted) scored by finish ms
    index:<state>:queue:<q>  the same per queue; ``:type:<t>`` per request type; ``:both:<len q>:<q>:<t>``
    retrying                 sorted set of ids waiting for a retry, scored by when it is due
    types                    set of every request type name seen
    count:second:<minute>    hash of per-second counters (``s<second>``, ``f<second>``), kept two hours
    count:minute:<hour>      hash of per-minute counters, kept `JobHistory.keep_counters`
    count:hour:<day>         hash of per-hour counters, kept a day longer

A step line is ``<ms>\\t<state>\\t<try>\\t<worker>\\t<detail>``. State changes are also published, as
``<state>\\t<queue>\\t<id>``, on the database's events channel (`Channels.events`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from ._policy import to_seconds

HISTORY_PREFIX = "arqm:history:"
RETRYING_KEY = HISTORY_PREFIX + "retrying"
TYPES_KEY = HISTORY_PREFIX + "types"
# Finished states: those a job is indexed by once it ended.
FINISHED_STATES = ("succeeded", "failed", "aborted")
# How many index entries one script call trims at most, so no call's work grows with the backlog.
TRIM_BATCH = 100
# How many bytes of step lines one job keeps; past that the oldest (but the first) go.
STEPS_BYTES = 2048


def history_key(job_id: str) -> str:
    """Return the hash holding the history of *job_id*."""
    return HISTORY_PREFIX + "job:" + job_id


def logs_key(job_id: str) -> str:
    """Return the list holding the last log lines of *job_id*'s handler."""
    return HISTORY_PREFIX + "logs:" + job_id


def index_key(state: str, queue: str | None = None, request_type: str | None = None) -> str:
    """Return the index of finished jobs in *state*, narrowed to a queue, a request type, or both."""
    base = HISTORY_PREFIX + "index:" + state
    if queue is not None and request_type is not None:
        return f"{base}:both:{len(queue)}:{queue}:{request_type}"
    if queue is not None:
        return f"{base}:queue:{queue}"
    if request_type is not None:
        return f"{base}:type:{request_type}"
    return base


def counter_key(resolution: str, bucket: int) -> str:
    """Return the hash of counters at *resolution* ("second", "minute", "hour") for *bucket*."""
    return f"{HISTORY_PREFIX}count:{resolution}:{bucket}"


@dataclass(frozen=True, slots=True)
class JobHistory:
    """What the engine records of past jobs for the dashboard, and for how long.

    Attributes:
        keep_jobs: How long a finished job's history (steps, logs, payload) stays listed.
        keep_counters: How long the per-minute and per-hour succeeded/failed counters are kept.
        max_jobs: Finished jobs kept per state (succeeded, failed, aborted) at most, whatever their age:
            the bound on memory when jobs finish faster than `keep_jobs` expects.
        max_log_lines: The handler's log lines (``ctx.logger``, INFO and above) kept per job, the last ones.
        max_payload_bytes: A finished job keeps its envelope (the request payload) up to this size.
    """

    keep_jobs: float | timedelta = 86_400.0
    keep_counters: float | timedelta = 7 * 86_400.0
    max_jobs: int = 200_000
    max_log_lines: int = 100
    max_payload_bytes: int = 4096
    keep_jobs_ms: int = field(init=False, repr=False, compare=False)
    keep_counters_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        jobs, counters = to_seconds(self.keep_jobs) or 0.0, to_seconds(self.keep_counters) or 0.0
        if jobs <= 0 or counters <= 0:
            raise ValueError(
                f"keep_jobs and keep_counters must be positive, got {self.keep_jobs!r} and "
                f"{self.keep_counters!r}"
            )
        if self.max_jobs < 1 or self.max_log_lines < 0 or self.max_payload_bytes < 0:
            raise ValueError(
                f"max_jobs must be at least 1, max_log_lines and max_payload_bytes zero or more; got "
                f"{self.max_jobs=}, {self.max_log_lines=}, {self.max_payload_bytes=}"
            )
        object.__setattr__(self, "keep_jobs_ms", int(jobs * 1000))
        object.__setattr__(self, "keep_counters_ms", int(counters * 1000))


# The history a mediator records unless told otherwise.
DEFAULT_HISTORY = JobHistory()

# The recording functions every state-changing script calls. Each one takes what the script knows; the
# constants in braces are filled in from the mediator's `JobHistory` when the scripts are registered.
_RECORDING = """
local H = '{HISTORY}'
local function h_publish(state, queue, id)
  redis.call('PUBLISH', '{EVENTS}', state .. '\\t' .. queue .. '\\t' .. id)
end
local function h_step(key, state, try, worker, detail)
  local steps = redis.call('HGET', key, 'steps')
  local line = now .. '\\t' .. state .. '\\t' .. try .. '\\t' .. worker .. '\\t' .. detail
  if not steps then
    steps = line
  else
    if #steps > {STEPS_BYTES} then  -- keep the first step (enqueued), drop the oldest after it
      local first = string.find(steps, '\\n', 1, true) or #steps
      local cut = string.find(steps, '\\n', #steps - {STEPS_BYTES} / 2, true) or #steps
      steps = string.sub(steps, 1, first) .. string.sub(steps, cut + 1)
    end
    steps = steps .. '\\n' .. line
  end
  redis.call('HSET', key, 'steps', steps)
  redis.call('PEXPIRE', key, {ORPHAN_MS})
end
local function h_index_keys(state, queue, kind)
  local base = H .. 'index:' .. state
  local keys = {base, base .. ':queue:' .. queue}
  if kind and kind ~= '' then
    keys[3] = base .. ':type:' .. kind
    keys[4] = base .. ':both:' .. #queue .. ':' .. queue .. ':' .. kind
  end
  return keys
end
-- Takes a job out of the finished indexes it is in (it was requeued, deleted or enqueued anew).
local function h_unindex(id)
  local key = H .. 'job:' .. id
  local facts = redis.call('HMGET', key, 'state', 'queue', 'type')
  if facts[1] and facts[2] then
    for _, index in ipairs(h_index_keys(facts[1], facts[2], facts[3])) do redis.call('ZREM', index, id) end
  end
  redis.call('ZREM', H .. 'retrying', id)
end
local function h_forget(id)
  h_unindex(id)
  redis.call('DEL', H .. 'job:' .. id, H .. 'logs:' .. id)
end
-- Drops the oldest finished jobs of a state past the retention or the cap, a bounded number per call.
local function h_trim(state)
  local index = H .. 'index:' .. state
  local excess = math.max(
    redis.call('ZCOUNT', index, '-inf', now - {KEEP_JOBS_MS}), redis.call('ZCARD', index) - {MAX_JOBS})
  if excess <= 0 then return end
  for _, id in ipairs(redis.call('ZRANGE', index, 0, math.min(excess, {TRIM_BATCH}) - 1)) do
    h_forget(id)
    redis.call('ZREM', index, id)
  end
end
local function h_bump(key, field, ttl)
  if redis.call('HINCRBY', key, field, 1) == 1 then redis.call('PEXPIRE', key, ttl) end
end
local function h_count(letter)
  local second, minute, hour = math.floor(now / 1000), math.floor(now / 60000), math.floor(now / 3600000)
  h_bump(H .. 'count:second:' .. minute, letter .. (second % 60), 7200000)
  h_bump(H .. 'count:minute:' .. hour, letter .. (minute % 60), {KEEP_COUNTERS_MS})
  h_bump(H .. 'count:hour:' .. math.floor(hour / 24), letter .. (hour % 24), {KEEP_COUNTERS_MS} + 86400000)
end
local function h_enqueued(id, queue, kind, parent, delay)
  local key = H .. 'job:' .. id
  if redis.call('EXISTS', key) == 1 then h_forget(id) end  -- an id used again: a new job's history
  local state = tonumber(delay) > 0 and 'scheduled' or 'enqueued'
  redis.call('HSET', key, 'type', kind, 'queue', queue, 'enqueued', now, 'state', state, 'tries', 0)
  if parent ~= '' then redis.call('HSET', key, 'parent', parent) end
  if kind ~= '' then redis.call('SADD', H .. 'types', kind) end
  h_step(key, state, '', '', state == 'scheduled' and tostring(now + tonumber(delay)) or '')
  h_publish(state, queue, id)
end
local function h_started(id, queue, try, worker)
  local key = H .. 'job:' .. id
  redis.call('HSET', key, 'state', 'running', 'started', now, 'tries', try, 'worker', worker, 'queue', queue)
  h_step(key, 'started', try, worker, '')
  redis.call('ZREM', H .. 'retrying', id)
  h_publish('running', queue, id)
end
local function h_retrying(id, queue, try, due, detail)
  local key = H .. 'job:' .. id
  redis.call('HSET', key, 'state', 'retrying')
  h_step(key, 'retrying', try, '', due .. '\\t' .. detail)
  redis.call('ZADD', H .. 'retrying', due, id)
  h_publish('retrying', queue, id)
end
local function h_released(id, queue)
  local key = H .. 'job:' .. id
  redis.call('HSET', key, 'state', 'enqueued')
  h_step(key, 'released', '', '', '')
  h_publish('enqueued', queue, id)
end
local function h_requeued(id, queue)
  h_unindex(id)
  local key = H .. 'job:' .. id
  redis.call('HSET', key, 'state', 'enqueued', 'queue', queue)
  h_step(key, 'requeued', '', '', '')
  h_publish('enqueued', queue, id)
end
-- body_key: the job's key, whose envelope (the request payload) is kept when it is small enough.
local function h_finished(id, queue, state, kind, try, worker, detail, body_key)
  local key = H .. 'job:' .. id
  redis.call('ZREM', H .. 'retrying', id)
  local facts = redis.call('HMGET', key, 'state', 'type')
  if facts[1] == 'succeeded' or facts[1] == 'failed' or facts[1] == 'aborted' then h_unindex(id) end
  if kind == '' then kind = facts[2] or '' end
  redis.call('HSET', key, 'state', state, 'finished', now, 'queue', queue, 'type', kind)
  if worker ~= '' then redis.call('HSET', key, 'worker', worker, 'tries', try) end
  local size = redis.pcall('STRLEN', body_key)
  if type(size) == 'number' and size > 0 and size <= {MAX_PAYLOAD_BYTES} then
    redis.call('HSET', key, 'body', redis.call('GET', body_key))
  end
  h_step(key, state, try, worker, detail)
  redis.call('PEXPIRE', H .. 'logs:' .. id, {ORPHAN_MS})
  for _, index in ipairs(h_index_keys(state, queue, kind)) do redis.call('ZADD', index, now, id) end
  if kind ~= '' then redis.call('SADD', H .. 'types', kind) end
  h_trim(state)
  if state == 'succeeded' then h_count('s') elseif state == 'failed' then h_count('f') end
  h_publish(state, queue, id)
end
"""

# With history off the scripts call these instead: nothing is recorded, nothing published.
_OFF = """
local function h_unindex(id) end
local function h_forget(id) end
local function h_enqueued(id, queue, kind, parent, delay) end
local function h_started(id, queue, try, worker) end
local function h_retrying(id, queue, try, due, detail) end
local function h_released(id, queue) end
local function h_requeued(id, queue) end
local function h_requeued(id, queue)
  h_unindex(id)
  local key = H .. 'job:' .. id
  redis.call('HSET', key, 'state', 'enqueued', 'queue', queue)
  h_step(key, 'requeued', '', '', '')
  h_publish('enqueued', queue, id)
end
local function h_finished(id, queue, state, kind, try, worker, detail, body_key) end
"""


def recording_lua(history: JobHistory | None, events_channel: str) -> str:
    """Return the Lua recording functions for *history* (no-ops when it is ``None``)."""
    if history is None:
        return _OFF
    constants = {
        "HISTORY": HISTORY_PREFIX,
        "EVENTS": events_channel,
        "STEPS_BYTES": str(STEPS_BYTES),
        "TRIM_BATCH": str(TRIM_BATCH),
        "KEEP_JOBS_MS": str(history.keep_jobs_ms),
        # A job's hash outlives its listing, so the trim that unlists it can still read where it was listed.
        "ORPHAN_MS": str(2 * history.keep_jobs_ms),
        "KEEP_COUNTERS_MS": str(history.keep_counters_ms),
        "MAX_JOBS": str(history.max_jobs),
        "MAX_PAYLOAD_BYTES": str(history.max_payload_bytes),
    }
    source = _RECORDING
    for name, value in constants.items():
        source = source.replace("{" + name + "}", value)
    return source
