"""The dashboard store's own Lua scripts, run beside the engine's and rendered with its key names.

Each is given the history's helpers (``h_trim``, ``h_forget``) by `with_history`, so what the dashboard
deletes or trims goes the same way as what the engine does.
"""

# ARGV: none. Trims each finished-state index of entries past the retention or the cap (a bounded
# number per state), for when no job finished lately to trim it on its way.
TRIM = """
for _, state in ipairs({'succeeded', 'failed', 'aborted'}) do h_trim(state) end
return 1
"""

# ARGV: id, queue ("" when unknown). Deletes a job that is not running and everything kept of it.
# Returns 1 deleted, 0 running (abort it instead), -1 nothing kept under that id.
DELETE = """
local id, queue = ARGV[1], ARGV[2]
local holder = get('{LEASE}' .. id)
if holder and holder ~= '{RETRY_MARK}' then return 0 end
local found = redis.call('DEL', '{JOB}' .. id, '{RESULT}' .. id, '{DELIVERIES}' .. id, '{LEASE}' .. id,
  '{ABORT_FLAG}' .. id)
found = found + redis.call('EXISTS', '{HISTORY}job:' .. id)
if queue ~= '' then
  found = found + redis.call('ZREM', '{QUEUE}' .. queue, id) + redis.call('ZREM', '{FAILED}' .. queue, id)
  redis.pcall('ZREM', '{RUNNING}' .. queue, id)  -- a job whose lease lapsed, not swept back yet
end
h_forget(id)
if found == 0 then return -1 end
return 1
"""
