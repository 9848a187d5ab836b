"""The worker: takes jobs from an ordered set of queues under one concurrency cap and runs their handlers.

It replaces arq's `Worker` loop (one queue, polling, long in-progress keys) and keeps arq's data layout.
The loop claims as many jobs as it has free slots in one script call, highest-priority queue first, and
a few more of its first queue to start the moment a slot frees (`_prefetch`); idle, it sleeps until a
wake-up message, the next deferred job, or a slow fallback tick, while an enqueue may claim a new job for
it and push it over (`_pushes`), which it starts at once. Each running job holds a short lease that the
heartbeat renews, so a dead worker's jobs come back within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from redis.exceptions import RedisError

from ._claims import Claim, ClaimReply, claim_per_queue, read_claim_reply
from ._execution import Counters, JobRunner
from ._heartbeat import Heartbeat, PeerTypes
from ._history import step_field
from ._jobs import now_ms
from ._keys import WORKERS_KEY
from ._layout import run_script
from ._live import ReportWriter
from ._outcomes import Outcomes, stopped_for
from ._prefetch import RECHECK, Prefetch
from ._pushes import Pushes
from ._recurring import run_schedules
from ._resilience import LoopHealth
from ._results import open_pubsub
from ._wakeups import listen
from ._worker_settings import WorkerSettings, describe_capabilities

if TYPE_CHECKING:
    from ._mediator import Mediator

logger = logging.getLogger("arq_mediator.worker")
# Seconds a stopping worker gives its outbox relay to finish the batch in hand.
RELAY_STOP_WITHIN = 10.0


class Worker:
    """Run background jobs of a mediator from an ordered set of queues; see `WorkerSettings`.

    The constructor only records configuration; `run` connects, works until `stop`, then drains.
    """

    def __init__(self, mediator: Mediator, settings: WorkerSettings) -> None:
        self.mediator = mediator
        self.settings = settings
        self.instance = uuid.uuid4().hex[:12]
        self.name = settings.name or f"{socket.gethostname()}-{os.getpid()}"
        self._history_name = step_field(self.name)
        self._claims = itertools.count(1)
        self._running: dict[str, tuple[Claim, asyncio.Task[None]]] = {}
        # How many of the running jobs are settling (their handler is done, their outcome on its way).
        self._settling = 0
        self._prefetch = Prefetch(settings.prefetch)
        self._attention = asyncio.Event()
        # Whether the last claim took all it asked for: the queues may hold more, worth claiming early for.
        self._backlog = False
        self._stopping = asyncio.Event()
        self._stopped_at: int | None = None
        # On a cluster, the queues whose node did not answer the last claim (logged once until it does).
        self._unreachable: set[str] = set()
        self._outcomes: Outcomes | None = None
        self._runner: JobRunner | None = None
        self._pushes: Pushes | None = None
        self.counters = Counters()

    @property
    def running(self) -> int:
        """Return how many jobs run now (prefetched jobs waiting for a slot are not counted)."""
        return len(self._running)

    @property
    def prefetched(self) -> int:
        """Return how many claimed jobs wait in the prefetch buffer for a free slot."""
        return len(self._prefetch)

    def held(self) -> Iterator[Claim]:
        """Yield every claim whose lease the worker holds: running, prefetched, or being given back."""
        for claim, _ in self._running.values():
            yield claim
        yield from self._prefetch.held()

    def _slot_freed(self, claim: Claim) -> None:
        running = self._running.get(claim.id)
        if running is not None and running[0] is claim:
            self._settling += 1
            self._prefetch.finished(asyncio.get_running_loop().time())
            self._start_prefetched()
        # With a backlog the next claim goes out at once, ahead of the outcome's write, so Redis runs the
        # completions while the worker runs the next jobs. Without one it would only delay that write.
        if self._backlog:
            self._attention.set()

    def _free_slots(self) -> int:
        # A job whose outcome is on its way to Redis keeps its lease (the heartbeat renews it) but not its
        # slot: its handler is done, and the next job need not wait for the write. At most max_jobs of
        # them count as free, so while the writes keep failing the worker stalls at 2 x max_jobs claims
        # instead of claiming (and renewing leases) without end.
        limit = self.settings.max_jobs
        return limit - (len(self._running) - min(self._settling, limit))

    def _start_prefetched(self) -> None:
        # Synchronously, in the callback that freed the slot: no claim round trip between two jobs.
        while len(self._prefetch) and self._free_slots() > 0 and not self._stopping.is_set():
            self._start(self._prefetch.next())

    def _forget(self, job_id: str, task: asyncio.Task[None] | None = None) -> None:
        running = self._running.get(job_id)
        if running is None or (task is not None and running[1] is not task):
            return
        del self._running[job_id]
        if running[0].settling:
            self._settling -= 1

    def stop(self) -> None:
        """Stop taking jobs; `run` then lets running jobs finish within the grace period and returns."""
        if self._stopped_at is None:
            self._stopped_at = now_ms()
        self._stopping.set()
        self._attention.set()

    async def run(self) -> None:
        """Work until `stop` is called, then drain: finish or give back every running job."""
        # Jobs and schedule ticks start their own traces from their envelopes: whatever span the caller
        # of run() is in must not become their parent, nor be marked by their failures.
        detached = otel_context.attach(otel_context.Context())
        try:
            await self._work()
        finally:
            otel_context.detach(detached)

    async def _work(self) -> None:
        jobs = self.mediator._jobs
        settings = self.settings
        for queue in settings.queues:  # on a cluster, a name that cannot be a hash tag is refused now
            jobs.layout.check_queue(queue)
        self._outcomes = Outcomes(
            jobs,
            self.name,
            settings.lease,
            lambda: stopped_for(self._stopped_at, settings.grace),
            on_settling=self._slot_freed,
        )
        reports = ReportWriter(jobs.redis, jobs.history, jobs.layout) if jobs.history is not None else None
        peers = PeerTypes(self)
        self._runner = JobRunner(
            self.mediator, settings, self.name, self._outcomes, peers.can_run, self._settled, reports
        )
        self.counters = self._runner.counters
        self._pushes = Pushes(
            jobs, self.instance, settings.queues, settings.idle_check, enabled=settings.push_when_idle
        )
        pubsub = open_pubsub(jobs.redis, jobs.channels, ignore_subscribe_messages=True)
        heartbeat = asyncio.create_task(Heartbeat(self).run(), name=f"{self.name} heartbeat")
        helpers: list[asyncio.Task[None]] = [
            heartbeat,
            asyncio.create_task(
                listen(
                    pubsub,
                    jobs.channels,
                    jobs.redis,
                    self.name,
                    settings.queues,
                    self._attention.set,
                    self._abort_requested,
                    (self._pushes.channel, self._pushed),
                ),
                name=f"{self.name} listener",
            ),
        ]
        if reports is not None:
            helpers.append(asyncio.create_task(reports.run(), name=f"{self.name} progress and logs"))
        if self.mediator.recurring_jobs:
            helpers.append(asyncio.create_task(run_schedules(self.mediator, self._stopping)))
        relay = None
        if settings.relay is not None:
            relay = asyncio.create_task(settings.relay.run(self._stopping), name=f"{self.name} outbox relay")
            relay.add_done_callback(self._relay_ended)
            helpers.append(relay)
        describe_capabilities(self.mediator, self.name, settings.queues, settings.max_jobs)
        try:
            await self._claim_loop()
        finally:
            await self._give_back_pushes()
            await self._drain(heartbeat)
            if (
                relay is not None
            ):  # it stops after its batch: cancelled mid-way it would push that batch twice
                await asyncio.wait([relay], timeout=RELAY_STOP_WITHIN)
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if reports is not None:  # the last lines of the last jobs
                await reports.flush()
            with contextlib.suppress(RedisError, OSError):
                for queue in settings.queues[: len(settings.queues) if jobs.layout.cluster else 1]:
                    key = jobs.worker_key(self.instance, queue)
                    await jobs.redis.delete(key)
                    await jobs.redis.zrem(jobs.layout.named(WORKERS_KEY, queue), key)
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            logger.info("worker %s stopped: %s", self.name, self._describe_counts())

    def _relay_ended(self, task: asyncio.Task[None]) -> None:
        # The relay rides out Redis and database errors; what ends it early is a configuration error.
        if not task.cancelled() and task.exception() is not None:
            logger.error("worker %s: its outbox relay stopped: %r", self.name, task.exception())

    def _describe_counts(self) -> str:
        counts = self.counters
        return (
            f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.retried} retried, "
            f"{counts.lost} lost to another claim, {self._outcomes.dropped if self._outcomes else 0} late "
            "outcome(s) dropped"
        )

    async def _claim_loop(self) -> None:
        health = LoopHealth(logger, f"worker {self.name} claiming jobs")
        clock = asyncio.get_running_loop().time
        first = self.settings.queues[0]
        while not self._stopping.is_set():
            free = self._free_slots()
            ahead = self._prefetch.wanted(clock(), claiming=free > 0)
            if free + ahead <= 0:
                self._attention.clear()
                if self._free_slots() + self._prefetch.wanted(clock(), claiming=False) <= 0:
                    await self._wait_for_room()
                continue
            # Cleared before the claim, so a wake-up arriving during the round trip is not lost.
            self._attention.clear()
            began = clock()
            try:
                reply = await self._claim(free, ahead)
            except Exception as error:  # any error reply or unreadable answer: back off and go on
                await self._pause(health.failed(error))
                continue
            self._prefetch.claimed(clock() - began)
            health.succeeded()
            # Only the first queue's jobs wait in the buffer; the others were claimed for free slots only.
            for claim in reply.claims:
                if claim.queue == first:
                    self._prefetch.add(claim, clock())
            self._start_prefetched()
            for claim in reply.claims:
                if claim.queue != first:
                    self._start(claim)
            self._backlog = len(reply.claims) == free + ahead
            if len(reply.claims) < free + ahead:
                wait = self.settings.idle_check
                if reply.next_due >= 0:
                    wait = min(wait, max(reply.next_due - reply.now, 0) / 1000)
                await self._pause(wait)

    async def _wait_for_room(self) -> None:
        """Wait for a free slot; with jobs in the buffer, give back those it no longer needs."""
        if not len(self._prefetch):
            await self._attention.wait()
            return
        await self._pause(RECHECK)
        for claim in self._prefetch.surplus(asyncio.get_running_loop().time()):
            self._settle_unstarted(claim)

    async def _claim(self, free: int, ahead: int) -> ClaimReply:
        token = f"{self.instance}.{next(self._claims)}"
        queues = self.settings.queues
        if self.mediator._jobs.layout.cluster:
            claim_one = partial(self._claim_from, token=token)
            reply = await claim_per_queue(claim_one, queues, free, ahead, self._unreachable, self.name)
        else:
            reply = await self._claim_from(queues, free, ahead, token=token)
        if self._pushes is not None and self._pushes.enabled:  # a pushed claim heard already starts once
            first_seen = [c for c in reply.claims if c.token == token or self._pushes.first_sight(c.token)]
            reply = ClaimReply(reply.now, reply.next_due, reply.bad_queues, first_seen)
        for problem in reply.bad_queues:
            logger.error("worker %s cannot read queue %s; skipping it", self.name, problem)
        return reply

    async def _claim_from(self, queues: Sequence[str], free: int, ahead: int, *, token: str) -> ClaimReply:
        """Claim up to *free* jobs from *queues* (all in one slot on a cluster), and *ahead* more of the
        first queue, in one script call."""
        jobs = self.mediator._jobs
        arguments: list[str | int | bytes] = [
            free,
            int(self.settings.lease * 1000),
            token,
            self.mediator.max_job_bytes,
            self._history_name,
            ahead,
            *(self._pushes.claim_arguments(stopping=self._stopping.is_set()) if self._pushes else ["", 0]),
            len(queues),
            *queues,
            *(claim.key_id for claim in self.held() if not jobs.layout.cluster or claim.queue in queues),
        ]
        keys = jobs.layout.route(queues[0]) if jobs.layout.cluster else []
        return read_claim_reply(await run_script(jobs.scripts.claim, keys, arguments), token)

    def _start(self, claim: Claim) -> None:
        assert self._runner is not None
        if claim.id in self._running:  # the same id twice (a hostile id colliding with invalid-id:...)
            claim.id = f"{claim.id}#{claim.token}"
        task = asyncio.create_task(self._runner.run(claim), name=f"job {claim.id}")
        self._running[claim.id] = (claim, task)
        task.add_done_callback(partial(self._finished, claim))

    def _pushed(self, data: bytes) -> None:
        # Started at once: the enqueue script claimed it for this worker within its free slots. A
        # stopping worker leaves it to `_give_back_pushes`.
        claim = self._pushes.read(data) if self._pushes is not None else None
        if claim is not None and not self._stopping.is_set():
            self._start(claim)

    async def _give_back_pushes(self) -> None:
        if self._pushes is None:
            return
        try:
            given = await self._pushes.stop([claim.key_id for claim, _ in self._running.values()])
        except (RedisError, OSError) as error:  # their leases lapse, and the registration expires
            logger.warning("worker %s could not take back its registration for pushes: %r", self.name, error)
            return
        if given:
            logger.info("worker %s gave %d pushed job(s) it had not started back", self.name, given)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._attention.wait()

    def _settled(self, job_id: str) -> None:
        self._forget(job_id)

    def _finished(self, claim: Claim, task: asyncio.Task[None]) -> None:
        running = self._running.get(claim.id)
        if running is not None and running[1] is task:
            if not claim.settling:  # lost or given back: its slot frees only now
                self._prefetch.finished(asyncio.get_running_loop().time())
            self._forget(claim.id, task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("worker %s: job %s ended with %r", self.name, claim.id, task.exception())
        self._start_prefetched()
        self._attention.set()

    def _settle_unstarted(self, claim: Claim) -> None:
        assert self._runner is not None
        self._prefetch.settle(claim, self._runner.settle_unstarted)

    async def _drain(self, heartbeat: asyncio.Task[None]) -> None:
        prefetched = self._prefetch.drain()
        for claim in prefetched:  # at once, untried: another worker may run them while these jobs finish
            self._settle_unstarted(claim)
        if self._running or prefetched:
            logger.info(
                "worker %s draining %d running job(s), up to %.1fs; %d prefetched given back",
                self.name,
                len(self._running),
                self.settings.grace,
                len(prefetched),
            )
            pending = [task for _, task in self._running.values()] + self._prefetch.settling()
            await asyncio.wait(pending, timeout=self.settings.grace)
        # No renewal may be in flight while jobs are given back, or it could re-take a returned job's lease.
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        remaining = [task for _, task in self._running.values()]
        for task in remaining:
            task.cancel()
        if remaining:
            logger.warning(
                "worker %s gave %d unfinished job(s) back to their queues", self.name, len(remaining)
            )
            await asyncio.gather(*remaining, return_exceptions=True)
        # Past the grace period their writes give up; the leases then lapse and the jobs come back.
        await asyncio.gather(*self._prefetch.settling(), return_exceptions=True)
        if self._outcomes is not None:  # outcomes still on their way must arrive before the pool closes
            await self._outcomes.flush()

    def _abort_requested(self, job_id: str) -> None:
        self._cancel(job_id, lost=False)

    def _cancel(self, job_id: str, *, lost: bool) -> None:
        waiting = self._prefetch.remove(job_id)
        if waiting is not None:
            if lost:  # another claim holds it: it must not start here
                self.counters.lost += 1
                logger.warning("worker %s dropped prefetched job %s: its lease passed on", self.name, job_id)
            else:
                waiting.aborting = True
                self._settle_unstarted(waiting)
            return
        running = self._running.get(job_id)
        if running is None:
            return
        claim, task = running
        if claim.aborting or claim.lost or claim.settling:
            return
        if lost:
            claim.lost = True
        else:
            claim.aborting = True
        task.cancel()


async def run_worker(mediator: Mediator, settings: WorkerSettings, *, handle_signals: bool = True) -> Worker:
    """Open *mediator*, run a worker with *settings* until SIGTERM or SIGINT (or `Worker.stop`), then drain.

    The signal handlers stay in place until the mediator has closed, so a second signal during the
    drain asks for the same stop instead of killing the process half-way.

    Returns:
        The stopped worker, with its counters.
    """
    worker = Worker(mediator, settings)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, worker.stop)
    try:
        async with mediator:
            await worker.run()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return worker
