"""Job history: what the engine records of each job's life, for the dashboard, in bounded Redis memory.

Every record is written by the scripts that change a job's state (`_scripts`), inside the same atomic
call, so recording costs no round trip of its own. Per job a hash (``arqm:history:job:<id>``) of short
values (Redis keeps it compact) holds its facts; a list holds its steps and, once it finished, its
envelope (appended to, never read, by the scripts). Finished jobs are indexed by state, newest first, in
sorted sets (also per queue, per request type and per both); counters per second and minute feed the
throughput graphs. The scripts trim the indexes as they add to them (a bounded number of entries per
call, on the first finish of each second and one in 16): entries older than `JobHistory.keep_jobs`, or
past `JobHistory.max_jobs` per state, go with everything kept of their job. Every call to Redis inside a
script costs microseconds on the hot path, so each state change makes as few as it can: one write per
key it touches, never a read of what it appends to, and a worker's outcomes of one turn share one write
per index (for each queue and type among them), counter and event message. Numbers go to Redis as text
made once a call, as Lua formats each number it passes or concatenates with a slow printf.

Layout (all under ``arqm:history:``)::

    job:<id>                 hash: state, enqueued, due, parent, started, tries, worker, type,
                             queue, finished, progress; from the claim on (the enqueue for a
                             deferred job or a child): a queued job's envelope says the rest
    steps:<id>               list: a line a step from the claim on (the enqueue's is read from the
                             hash), then a finished job's envelope (when small and not in its
                             failure record) on a line that starts with a record separator (``\\x1e``)
    logs:<id>                list: the handler's last log lines, JSON each
    index:<state>            sorted set of finished ids (succeeded, failed, aborted) scored by finish ms
    index:<state>:queue:<q>  the same per queue; ``:type:<t>`` per request type; ``:both:<len q>:<q>:<t>``
    retrying                 sorted set of ids waiting for a retry, scored by when it is due
    types                    set of every request type name seen
    count:second:<minute>    hash of per-second counters (``s<second>``, ``f<second>``), kept two hours
    count:minute:<hour>      hash of per-minute counters, kept `JobHistory.keep_counters` (hours and
                             days are their sums)

A step line is ``<ms>\\t<state>\\t<try>\\t<worker>\\t<detail>``. State changes are also published on the
database's events channel (`Channels.events`): each script call's changes in one message, a line
``<state>\\t<queue>\\t<id>`` each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from ._layout import SINGLE, Layout
from ._policy import to_seconds

HISTORY_PREFIX = "arqm:history:"
RETRYING_KEY = HISTORY_PREFIX + "retrying"
TYPES_KEY = HISTORY_PREFIX + "types"
# Finished states: those a job is indexed by once it ended.
FINISHED_STATES = ("succeeded", "failed", "aborted")
# How many index entries one script call trims at most, so no call's work grows with the backlog.
TRIM_BATCH = 100
# How many step lines one job keeps; past that the oldest (but the first) go.
MAX_STEPS = 64


def history_key(job_id: str, layout: Layout = SINGLE) -> str:
    """Return the hash holding the history of *job_id*."""
    return layout.by_job(HISTORY_PREFIX, job_id, "job:" + job_id)


def steps_key(job_id: str, layout: Layout = SINGLE) -> str:
    """Return the string holding the step lines of *job_id*."""
    return layout.by_job(HISTORY_PREFIX, job_id, "steps:" + job_id)


def logs_key(job_id: str, layout: Layout = SINGLE) -> str:
    """Return the list holding the last log lines of *job_id*'s handler."""
    return layout.by_job(HISTORY_PREFIX, job_id, "logs:" + job_id)


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


def shared_keys(key: str, layout: Layout, queues: Iterable[str]) -> list[str]:
    """Return where a history key one server keeps once (an index, the retrying set, a counter) lives.

    On one server that is *key*; on a cluster each queue keeps its own (in its slot, written by the
    scripts of its jobs), and a reader sums or merges those of *queues*.
    """
    if not layout.cluster:
        return [key]
    name = key[len(HISTORY_PREFIX) :]
    return [layout.key(HISTORY_PREFIX, queue, name) for queue in queues]


