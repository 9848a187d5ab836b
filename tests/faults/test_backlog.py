"""A deep backlog: introspection and the scripts cost as much with 500,000 jobs queued as with none."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from arq_mediator import Mediator
from tests.jobs.process_app import Chore
from tests.jobs.worker_processes import Workers, results, wait_for_workers
from tests.keys import JOB_PREFIX, QUEUE_PREFIX

BACKLOG = 500_000
CHUNK = 50_000
# Builds the backlog inside Redis: half a million envelopes from the test would take minutes to send.
_FILL = """
local body = ARGV[1]
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local id = 'backlog-' .. i
  redis.call('SET', KEYS[1] .. id, (string.gsub(body, 'BACKLOG_ID', id)))
  redis.call('ZADD', KEYS[2], i, id)
end
return 1
"""
# Far above what the scripts take (tens of microseconds), far below what a scan of the backlog took.
SLOW_US = 5_000


async def test_stats_and_scripts_stay_fast_on_a_deep_backlog(app: Mediator, workers: Workers) -> None:
    """stats() answers in milliseconds on 500k queued jobs, and no engine script reaches Redis's slow log."""
    redis = app._jobs.redis
    template = await _envelope_template(app, redis)
    for first in range(1, BACKLOG, CHUNK):  # in chunks, each well within the client's command timeout
        last = first + CHUNK - 1
        await redis.eval(_FILL, 2, JOB_PREFIX, QUEUE_PREFIX + "deep", template, str(first), str(last))  # type: ignore[misc]
    await redis.config_set("slowlog-log-slower-than", SLOW_US)
    await redis.slowlog_reset()

    timings = []
    for _ in range(5):
        began = time.perf_counter()
        stats = await app.stats()
        timings.append(time.perf_counter() - began)
    deep = next(queue for queue in stats.queues if queue.name == "deep")
    assert (deep.ready, deep.running) == (BACKLOG, 0)
    print(f"\nstats() on a {BACKLOG:,}-job backlog: best {min(timings) * 1000:.2f} ms")
    assert min(timings) < 0.05

    # A worker claiming from the deep queue and heart-beating over it: claims, renewals, completions.
    workers.start("deep", ["default", "deep"], max_jobs=4, lease=2.0, heartbeat=0.2)
    await wait_for_workers(app, "deep", diagnose=workers.logs)
    canary = await app.enqueue(Chore(tag="canary"))
    assert await results([canary], timeout=20.0, diagnose=workers.logs) == ["canary@deep"]
    slow = [entry for entry in await redis.slowlog_get(128) if b"EVAL" in entry["command"].upper()]
    assert slow == [], slow


async def _envelope_template(app: Mediator, redis: Redis) -> str:
    """Return a real envelope of a `Chore` on the deep queue, its id replaced by a placeholder."""
    handle = await app.enqueue(Chore(tag="template"), queue="deep")
    body: bytes | None = await redis.get(JOB_PREFIX + handle.id)
    assert body is not None
    await handle.abort()
    return body.decode().replace(handle.id, "BACKLOG_ID")
