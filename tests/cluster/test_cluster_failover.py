"""A cluster node's replica promoted mid-run: by ``CLUSTER FAILOVER`` (the old master lives on as its
replica), and after the master is SIGKILLed under a worker process. Clients read the slot map again and
carry on; a result awaited across the failover arrives; the worker process never dies.
"""

from __future__ import annotations

import os
import time

from arq_mediator import JobHandle, Mediator, QueueUnavailableError
from tests.jobs.conftest import running_worker
from tests.jobs.worker_processes import wait_until
from tests.processes import ManagedProcesses

from .app import QUEUES, URL_ENV, High, Low, Mid, build
from .deployment import ClusterDeployment, command


async def _enqueued(app: Mediator, request: High | Low) -> JobHandle[str] | None:
    """Enqueue *request*; ``None`` while its slot has no reachable master."""
    try:
        return await app.enqueue(request)
    except QueueUnavailableError:
        return None


async def test_a_replica_promoted_by_cluster_failover_takes_over_mid_run(
    fresh_cluster: ClusterDeployment,
) -> None:
    """A job running across the failover finishes and its waiter hears it; new jobs flow on the new master."""
    async with (
        build(fresh_cluster.url()) as app,
        running_worker(app, queues=list(QUEUES), name="survivor", heartbeat=0.2, lease=2.0),
    ):
        before = await app.enqueue(High(tag="before"))
        assert await before.result(timeout=10) == "before@survivor"
        across = await app.enqueue(High(tag="across", duration=1.0))
        old = await fresh_cluster.master_of("{high}")
        replica = await fresh_cluster.replica_of(old)
        client = replica.client()
        try:
            await command(client, "CLUSTER", "FAILOVER")
        finally:
            await client.aclose()

        async def promoted() -> bool:
            return (await fresh_cluster.master_of("{high}")).port == replica.port

        await wait_until(promoted, "the replica to serve high's slots", timeout=20.0)
        assert await across.result(timeout=20) == "across@survivor"
        wake = app._jobs.channels.wake("high")

        async def listening_on_new_master() -> bool:
            client = replica.client()
            try:
                reply = await command(client, "PUBSUB", "SHARDNUMSUB", wake)
            finally:
                await client.aclose()
            return int(reply[1]) >= 1

        await wait_until(listening_on_new_master, "the worker's wake-up subscription on the new master")
        after = await wait_until(lambda: _enqueued(app, High(tag="after")), "an enqueue on the new master")
        assert after is not None
        assert await after.result(timeout=20) == "after@survivor"
        stats = await app.stats()
        assert [worker.name for worker in stats.workers] == ["survivor"]


async def test_a_worker_process_carries_on_when_a_master_is_killed(
    fresh_cluster: ClusterDeployment, processes: ManagedProcesses
) -> None:
    """SIGKILL the master of ``low``: a ``high`` job runs meanwhile, its replica takes over within
    seconds, jobs of every queue flow again through the same worker process (given the cluster by
    ``--redis``), which never exits."""
    url = fresh_cluster.url()
    # The URL comes from the command line: the app's mediator is built without one.
    environment = {name: value for name, value in os.environ.items() if name != URL_ENV}
    environment["PYTHONUNBUFFERED"] = "1"
    arguments = ["-m", "arq_mediator", "worker", "tests.cluster.app:mediator", "--queues", ",".join(QUEUES)]
    arguments += ["--redis", url, "--name", "steady", "--heartbeat", "0.3", "--lease", "2"]
    worker = processes.start("worker", arguments, environment)
    async with build(url) as app:
        first = await app.enqueue_many([High(tag="h0"), Mid(tag="m0"), Low(tag="l0")])
        results = [await handle.result(timeout=20) for handle in first]
        assert results == ["h0@steady", "m0@steady", "l0@steady"], processes.logs()
        victim = await fresh_cluster.master_of("{low}")
        victim.kill()
        killed_at = time.monotonic()
        # Claimed while low's node is down: the claim passes low over and starts it, on its first try.
        during = await app.enqueue(High(tag="during"))
        assert await during.result(timeout=20) == "during@steady"
        record = await during.record()
        assert record is not None
        assert record.try_number == 1

        async def flowing() -> str:
            handle = await _enqueued(app, Low(tag="after"))
            if handle is None:
                return ""
            try:
                return await handle.result(timeout=5)
            except (TimeoutError, QueueUnavailableError):  # the slot map is still settling
                return ""

        ran = await wait_until(
            flowing, "a low job to run after the kill", timeout=40.0, diagnose=processes.logs
        )
        assert ran == "after@steady"
        print(f"jobs on the killed master's slots flowed again after {time.monotonic() - killed_at:.1f}s")
        others = await app.enqueue_many([High(tag="h1"), Mid(tag="m1")])
        assert [await handle.result(timeout=20) for handle in others] == ["h1@steady", "m1@steady"]
        assert worker.process.poll() is None, processes.logs()
