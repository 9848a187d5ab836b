"""The worker's heartbeat: its record for the dashboard and its peers, and the leases of its running jobs.

Each beat is one script call (per queue's slot on a cluster) that renews the record and every lease the
worker still holds, and answers which jobs it lost to another claim and which were asked to abort.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ._jobs import now_ms
from ._layout import run_script
from ._resilience import LoopHealth
from ._telemetry import queue_depths

if TYPE_CHECKING:
    from ._queue_introspection import WorkerState
    from ._worker import Worker

logger = logging.getLogger("arq_mediator.worker")


class Heartbeat:
    """Renew one worker's heartbeat and leases, and cancel the jobs it lost or was asked to abort."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        # On a cluster, each queue's beat on its way (one at a time per queue).
        self._beats: dict[str, asyncio.Task[None]] = {}

    def _record(self) -> str:
        worker = self._worker
        counts = worker.counters
        return json.dumps(
            {
                "name": worker.name,
                "instance": worker.instance,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(worker.settings.queues),
                "max_jobs": worker.settings.max_jobs,
                "running": len(worker._running),
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "retried": counts.retried,
                "lost": counts.lost,
                "started_at": counts.started_at,
                "last_seen": now_ms(),
                "types": worker.mediator._registry.registered_names(),
            }
        )

    async def run(self) -> None:
        """Beat every `WorkerSettings.heartbeat` seconds until cancelled; a failed beat is retried then."""
        worker = self._worker
        health = LoopHealth(logger, f"worker {worker.name} heartbeat")
        try:
            loop = asyncio.get_running_loop()
            while True:
                began = loop.time()
                try:
                    await self._beat()
                    health.succeeded()
                except Exception as error:  # any error reply (OOM, READONLY, ...) or unreadable answer
                    health.failed(error)
                # The period counts from the beat's start: a beat held up (on a cluster, up to one period
                # while a node hangs) must not push the next renewal of the healthy leases past a lease
                # that is shorter than two periods.
                await asyncio.sleep(max(worker.settings.heartbeat - (loop.time() - began), 0))
        finally:
            for beat in self._beats.values():
                beat.cancel()

    async def _beat(self) -> None:
        worker = self._worker
        jobs = worker.mediator._jobs
        queues = worker.settings.queues
        if not jobs.layout.cluster:
            await self._beat_in(queues, worker.settings.queues[0])
            return
        # On a cluster each queue's slot gets its own beat, with the leases of the jobs of that queue. A
        # node that hangs holds back its own queue's beat only: the others are not waited for past one
        # heartbeat period, and go on at their pace while that beat waits out its timeout.
        await jobs.register_queues(set(queues))
        failures: list[BaseException] = []
        beats = []
        for queue in queues:
            beat = self._beats.get(queue)
            if beat is not None and beat.done():
                if not beat.cancelled() and beat.exception() is not None:  # it ended after the last wait
                    failures.append(beat.exception())  # type: ignore[arg-type]
                beat = None
            if beat is None:
                beat = self._beats[queue] = asyncio.create_task(self._beat_in([queue], queue))
            beats.append(beat)
        done, _ = await asyncio.wait(beats, timeout=self._worker.settings.heartbeat)
        for beat in done:
            if not beat.cancelled() and beat.exception() is not None:
                failures.append(beat.exception())  # type: ignore[arg-type]
        if failures:
            raise failures[0]

    async def _beat_in(self, queues: Sequence[str], home: str) -> None:
        """Renew the heartbeat (its copy in *home*'s slot) and the leases of the jobs of *queues*."""
        worker = self._worker
        jobs = worker.mediator._jobs
        held: list[str | int | bytes] = []
        for claim in worker.held():  # prefetched jobs hold leases too
            if claim.queue in queues:
                held += (claim.key_id, claim.queue, claim.token, claim.deliveries)
        reply = await run_script(
            jobs.scripts.heartbeat,
            jobs.layout.route(home) if jobs.layout.cluster else [],
            [
                jobs.worker_key(worker.instance, home),
                self._record(),
                int(worker.settings.heartbeat * 3000),
                int(worker.settings.lease * 1000),
                len(queues),
                *queues,
                *held,
            ],
        )
        # Feeds the queue-depth gauge, read whenever metrics are collected.
        queue_depths.update(zip(queues, (int(depth) for depth in reply[: len(queues)]), strict=True))
        lost_count = int(reply[len(queues)])
        lost = reply[len(queues) + 1 : len(queues) + 1 + lost_count]
        aborts = reply[len(queues) + 1 + lost_count :]
        by_key = {claim.key_id: claim.id for claim in worker.held()}
        for key_id in lost:
            if key_id in by_key:
                worker._cancel(by_key[key_id], lost=True)
        for key_id in aborts:
            if key_id in by_key:
                worker._cancel(by_key[key_id], lost=False)


class PeerTypes:
    """What the other live workers can run, read from their heartbeats at most once per heartbeat."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._peers: list[WorkerState] = []
        self._read_at = 0.0

    async def can_run(self, message_type: str, queue: str) -> bool:
        """Return whether another live worker serving *queue* has a handler for *message_type*."""
        worker = self._worker

        def can_run() -> bool:
            return any(
                peer.instance != worker.instance and queue in peer.queues and message_type in peer.types
                for peer in self._peers
            )

        clock = asyncio.get_running_loop().time()
        # A "no" fails the job for good: it is read afresh, as a worker started since the last read
        # (a rolling deploy) may be idle and pushed nothing, while this one was pushed the job.
        if clock - self._read_at > worker.settings.heartbeat or not can_run():
            try:
                self._peers = await worker.mediator._jobs.workers()
            except (RedisError, OSError):
                return True  # cannot tell now: give the job back rather than fail it on a guess
            self._read_at = clock
        return can_run()
