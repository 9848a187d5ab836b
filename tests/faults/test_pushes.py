"""Pushes to idle workers under faults, with real worker processes: a dropped pub/sub connection, a SIGKILL.

A push is a claim made for the worker by the enqueue script: a lost push message is handed back by the
worker's next claim, and a job pushed to a worker that died comes back when its lease lapses, as any job
of a dead worker does. A dead worker is pushed at most its free slots (its budget), and only while its
registration lasts (three idle checks); after that, new jobs wake the live workers. A registration
damaged so that a push could fail part way costs that push, never the job: it is queued and woken.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable
from typing import cast

from redis.asyncio import Redis

from arq_mediator import Mediator
from tests.jobs.process_app import Chore
from tests.jobs.worker_processes import Workers, wait_until
from tests.keys import push_inbox_key, push_ready_key, queue_key, running_key

LEASE = 1.5
IDLE_CHECK = 1.0  # the command line's default


async def registered_instance(redis: Redis, workers: Workers) -> str:
    """Wait until one worker is registered for pushes of ``default``; return its instance."""

    async def one() -> list[bytes]:
        return list(await redis.zrange(push_ready_key("default"), 0, -1))

    [instance] = await wait_until(one, "a worker registered for pushes", diagnose=workers.logs)
    return instance.decode()


async def test_a_push_lost_with_the_pubsub_connection_runs_through_the_next_claim(
    app: Mediator, workers: Workers
) -> None:
    redis = app._jobs.redis
    workers.start("deaf", ["default"], max_jobs=2, lease=30.0, heartbeat=1.0)
    instance = await registered_instance(redis, workers)
    channel = app._jobs.channels.push(instance)
    await redis.client_kill_filter(_type="pubsub")
    listeners = await redis.pubsub_numsub(channel)
    handle = await app.enqueue(Chore(tag="lost"))
    assert [listeners, await redis.pubsub_numsub(channel)] == [[(channel.encode(), 0)]] * 2  # nobody heard it
    assert await cast("Awaitable[bool]", redis.hexists(push_inbox_key(instance), handle.id))
    # Its lease is 30 s: what runs it now is the claim after the listener subscribes again.
    assert await handle.result(timeout=10) == "lost@deaf"


async def test_a_worker_killed_while_idle_loses_its_pushed_jobs_only_until_their_leases_lapse(
    app: Mediator, workers: Workers
) -> None:
    redis = app._jobs.redis
    doomed = workers.start("doomed", ["default"], max_jobs=2, lease=LEASE, heartbeat=0.3)
    await registered_instance(redis, workers)
    os.kill(doomed.pid, signal.SIGKILL)
    assert await doomed.exited(timeout=5.0) == -signal.SIGKILL
    killed_at = time.monotonic()

    pushed = [await app.enqueue(Chore(tag=f"pushed-{n}")) for n in range(2)]
    for handle in pushed:  # claimed for the dead worker: off the queue, leased
        assert await redis.zscore(running_key("default"), handle.id) is not None
    woken = await app.enqueue(Chore(tag="woken"))  # its budget (max_jobs 2) is spent: queued, woken
    assert await redis.zscore(queue_key("default"), woken.id) is not None

    workers.start("rescuer", ["default"], max_jobs=4, lease=LEASE, heartbeat=0.3)
    assert await woken.result(timeout=10) == "woken@rescuer"
    assert [await handle.result(timeout=10) for handle in pushed] == ["pushed-0@rescuer", "pushed-1@rescuer"]
    # The documented bound: a pushed job of a dead worker runs within its lease and one idle check of
    # the live worker (the claim that sweeps it back), plus the rescuer's start-up here.
    assert time.monotonic() - killed_at < LEASE + IDLE_CHECK + 5.0


async def test_a_damaged_registration_of_a_live_worker_costs_a_push_never_a_job(
    app: Mediator, workers: Workers
) -> None:
    """A budget Redis cannot count with and an inbox of another type: the job is queued, woken and run."""
    redis = app._jobs.redis
    workers.start("damaged", ["default"], max_jobs=2, lease=LEASE, heartbeat=0.3)
    instance = await registered_instance(redis, workers)
    await cast("Awaitable[int]", redis.hset(f"arqm:push:{instance}", "budget", "1e3"))
    await redis.set(push_inbox_key(instance), "junk")
    handle = await app.enqueue(Chore(tag="kept"))  # would fail part way, the job leased on no queue
    assert await handle.result(timeout=10) == "kept@damaged"  # the wake-up's claim ran it
    # The worker's next idle claim drops the bad inbox and registers it again: pushes go on.
    assert await registered_instance(redis, workers) == instance
    assert await redis.type(push_inbox_key(instance)) == b"none"
