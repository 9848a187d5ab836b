"""What a job client does differently on Redis Cluster: one call per queue, ids found by their tag.

On a cluster every script call is about one queue (its slot, `_layout.Layout`), so what spans queues on
one server in one call (a batch of enqueues, a worker's outcomes of one turn, the counts of every queue)
goes as one call per queue, all at once; and an id given without its queue's tag is looked for in every
known queue. `JobClient` mixes this in; on one server none of it runs but `locate`, `_route` and
`queue_counts`, which then change nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from ._errors import REDIS_UNAVAILABLE
from ._keys import JOB_PREFIX, QUEUES_KEY, RESULT_PREFIX, WORKER_PREFIX
from ._layout import Layout, run_script, tag_of

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from ._jobs import PendingJob
    from ._scripts import Scripts


logger = logging.getLogger("arq_mediator.jobs")


class PartlyRecorded(Exception):
    """Some queues' outcomes of a batch were recorded (*recorded*, by index in the batch), others failed."""

    def __init__(self, recorded: dict[int, bool], error: BaseException) -> None:
        super().__init__(f"{len(recorded)} outcome(s) recorded, the rest failed: {error!r}")
        self.recorded = recorded
        self.error = error


class PerQueueCalls:
    """The cluster side of `JobClient`; the client provides its attributes and `queue_names`."""

    redis: Redis
    layout: Layout
    scripts: Scripts
    _queues_registered: set[str]
    # What `_best_effort` could not do lately (logged as a warning once, until it goes through), and its
    # try in the background meanwhile.
    _unavailable_for: set[str]
    _retrying: dict[str, asyncio.Future[bool]]

    async def queue_names(self) -> set[str]:
        """Return every queue a job was enqueued on (the client's own)."""
        raise NotImplementedError

    async def complete_many(self, batch: list[list[Any]]) -> list[bool]:
        """Record the outcomes in *batch* (the client's own)."""
        raise NotImplementedError

    async def _push_per_queue(self, jobs: list[PendingJob], durable: bool) -> list[tuple[int, str, str]]:
        """Push *jobs* on a cluster: one script call per queue (each its own slot), all at once."""
        if durable:
            raise ValueError("durable enqueue (WAIT for replicas) is not supported on Redis Cluster")
        await self.register_queues({job.queue for job in jobs})
        by_queue: dict[str, list[int]] = {}
        for index, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(index)

        async def push_one(queue: str, indexes: list[int]) -> list[Any]:
            arguments: list[str | int] = []
            for job in (jobs[index] for index in indexes):
                arguments += (job.id, job.queue, job.delay_ms, job.body, job.type, job.parent)
            reply: list[Any] = await run_script(self.scripts.enqueue, self.layout.route(queue), arguments)
            return reply

        replies = await asyncio.gather(*(push_one(queue, indexes) for queue, indexes in by_queue.items()))
        outcomes: list[tuple[int, str, str]] = [(0, "", "")] * len(jobs)
        for indexes, reply in zip(by_queue.values(), replies, strict=True):
            for n, index in enumerate(indexes):
                state, queue, kind = reply[n * 3 : n * 3 + 3]
                outcomes[index] = (int(state), queue.decode(errors="replace"), kind.decode(errors="replace"))
        return outcomes

    async def register_queues(self, queues: set[str]) -> None:
        """On a cluster, add *queues* to the registry of queues readers go through (once per process).

        On one server the enqueue script keeps that registry; on a cluster its key lives in one slot
        that a script about another queue cannot touch, so it is written here, once per queue.
        """
        new = queues - self._queues_registered
        if self.layout.cluster and new:
            for queue in new:
                self.layout.check_queue(queue)
            if await self._best_effort("register queues", self.redis.sadd(QUEUES_KEY, *new)):  # type: ignore[arg-type]
                self._queues_registered |= new

    async def _best_effort(self, what: str, call: Awaitable[object]) -> bool:
        """Make *call*; return whether it went through, logging (once per outage) when Redis was unavailable.

        For the writes of one shared key (in one slot on a cluster) done before an enqueue or a beat: with
        the node serving that key down, enqueues to healthy queues and heartbeats must still go on; the
        write is tried again at the next call. On one server that key's server is the queues' server: the
        error is raised at once, rather than the enqueue or beat waiting out a second timeout after it.

        On a cluster a try waits one command timeout at most (redis-py would try a hung node four times),
        and while the write keeps failing the callers do not wait for it at all: it is tried again in the
        background, one try at a time. A hung node delays only the first call after it stopped answering.
        """
        if not self.layout.cluster:
            await call
            return True
        if what not in self._unavailable_for:
            return await self._write_once(what, call)
        retry = self._retrying.get(what)
        if retry is None or retry.done():
            retry = self._retrying[what] = asyncio.ensure_future(self._write_once(what, call))
            retry.add_done_callback(_log_error_reply)
        elif inspect.iscoroutine(call):  # a try is on its way already
            call.close()
        return False

    async def _write_once(self, what: str, call: Awaitable[object]) -> bool:
        limit = cast("RedisCluster", self.redis).get_connection_kwargs().get("socket_timeout")
        try:
            async with asyncio.timeout(limit):
                await call
        except REDIS_UNAVAILABLE as error:  # the timeout's TimeoutError among them
            level = logging.DEBUG if what in self._unavailable_for else logging.WARNING
            logger.log(level, "could not %s (tried again later): %r", what, error)
            self._unavailable_for.add(what)
            return False
        self._unavailable_for.discard(what)
        return True

    async def _complete_per_queue(self, batch: list[list[Any]]) -> list[bool]:
        """Record outcomes of several queues on a cluster: one call per queue, all at once.

        Raises:
            PartlyRecorded: Some queues' calls failed (their node is down, say) and others went through.
        """
        by_queue: dict[str, list[int]] = {}
        for index, job in enumerate(batch):
            by_queue.setdefault(str(job[3]), []).append(index)
        parts = await asyncio.gather(
            *(self.complete_many([batch[i] for i in indexes]) for indexes in by_queue.values()),
            return_exceptions=True,
        )
        recorded: dict[int, bool] = {}
        failed: BaseException | None = None
        for indexes, part in zip(by_queue.values(), parts, strict=True):
            if isinstance(part, BaseException):
                failed = failed or part
            else:
                recorded.update(zip(indexes, part, strict=True))
        if failed is not None:
            raise PartlyRecorded(recorded, failed) if recorded else failed
        return [recorded[index] for index in range(len(batch))]

    async def locate(self, job_id: str) -> str | None:
        """Return the id *job_id* is stored under, ``None`` when no known queue holds it.

        On one server, and for an id that carries its queue's tag, that is *job_id* itself. On a cluster
        an id given without its tag (``order-42`` for ``{emails}order-42``) is looked for in every known
        queue: one round trip per queue, all at once.
        """
        if not self.layout.cluster or tag_of(job_id) is not None:
            return job_id
        candidates = [self.layout.job_id(queue, job_id) for queue in sorted(await self.queue_names())]
        found = await asyncio.gather(
            *(
                self.redis.exists(
                    self.layout.job_key(JOB_PREFIX, candidate), self.layout.job_key(RESULT_PREFIX, candidate)
                )
                for candidate in candidates
            )
        )
        return next((candidate for candidate, hits in zip(candidates, found, strict=True) if hits), None)

    def _route(self, job_id: str) -> list[str]:
        """Return the KEYS of a script call about *job_id* (its queue's tag on a cluster)."""
        queue = tag_of(job_id)
        return self.layout.route(queue) if queue is not None else []

    def worker_key(self, instance: str, queue: str) -> str:
        """Return the heartbeat key of worker *instance* (on a cluster, its copy in *queue*'s slot)."""
        return self.layout.key(WORKER_PREFIX, queue, instance)

    async def queue_counts(self, names: list[str]) -> list[int]:
        """Return ready, running, deferred and failed of each of *names* (on a cluster, a call per queue)."""
        if not names:
            return []
        if not self.layout.cluster:
            counts: list[int] = await self.scripts.queue_stats(args=names)
            return counts
        parts = await asyncio.gather(
            *(run_script(self.scripts.queue_stats, self.layout.route(name), [name]) for name in names)
        )
        return [count for part in parts for count in part]


def _log_error_reply(retry: asyncio.Future[bool]) -> None:
    """Log what a background try raised besides unavailability (an error reply): no caller awaits it."""
    if not retry.cancelled() and retry.exception() is not None:
        logger.warning("could not write a shared key in the background: %r", retry.exception())
