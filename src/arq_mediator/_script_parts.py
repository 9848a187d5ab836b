"""The parts every engine script starts with, and the pruning that keeps only the parts a script uses.

Redis runs a whole script at every call, its function definitions included: a definition costs a few
hundred nanoseconds whether the call uses it or not. The history's recording functions (`_history`) are
about twenty; `only_used` gives each script just those it calls, and what they call in turn.
"""

from __future__ import annotations

import re

# The server's clock in ms, read once per script call.
NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Where the history's recording functions (`_history`) go in a script: after the clock, before their use.
RECORD = "\n{RECORDING}\n"

# A lease token names one claim ('<worker instance>.<claim number>'). The caller holds the job when the lease
# holds its token, or when the lease lapsed and nobody claimed the job since (the delivery counter still
# says the caller's delivery). Any other holder, the retry mark included, means the caller lost it.
FENCE = """
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

# Claiming one job, as CLAIM does per job and ENQUEUE for a job it pushes to an idle worker (`_push_scripts`).
# `take` leases *id* under *token* unless another claim holds it (the retry mark holds it for nobody);
# `read` returns its body (nil: gone) and a problem ('' when none); `count_delivery` counts this delivery.
TAKE = """
local function take(id, token, lease)
  if redis.call('SET', '{LEASE}' .. id, token, 'NX', 'PX', lease) then return true end
  local holder = redis.pcall('GET', '{LEASE}' .. id)
  if holder == '{RETRY_MARK}' or type(holder) == 'table' then
    redis.call('SET', '{LEASE}' .. id, token, 'PX', lease)
    return true
  end
  return false
end
local function read(id, max_bytes)
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
"""

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--[^\n]*")
_DEFINED = re.compile(r"^local (?:function ([A-Za-z_]\w*)|([A-Za-z_][\w, ]*?)\s*=)")


def _definitions(prelude: str) -> list[tuple[set[str], str]]:
    """Split *prelude* into its top-level definitions (each with its comment) and the names each defines.

    A top-level line starts at column 0; a definition is a ``local`` line, with the comment lines before
    it and the indented lines (and closing ``end``) after it.
    """
    parts: list[tuple[set[str], list[str]]] = []
    in_comment = False
    for line in prelude.strip("\n").split("\n"):
        starts_part = line.startswith("--") and not in_comment
        starts_part = starts_part or (line.startswith("local ") and not in_comment)
        if starts_part or not parts:
            parts.append((set(), []))
        names, lines = parts[-1]
        lines.append(line)
        in_comment = line.startswith("--")
        match = _DEFINED.match(line)
        if match:
            found = match.group(1) or match.group(2)
            names.update(name.strip() for name in found.split(","))
    return [(names, "\n".join(lines)) for names, lines in parts]


def _names_in(lua: str) -> set[str]:
    """Return the identifiers *lua* mentions outside its comments."""
    return set(_IDENTIFIER.findall(_COMMENT.sub("", lua)))


def only_used(prelude: str, source: str) -> str:
    """Return the definitions of *prelude* that *source* uses, directly or through the ones it keeps."""
    parts = _definitions(prelude)
    wanted = _names_in(source)
    kept = [False] * len(parts)
    changed = True
    while changed:  # a kept definition may use earlier ones: keep going until nothing more is wanted
        changed = False
        for index, (names, text) in enumerate(parts):
            if not kept[index] and names & wanted:
                kept[index] = changed = True
                wanted |= _names_in(text)
    return "\n" + "\n".join(text for (_, text), keep in zip(parts, kept, strict=True) if keep) + "\n"
