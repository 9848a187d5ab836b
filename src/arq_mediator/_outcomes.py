"""Writing what became of each try: complete, retry or give back, each fenced by the claim's lease token.

A write Redis refuses or cannot take now is tried again, with backoff, until it lands or the worker has
stopped and its grace period passed; then the lease lapses and the job runs again (at least once, never
lost). A write the fence refuses (another claim holds the job now) is dropped: logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisClusterException, RedisError

from ._envelope import stored_json
from ._handle import ABORTED_TYPES
from ._history import step_field
from ._jobs import now_ms
from ._layout import run_script
from ._per_queue import PartlyRecorded
from ._resilience import LoopHealth
from ._telemetry import outcomes_dropped

if TYPE_CHECKING:
    from ._claims import Claim
    from ._envelope import ResultRecord
    from ._jobs import JobClient

logger = logging.getLogger("arq_mediator.worker")
T = TypeVar("T")
# What RETRY and RELEASE answer.
DONE, NOT_HELD, ABORT_ASKED = 1, 0, 2


class Outcomes:
    """Record the outcomes of one worker's jobs.

    Args:
        client: The job client of the worker's mediator.
        worker: The worker's name, for the log.
        lease: The lease, in seconds (a retry's mark outlives its delay by one lease).
        give_up_after: Returns ``True`` once the worker stopped and its grace period passed.
        on_settling: Called with a claim when its try's outcome is first handed in, before it is written:
            its handler is done, so its slot is free for the next job, which can start ahead of the write.
    """

    def __init__(
        self,
        client: JobClient,
        worker: str,
        lease: float,
        give_up_after: Callable[[], bool],
        on_settling: Callable[[Claim], None] = lambda _: None,
    ) -> None:
        self._client = client
        self._worker = worker
        self._worker_field = step_field(worker)
        self._lease_ms = int(lease * 1000)
        self._history_bytes = client.history.max_payload_bytes if client.history is not None else -1
        self._history_keep_ms = client.history.keep_jobs_ms if client.history is not None else 0
        self._give_up = give_up_after
        self._on_settling = on_settling
        self._health = LoopHealth(logger, f"worker {worker} recording job outcomes")
        self._pending: list[tuple[list[Any], asyncio.Future[bool]]] = []
        # The batch being written (by index), and what became of the parts already written.
        self._writing: dict[int, list[Any]] = {}
        self._landed: dict[int, bool] = {}
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0

    async def complete(
        self, claim: Claim, record: ResultRecord, keep_seconds: float, *, failed: bool
    ) -> bool:
        """Store a finished job's result record; return whether it was recorded (the fence held)."""
        self._settling(claim)
        error_type = record.error.type if record.error is not None else ""
        state = "succeeded" if not failed else "aborted" if error_type in ABORTED_TYPES else "failed"
        # The envelope the history keeps, sent along (the script need not read it back) when small; not
        # for a failure whose record carries it and outlives the history (a week to a day by default).
        keep_ms = int(keep_seconds * 1000)
        in_record = failed and record.job is not None and keep_ms >= self._history_keep_ms
        keep_body = len(claim.body) <= self._history_bytes and not claim.problem and not in_record
        arguments = [
            *claim.fence(),
            claim.queue,
            stored_json(record),
            keep_ms,
            int(failed),
            record.id,
            state,
            record.type,
            self._worker_field,
            error_type,
            claim.body if keep_body else b"",
            claim.claimed_at,
        ]
        done = asyncio.get_running_loop().create_future()
        self._pending.append((arguments, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name=f"{self._worker} recorder")
        try:
            # Shielded: a job task cancelled now must not cancel the write it shares with other jobs.
            recorded: bool = await asyncio.shield(done)
        except Exception as error:
            logger.error(
                "worker %s could not record the outcome of job %s: %r", self._worker, claim.id, error
            )
            return False
        if not recorded:
            self._dropped(claim, "its result")
        return recorded

    async def retry(self, claim: Claim, body: str, delay_ms: int, *, reason: str = "") -> int:
        """Put the job back for another try after *delay_ms*; return DONE, NOT_HELD or ABORT_ASKED.

        *reason* (the error type) goes to the job's history.
        """
        self._settling(claim)
        arguments = [
            *claim.fence(),
            claim.queue,
            body,
            delay_ms,
            self._lease_ms,
            reason,
            claim.claimed_at,
            self._worker_field,
        ]
        keys = self._client.layout.route(claim.queue)
        outcome = await self._persist(lambda: run_script(self._client.scripts.retry, keys, arguments))
        if outcome == NOT_HELD:
            self._dropped(claim, "its retry")
        return NOT_HELD if outcome is None else int(outcome)

    async def release(self, claim: Claim, delay_ms: int = 0) -> int:
        """Give the job back untried, due again after *delay_ms*; return DONE, NOT_HELD or ABORT_ASKED."""
        arguments = [*claim.fence(), claim.queue, delay_ms, self._lease_ms, claim.due_at]
        keys = self._client.layout.route(claim.queue)
        outcome = await self._persist(lambda: run_script(self._client.scripts.release, keys, arguments))
        return NOT_HELD if outcome is None else int(outcome)

    def _settling(self, claim: Claim) -> None:
        if not claim.settling:  # once: a retry refused for an abort is then recorded as aborted
            claim.settling = True
            self._on_settling(claim)

    async def flush(self) -> None:
        """Wait until every outcome handed in so far was written (or given up on)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    def _dropped(self, claim: Claim, what: str) -> None:
        self.dropped += 1
        outcomes_dropped.add(1, {"messaging.destination.name": claim.queue})
        logger.warning(
            "worker %s dropped %s of job %s: its lease passed to another claim meanwhile",
            self._worker,
            what,
            claim.id,
        )

    async def _write_batches(self) -> None:
        """Write the outcomes of finished jobs, all those of one event-loop turn in one round trip.

        A worker under load finishes many jobs per turn; one pipeline for them instead of a script call
        each halves the worker's CPU per job.
        """
        await asyncio.sleep(0)  # the other jobs finishing in this same turn join the batch
        while self._pending:
            batch, self._pending = self._pending, []
            self._writing = {n: arguments for n, (arguments, _) in enumerate(batch)}
            self._landed = {}
            try:
                written = await self._persist(self._write_current)
            except Exception as error:  # each waiting job hears of it; the writer goes on with the next
                for n, (_, done) in enumerate(batch):
                    if not done.done():
                        if n in self._landed:
                            done.set_result(self._landed[n])
                        else:
                            done.set_exception(error)
                continue
            for n, (_, done) in enumerate(batch):
                if done.done():
                    continue
                if written is None and n not in self._landed:
                    done.set_exception(TimeoutError("Redis did not take it within the grace period"))
                else:
                    done.set_result(self._landed[n])

    async def _write_current(self) -> bool:
        """Write the outcomes not yet written; on a cluster, those of queues whose call failed last time.

        The parts that went through are kept (in ``_landed``): sent again, the fence would refuse them.
        """
        indexes = list(self._writing)
        try:
            recorded = await self._client.complete_many([self._writing[n] for n in indexes])
        except PartlyRecorded as partly:
            for position, done in partly.recorded.items():
                self._landed[indexes[position]] = done
                del self._writing[indexes[position]]
            raise partly.error from None
        self._landed.update(zip(indexes, recorded, strict=True))
        self._writing = {}
        return True

    async def _persist(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make a state-changing call, trying again through Redis outages and error replies.

        Returns ``None`` when the worker stopped and its grace period passed before the call went through.
        """
        while True:
            try:
                result = await call()
            # RedisClusterException (no node for the slot, say) is neither of the others: unavailable too.
            except (RedisError, OSError, RedisClusterException) as error:
                if self._give_up():
                    logger.error(
                        "worker %s could not record job outcomes before stopping: %r", self._worker, error
                    )
                    return None
                await asyncio.sleep(self._health.failed(error))
                continue
            self._health.succeeded()
            return result


def stopped_for(stopped_at: int | None, grace: float) -> bool:
    """Return whether a worker that stopped at *stopped_at* (ms, or ``None``) is past its *grace* seconds."""
    return stopped_at is not None and now_ms() - stopped_at > grace * 1000
