"""One master of three out of service while the others serve: frozen (SIGSTOP, then SIGCONT), or a slot
left without a master (CLUSTER DELSLOTS, then ADDSLOTS). The cluster has no replicas and does not require
full coverage (`partial_cluster`), so nothing fails over: the slots of the node that is out wait for it,
the others' go on being served.

- A worker's batch of outcomes spanning two masters keeps the part that landed and sends only the other
  again, once its node answers (none refused by the fence as late, nothing run twice).
- With the node of the queue registry frozen, an enqueue to a queue on another node goes through and the
  worker's heartbeats in that queue's slot go on; the registry gets the queue once the node is back.
- An outcome whose slot has no master (SlotNotCoveredError on the client) is written again until it lands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ClassVar

import pytest

from arq_mediator import Context, JobHandle, Mediator
from arq_mediator._keys import QUEUES_KEY, WORKER_PREFIX
from tests.jobs.conftest import running_worker
from tests.jobs.worker_processes import wait_until

from .app import High, Low, Mid, Step
from .deployment import ClusterDeployment, ClusterNode, command

# Seconds the job client waits on a node before calling it unavailable: short, so a frozen node costs
# the tests little time.
COMMAND_TIMEOUT = 1.0


# "Warm" jobs run at once; the others wait until the test opens the gate.
WARM = "warm"


class Fresh(Step):
    """A step on ``fresh`` (slot 15227: the third master, low's), a queue no one enqueued to before."""

    message_name: ClassVar[str] = "cluster_outage.Fresh"


class Gated:
    """A mediator whose handlers record what they start and finish only once `gate` is set."""

    def __init__(self, url: str) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.mediator = Mediator(redis=url, command_timeout=COMMAND_TIMEOUT)
        self.mediator.handler(queue="high")(self._high)
        self.mediator.handler(queue="mid")(self._mid)
        self.mediator.handler(queue="low")(self._low)
        self.mediator.handler(queue="fresh")(self._fresh)

    async def _held(self, request: Step, ctx: Context) -> str:
        assert ctx.job is not None
        self.started.append(f"{ctx.job.queue}:{request.tag}")
        if request.tag != WARM:
            await self.gate.wait()
        return f"{request.tag}@{ctx.job.worker}"

    async def _high(self, request: High, ctx: Context) -> str:
        return await self._held(request, ctx)

    async def _mid(self, request: Mid, ctx: Context) -> str:
        return await self._held(request, ctx)

    async def _low(self, request: Low, ctx: Context) -> str:
        return await self._held(request, ctx)

    async def _fresh(self, request: Fresh, ctx: Context) -> str:
        return await self._held(request, ctx)

    async def started_all(self, *entries: str) -> bool:
        """Return whether every one of *entries* (``<queue>:<tag>``) started."""
        return set(entries) <= set(self.started)


@asynccontextmanager
async def frozen(node: ClusterNode) -> AsyncIterator[None]:
    """Keep *node* frozen for the block; thaw it however the block ends."""
    node.freeze()
    try:
        yield
    finally:
        node.thaw()


def batches_of(app: Mediator) -> list[set[str]]:
    """Record the queues of each batch of outcomes the job client of *app* writes (the client's own
    per-queue calls of a cluster included); return the list it fills."""
    jobs = app._jobs
    batches: list[set[str]] = []
    write: Callable[[list[list[Any]]], Awaitable[list[bool]]] = jobs.complete_many

    async def recording(batch: list[list[Any]]) -> list[bool]:
        batches.append({str(job[3]) for job in batch})
        return await write(batch)

    jobs.complete_many = recording  # type: ignore[method-assign]
    return batches


async def try_number(handle: JobHandle[str]) -> int:
    """Return the try *handle*'s job finished on."""
    record = await handle.record()
    assert record is not None
    return record.try_number


async def test_a_batch_spanning_two_masters_keeps_the_part_that_landed_while_the_other_is_frozen(
    partial_cluster: ClusterDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    """A high and a low job finish in one turn while low's master is frozen: high's outcome is recorded
    at once and readable meanwhile; low's lands once its master runs again; neither is dropped as late
    nor run twice."""
    caplog.set_level(logging.WARNING, logger="arq_mediator")
    app = Gated(partial_cluster.url())
    low_master = await partial_cluster.master_of("{low}")
    assert (await partial_cluster.master_of("{high}")).port != low_master.port
    # A reader of its own: the worker's mediator subscribes on low's master too.
    reader = Mediator(redis=partial_cluster.url(), command_timeout=COMMAND_TIMEOUT)
    async with (
        app.mediator,
        reader,
        running_worker(app.mediator, queues=["high", "low"], name="split", heartbeat=0.2, lease=10.0),
    ):
        # Jobs of both queues ran before: each master has the scripts (loading one goes to every master).
        warm = await app.mediator.enqueue_many([High(tag=WARM), Low(tag=WARM)])
        assert [await handle.result(timeout=10) for handle in warm] == ["warm@split", "warm@split"]
        batches = batches_of(app.mediator)
        high = await app.mediator.enqueue(High(tag="h"))
        low = await app.mediator.enqueue(Low(tag="l"))
        await wait_until(lambda: app.started_all("high:h", "low:l"), "both jobs to start")
        with pytest.raises(TimeoutError):  # the reader has its slot map and its link to high's master
            await reader.job(high.id).result(timeout=0.1)
        async with frozen(low_master):
            app.gate.set()  # both handlers return in the same turn: their outcomes go as one batch
            assert await reader.job(high.id).result(timeout=10) == "h@split"
            # The writer keeps trying low's part, and low's alone.
            await wait_until(
                lambda: _async(sum(queues == {"low"} for queues in batches) >= 2),
                "low's part to be sent again",
            )
        assert await low.result(timeout=20) == "l@split"
        assert [await try_number(high), await try_number(low)] == [1, 1]
    assert {"high", "low"} in batches, f"the outcomes did not go as one batch: {batches}"
    # High's part was sent once: sent again, the fence would have refused it as late.
    assert batches.count({"high"}) == 1, batches
    assert not [message for message in caplog.messages if "dropped" in message and high.id in message]
    assert sorted(app.started) == ["high:h", "high:warm", "low:l", "low:warm"]


async def _async(value: bool) -> bool:
    return value


async def _last_seen(node: ClusterNode, key: str, after: int = 0) -> int:
    """Return when the heartbeat record *key* on *node* was written, if later than *after* (else 0)."""
    client = node.client()
    try:
        record = await client.get(key)
    finally:
        await client.aclose()
    seen = int(json.loads(record)["last_seen"]) if record else 0
    return seen if seen > after else 0


async def _members(node: ClusterNode, key: str) -> set[bytes]:
    client = node.client()
    try:
        members: set[bytes] = await client.smembers(key)  # type: ignore[misc]
    finally:
        await client.aclose()
    return members


async def test_enqueues_and_heartbeats_go_on_while_the_queue_registry_node_is_frozen(
    partial_cluster: ClusterDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    """With the master of the queue registry (of ``mid`` and of slot 0 too) frozen, the first enqueue to
    ``fresh``, on another master, waits one command timeout at most and the next do not wait; a worker
    started on ``mid`` and ``fresh`` meanwhile beats in fresh's slot at its pace and runs fresh's jobs.
    Once the master runs again the registry lists ``fresh``."""
    caplog.set_level(logging.WARNING, logger="arq_mediator")
    app = Gated(partial_cluster.url())
    app.gate.set()
    registry = await partial_cluster.master_of(QUEUES_KEY)
    fresh_master = await partial_cluster.master_of("{fresh}")
    assert fresh_master.port != registry.port
    async with app.mediator:
        jobs = app.mediator._jobs
        # A low job ran: fresh's master (low's too) has the scripts, which loading would send to every master.
        async with running_worker(app.mediator, queues=["low"], name="warming"):
            warm = await app.mediator.enqueue(Low(tag=WARM))
            assert await warm.result(timeout=10) == "warm@warming"
        async with frozen(registry):
            took = []
            handles = []
            for tag in ("f1", "f2"):
                began = time.monotonic()
                handles.append(await app.mediator.enqueue(Fresh(tag=tag)))
                took.append(time.monotonic() - began)
            assert took[0] < COMMAND_TIMEOUT * 1.5, took
            assert took[1] < COMMAND_TIMEOUT / 2, took
            beating = running_worker(app.mediator, queues=["mid", "fresh"], name="beating", heartbeat=0.2)
            async with beating as worker:
                key = f"{WORKER_PREFIX}{{fresh}}:{worker.instance}"
                seen = await wait_until(partial(_last_seen, fresh_master, key), "a heartbeat in fresh's slot")
                for _ in range(3):  # at the worker's pace, not one command timeout (or four) apart
                    seen = await wait_until(
                        partial(_last_seen, fresh_master, key, after=seen),
                        "a later heartbeat in fresh's slot",
                        timeout=COMMAND_TIMEOUT,
                    )
                assert [await handle.result(timeout=10) for handle in handles] == ["f1@beating", "f2@beating"]
                assert "fresh" not in jobs._queues_registered
                assert any("could not register queues" in message for message in caplog.messages), caplog.text
                registry.thaw()  # (the worker stops sooner with every node answering)

                async def registered() -> (
                    bool
                ):  # by the worker's beats, now that the registry's master answers
                    return "fresh" in jobs._queues_registered and b"fresh" in await _members(
                        registry, QUEUES_KEY
                    )

                await wait_until(registered, "the registry to list fresh", timeout=10.0)


async def _on_every_master(deployment: ClusterDeployment, *arguments: str) -> None:
    for node in deployment.nodes:
        client = node.client()
        try:
            await command(client, *arguments)
        finally:
            await client.aclose()


async def test_an_outcome_whose_slot_has_no_master_is_written_again_until_it_lands(
    partial_cluster: ClusterDeployment, caplog: pytest.LogCaptureFixture
) -> None:
    """Low's slot is taken from every node while a low job runs: its outcome write meets no master for
    the slot (the client's RedisClusterException "All slots are not covered", or SlotNotCoveredError: it
    reads the map again after the node's CLUSTERDOWN), is tried again, and lands as the first try's once
    the slot is served again; the job runs once (given up on, its lease would lapse and it would run
    again)."""
    caplog.set_level(logging.WARNING, logger="arq_mediator.worker")
    app = Gated(partial_cluster.url())
    owner = await partial_cluster.master_of("{low}")
    slot = "15214"  # CLUSTER KEYSLOT {low}
    async with (
        app.mediator,
        running_worker(app.mediator, queues=["low"], name="uncovered", heartbeat=0.2, lease=3.0),
    ):
        low = await app.mediator.enqueue(Low(tag="l"))
        await wait_until(lambda: app.started_all("low:l"), "the job to start")
        await _on_every_master(partial_cluster, "CLUSTER", "DELSLOTS", slot)
        try:
            app.gate.set()

            async def tried() -> bool:  # retried (the fix), or given up on (before it)
                return any(
                    "recording job outcomes failed" in text or "could not record the outcome" in text
                    for text in caplog.messages
                )

            await wait_until(tried, "the outcome write to meet the uncovered slot", timeout=10.0)
        finally:
            owner_client = owner.client()
            try:
                await command(owner_client, "CLUSTER", "ADDSLOTS", slot)
            finally:
                await owner_client.aclose()
            await partial_cluster.wait_ok()  # every node knows the slot's master again
        assert await low.result(timeout=20) == "l@uncovered"
        assert await try_number(low) == 1
    assert app.started == ["low:l"]
