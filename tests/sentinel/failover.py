"""A master killed under load: a steady producer, worker processes, SIGKILL, and what it cost.

Just before the kill, the replica falls behind: it is paused (SIGSTOP) and the master drops its
replication link, so what the master acknowledges in the last moments never reaches it, as with any
replica lagging behind a master that dies. A few enqueues later the master is killed and the replica
resumed. Once the sentinels have promoted the replica, the killed server is started again, as a supervisor
(systemd, compose's restart policy) would: the sentinels make it the new master's replica. Until then the
new master has no replica, so a durable enqueue cannot be confirmed and is refused.

Shared by the failover test (which asserts what must hold) and `tests/benchmarks/bench_sentinel.py`
(which reports the figures). The producer enqueues one short job at a steady pace and keeps every handle
Redis acknowledged; when the master dies it goes on trying, as a web app's requests would. After the
failover, an acknowledged job whose id the new master knows neither as a job nor as a result was lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis

from arq_mediator import (
    JobFailedError,
    JobHandle,
    JobStatus,
    Mediator,
    NotReplicatedError,
    QueueUnavailableError,
)
from tests.jobs.process_app import Chore
from tests.jobs.worker_processes import wait_until

from .deployment import SentinelDeployment

# Seconds between two enqueues of the steady producer, and the work each job does.
PACE = 0.02
JOB_SECONDS = 0.02


@dataclass
class SteadyProducer:
    """Enqueue a job every `PACE` seconds until stopped; keep the acknowledged ones and count refusals."""

    mediator: Mediator
    acknowledged: list[tuple[float, JobHandle[str]]] = field(default_factory=list)
    attempts: int = 0
    refused: int = 0
    not_replicated: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Produce until `stop`; an unavailable Redis is counted and tried again at the same pace."""
        number = 0
        while not self._stopping.is_set():
            number += 1
            self.attempts += 1
            try:
                handle = await self.mediator.enqueue(Chore(duration=JOB_SECONDS, tag=f"job{number}"))
            except QueueUnavailableError as error:  # NotReplicatedError is one: not acknowledged either
                self.refused += 1
                self.not_replicated += isinstance(error, NotReplicatedError)
            else:
                self.acknowledged.append((time.monotonic(), handle))
            await asyncio.sleep(PACE)

    def stop(self) -> None:
        """Stop producing after the enqueue under way."""
        self._stopping.set()

    def since(self, moment: float) -> list[JobHandle[str]]:
        """Return the handles acknowledged after *moment* (monotonic seconds)."""
        return [handle for acknowledged_at, handle in self.acknowledged if acknowledged_at > moment]


@dataclass(frozen=True)
class FailoverFigures:
    """What one killed master cost.

    Attributes:
        flowing_again: Seconds from the SIGKILL until a job enqueued after it had finished.
        acknowledged: Enqueues Redis acknowledged, in all.
        refused: Enqueues refused meanwhile (the master unreachable, or a replica that did not confirm).
        not_replicated: Of those, the durable ones whose replica did not confirm in time.
        lost: Acknowledged jobs the new master knows nothing of.
        failed: Jobs that ran but failed: running when the master died, their handler's own Redis
            writes failed (the test app's handlers record each run in Redis; they have one try).
    """

    flowing_again: float
    acknowledged: int
    refused: int
    not_replicated: int
    lost: list[str]
    failed: int = 0


async def kill_master_under_load(
    mediator: Mediator, deployment: SentinelDeployment, *, warm_up: int = 50, flow_timeout: float = 30.0
) -> FailoverFigures:
    """Produce steadily, SIGKILL the master once *warm_up* jobs were acknowledged, measure the recovery.

    Workers must be running already. Returns once every acknowledged job that survived has finished.
    """
    producer = SteadyProducer(mediator)
    producing = asyncio.create_task(producer.run(), name="steady producer")
    try:

        async def warmed_up() -> bool:
            return len(producer.acknowledged) >= warm_up

        await wait_until(warmed_up, f"{warm_up} acknowledged enqueues", timeout=30.0)
        assert deployment.master.process is not None
        old_port = deployment.master.port
        async with replica_left_behind(deployment):
            cut_at = (producer.attempts, producer.refused)

            async def enqueued_meanwhile() -> bool:  # three more enqueues, or a durable one refused
                attempts, refused = cut_at
                return producer.attempts - attempts > 3 or producer.refused > refused

            await wait_until(enqueued_meanwhile, "enqueues while the replica lags", timeout=10.0)
            os.kill(deployment.master.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            deployment.master.process.wait(timeout=5.0)

        async def promoted() -> bool:
            return await deployment.master_port() not in (None, old_port)

        await wait_until(promoted, "the sentinels to promote the replica", timeout=flow_timeout)
        deployment.master.start()  # the supervisor's restart; the sentinels make it a replica

        async def finished_since_kill() -> bool:
            for handle in producer.since(killed_at)[:20]:
                if await _status(handle) is JobStatus.SUCCEEDED:
                    return True
            return False

        await wait_until(finished_since_kill, "a job enqueued after the kill to finish", timeout=flow_timeout)
        flowing_again = time.monotonic() - killed_at

        async def more_after_recovery() -> bool:
            return len(producer.since(killed_at + flowing_again)) >= 25

        await wait_until(more_after_recovery, "the producer to go on after the failover", timeout=30.0)
    finally:
        producer.stop()
        await producing
    lost = []
    handles = [handle for _, handle in producer.acknowledged]
    for handle in handles:
        if await handle.status() is JobStatus.NOT_FOUND:
            lost.append(handle.id)
    failed = 0
    async with asyncio.timeout(60.0):
        for handle in handles:
            if handle.id not in lost:
                try:
                    await handle.result()
                except JobFailedError:
                    failed += 1
    return FailoverFigures(
        flowing_again, len(handles), producer.refused, producer.not_replicated, lost, failed
    )


@asynccontextmanager
async def replica_left_behind(deployment: SentinelDeployment) -> AsyncIterator[None]:
    """Pause the replica and cut its link to the master for the block; resume it after."""
    replica = deployment.replica.process
    assert replica is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        master: Redis = Redis(port=deployment.master.port)
        try:
            await master.client_kill_filter(_type="slave")  # redis-py knows only the old name
        finally:
            await master.aclose()
        yield
    finally:
        os.kill(replica.pid, signal.SIGCONT)


async def _status(handle: JobHandle[str]) -> JobStatus | None:
    try:
        return await handle.status()
    except QueueUnavailableError:
        return None