def step_field(value: str) -> str:
    """Return *value* fit for a field of a step line: tabs and line breaks separate the fields and lines."""
    return " ".join(value.split())


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
            the bound on memory when jobs finish faster than `keep_jobs` expects. Finishing jobs trim
            now and then (the first of each second, one in 16), so it may be passed by a few meanwhile.
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
-- The clock as text, made once a call: Lua turns a number into text with a slow printf at every use (a
-- concatenation, or an argument of redis.call), and the history writes the time several times a job.
local h_now = string.format('%d', now)
-- Every history write goes through pcall: a key some other client gave another type may cost that job
-- its history, never its outcome. Returns the reply, or nil for an error reply.
local function w(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil end
  return reply
end
-- State changes of this call, published as one message (a line each) by h_publish_pending at its end.
local h_events = {}
local function h_publish(state, queue, id)
  h_events[#h_events + 1] = state .. '\\t' .. queue .. '\\t' .. id
end
local function h_publish_pending()
  if #h_events > 0 then w('PUBLISH', '{EVENTS}', table.concat(h_events, '\\n')) end
  h_events = {}
end
local function h_line(state, try, worker, detail, at)
  return (at or h_now) .. '\\t' .. state .. '\\t' .. try .. '\\t' .. worker .. '\\t' .. detail
end
-- Adds one step line, after the line of the try's start (on *started_by*, the worker) when *started*
-- (ms) is given, and before *after* (the kept envelope's line): a try's start is written with its
-- outcome, so a claim costs no write here. A list this creates (its job's history expired, or was never
-- written) gets the history's lifetime; past MAX_STEPS lines the oldest, but the first, go.
local function h_step(id, state, try, worker, detail, started, started_by, after)
  local key = H .. 'steps:' .. id
  local line = h_line(state, try, worker, detail)
  local size, written
  if started and started ~= '' then
    local start = h_line('started', try, started_by or worker, '', started)
    if after then size, written = w('RPUSH', key, start, line, after), 3
    else size, written = w('RPUSH', key, start, line), 2 end
  elseif after then size, written = w('RPUSH', key, line, after), 2
  else size, written = w('RPUSH', key, line), 1 end
  size = size or 0
  if size == written then w('PEXPIRE', key, {ORPHAN_MS}) end
  if size > {MAX_STEPS} then
    local first = w('LINDEX', key, 0)
    w('LTRIM', key, -{MAX_STEPS} / 2, -1)
    if first then w('LPUSH', key, first) end
  end
end
-- Sets fields of a job's hash; one this creates (all its fields new) gets the history's lifetime.
local function h_set(id, fields)
  local key = H .. 'job:' .. id
  if (w('HSET', key, unpack(fields)) or 0) * 2 == #fields then w('PEXPIRE', key, {ORPHAN_MS}) end
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
local finished_states = {succeeded = true, failed = true, aborted = true}
-- Takes a job out of the finished indexes it is in (it was requeued, deleted or enqueued anew).
local function h_unindex(id)
  local facts = w('HMGET', H .. 'job:' .. id, 'state', 'queue', 'type') or {}
  if facts[1] and facts[2] and finished_states[facts[1]] then
    for _, index in ipairs(h_index_keys(facts[1], facts[2], facts[3])) do w('ZREM', index, id) end
  end
  w('ZREM', H .. 'retrying', id)
end
local function h_forget(id)
  h_unindex(id)
  w('DEL', H .. 'job:' .. id, H .. 'steps:' .. id, H .. 'logs:' .. id)
end
-- Drops the oldest entries of a sorted set scored below *cutoff* or past *cap*, a bounded number a call;
-- returns them.
local function h_oldest(key, cutoff, cap)
  local excess = math.max(w('ZCOUNT', key, '-inf', cutoff) or 0, (w('ZCARD', key) or 0) - cap)
  if excess <= 0 then return {} end
  local ids = w('ZRANGE', key, 0, math.min(excess, {TRIM_BATCH}) - 1) or {}
  if #ids == 0 then return {} end
  w('ZREMRANGEBYRANK', key, 0, #ids - 1)
  return ids
end
-- Drops the oldest finished jobs of a state past the retention or the cap, with all kept of them.
local function h_trim(state)
  for _, id in ipairs(h_oldest(H .. 'index:' .. state, now - {KEEP_JOBS_MS}, {MAX_JOBS})) do h_forget(id) end
end
-- Adds *by* to a counter; a counter hash this creates gets *ttl*. Returns the new count.
local function h_bump(key, field, by, ttl)
  local count = w('HINCRBY', key, field, by) or 0
  if count == by then w('PEXPIRE', key, ttl) end
  return count
end
-- A job due now keeps no history until its claim (~200 B a queued job less: its envelope says what the
-- dashboard shows); a deferred one or a child a small hash. Type and queue come with its outcome.
local function h_enqueued(id, queue, kind, parent, delay)
  local key = H .. 'job:' .. id
  if w('EXISTS', key) == 1 then h_forget(id) end  -- an id used again: a new job's history
  local state = tonumber(delay) > 0 and 'scheduled' or 'enqueued'
  if state == 'scheduled' or parent ~= '' then
    local fields = {'state', state, 'enqueued', h_now}
    if state == 'scheduled' then fields[5], fields[6] = 'due', tostring(now + tonumber(delay)) end
    if parent ~= '' then fields[#fields + 1] = 'parent'; fields[#fields + 1] = parent end
    w('HSET', key, unpack(fields))
    w('PEXPIRE', key, tostring({ORPHAN_MS} + tonumber(delay)))
  end
  h_publish(state, queue, id)
end
-- *queued_at* is the job's score on its queue: for a first try with no hash yet, when it was enqueued.
local function h_started(id, queue, try, worker, queued_at)
  local key = H .. 'job:' .. id
  local fields = {'state', 'running', 'started', h_now, 'tries', string.format('%d', try), 'worker', worker}
  if (w('HSET', key, unpack(fields)) or 0) * 2 == #fields then
    if try == 1 then w('HSET', key, 'enqueued', queued_at) end
    w('PEXPIRE', key, {ORPHAN_MS})
  end
  h_publish('running', queue, id)
end
local function h_retrying(id, queue, try, due, detail, started, worker)
  h_set(id, {'state', 'retrying'})
  h_step(id, 'retrying', try, '', due .. '\\t' .. detail, started, worker)
  -- Entries whose retry came due are stale (the job was claimed since): a few go with each new one.
  h_oldest(H .. 'retrying', now, {MAX_JOBS})
  w('ZADD', H .. 'retrying', due, id)
  h_publish('retrying', queue, id)
end
local function h_released(id, queue)
  h_set(id, {'state', 'enqueued'})
  h_step(id, 'released', '', '', '')
  h_publish('enqueued', queue, id)
end
local function h_requeued(id, queue)
  h_unindex(id)
  h_set(id, {'state', 'enqueued', 'queue', queue})
  h_step(id, 'requeued', '', '', '')
  h_publish('enqueued', queue, id)
end
-- The jobs finished in this call, as (score, id) pairs by state, queue and type, written to their indexes
-- by h_finish_flush, one write per index for each state, queue and type; and counts per state.
local h_pending, h_counts = {}, {}
local function h_pend(state, queue, kind, id)
  local by_queue = h_pending[state]
  if not by_queue then by_queue = {}; h_pending[state] = by_queue end
  local by_kind = by_queue[queue]
  if not by_kind then by_kind = {}; by_queue[queue] = by_kind end
  local members = by_kind[kind]
  if not members then members = {}; by_kind[kind] = members end
  members[#members + 1] = h_now
  members[#members + 1] = id
end
-- *kind* is the request type ('' when unknown: the history's is used), *body* the envelope to keep
-- ('' for none). The job's hash and steps keep the lifetime they got when it was enqueued: the index
-- trim, not their expiry, is what ends a finished job's history.
local function h_finish_one(id, queue, state, kind, try, worker, detail, body, started)
  local key = H .. 'job:' .. id
  if kind == '' then
    kind = w('HGET', key, 'type')
    if type(kind) ~= 'string' then kind = '' end
  end
  -- The outcome writes the queue and type (the enqueue left them to the envelope), the claim wrote this
  -- try and worker. A hash this call creates (its history was trimmed, deleted or never written) gets those
  -- too, and the history's lifetime.
  local fields = {'state', state, 'finished', h_now, 'queue', queue}
  if kind ~= '' then fields[7], fields[8] = 'type', kind end
  if (w('HSET', key, unpack(fields)) or 0) * 2 == #fields then
    if worker ~= '' then w('HSET', key, 'worker', worker, 'tries', try) end
    w('PEXPIRE', key, {ORPHAN_MS})
  end
  -- The envelope goes after the last step, on a line of its own marked by a record separator, so it
  -- costs no call and no key of its own, and the hash stays compact.
  local kept = nil
  if body ~= '' and #body <= {MAX_PAYLOAD_BYTES} then
    kept = '\\30' .. body
  end
  h_step(id, state, try, worker, detail, started, worker, kept)
  h_pend(state, queue, kind, id)
  h_counts[state] = (h_counts[state] or 0) + 1
  h_publish(state, queue, id)
end
local h_letters = {succeeded = 's', failed = 'f'}
local function h_finish_flush()
  for state, by_queue in pairs(h_pending) do
    for queue, by_kind in pairs(by_queue) do
      for kind, members in pairs(by_kind) do
        for _, index in ipairs(h_index_keys(state, queue, kind)) do
          for first = 1, #members, 1000 do  -- unpack has a limit on how many values it returns
            w('ZADD', index, unpack(members, first, math.min(first + 999, #members)))
          end
        end
      end
    end
  end
  for state, count in pairs(h_counts) do
    local trim = true
    local letter = h_letters[state]
    if letter then
      -- Each trim drops up to TRIM_BATCH entries: trimming on the first finish of each second and on
      -- one in 16 keeps far ahead of the one entry each finish adds.
      local second, minute = math.floor(now / 1000), math.floor(now / 60000)
      local hour = math.floor(minute / 60)
      h_bump(H .. 'count:minute:' .. hour, letter .. (minute % 60), count, {KEEP_COUNTERS_MS})
      local total = h_bump(H .. 'count:second:' .. minute, letter .. (second % 60), count, 7200000)
      trim = total == count or math.floor(total / 16) ~= math.floor((total - count) / 16)
    end
    if trim then h_trim(state) end
  end
  h_pending, h_counts = {}, {}
end
local function h_finished(id, queue, state, kind, try, worker, detail, body, started)
  h_finish_one(id, queue, state, kind, try, worker, detail, body, started)
  h_finish_flush()
  h_publish_pending()
end
"""

# With history off the scripts call these instead: nothing is recorded, nothing published.
_OFF = """
local function h_unindex(id) end
local function h_forget(id) end
local function h_enqueued(id, queue, kind, parent, delay) end
local function h_started(id, queue, try, worker, queued_at) end
local function h_retrying(id, queue, try, due, detail, started, worker) end
local function h_released(id, queue) end
local function h_requeued(id, queue) end
local function h_finished(id, queue, state, kind, try, worker, detail, body, started) end
local function h_finish_one(id, queue, state, kind, try, worker, detail, body, started) end
local function h_finish_flush() end
local function h_publish_pending() end
"""


def recording_lua(history: JobHistory | None, events_channel: str, prefix: str = HISTORY_PREFIX) -> str:
    """Return the Lua recording functions for *history* (no-ops when it is ``None``), keys under *prefix*."""
    if history is None:
        return _OFF
    constants = {
        "HISTORY": prefix,
        "EVENTS": events_channel,
        "MAX_STEPS": str(MAX_STEPS),
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
