"""Running one claimed job: read its envelope, run its pipeline in a CONSUMER span, record the outcome.

The worker hands each claim to a `JobRunner` and keeps only the task; the runner never touches the
worker's state, and the worker never looks inside a job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._context import Context, JobInfo
from ._deadlines import Deadlines
from ._envelope import (
    ErrorRecord,
    JobEnvelope,
    ResultRecord,
    decode_envelope,
    encode_raw,
    qualified_name,
    stored_json,
)
from ._errors import EnvelopeError, NoHandlerError, WorkerLostError
from ._handle import aborted
from ._jobs import now_ms
from ._live import JobLogger, current_job
from ._messages import Request, response_type_of
from ._outcomes import ABORT_ASKED, DONE
from ._telemetry import (
    job_duration,
    jobs_processed,
    jobs_retried,
    leases_lost,
    queue_wait,
    record_failure,
    start_consumer_span,
    tracing_enabled,
)

if TYPE_CHECKING:
    from ._claims import Claim
    from ._live import ReportWriter
    from ._mediator import Mediator
    from ._outcomes import Outcomes
    from ._registry import HandlerSpec
    from ._worker_settings import WorkerSettings

logger = logging.getLogger("arq_mediator.worker")


# How much of an unreadable job's body its failure record keeps.
RAW_BODY_LIMIT = 16 * 1024


@dataclass(slots=True)
class Counters:
    """What one worker has done since it started."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    lost: int = 0
    started_at: int = field(default_factory=now_ms)


# Whether a live worker other than this one, serving a queue, can run a message type: (type, queue) -> bool.
PeerCheck = Callable[[str, str], Awaitable[bool]]


class JobRunner:
    """Run the jobs one worker claims, each through its handler's pipeline, and record what became of it.

    Args:
        mediator: The mediator whose handlers run the jobs.
        settings: The worker's settings.
        worker: The worker's name, recorded with each outcome.
        outcomes: Where outcomes are written.
        peers_can_run: Asked before failing a job whose type this worker has no handler for.
        settled: Called with a job's id once its outcome is recorded.
        reports: Where handlers' progress and log lines go; ``None`` (history off) keeps none.
    """

    def __init__(
        self,
        mediator: Mediator,
        settings: WorkerSettings,
        worker: str,
        outcomes: Outcomes,
        peers_can_run: PeerCheck,
        settled: Callable[[str], None],
        reports: ReportWriter | None = None,
    ) -> None:
        self.counters = Counters()
        self._reports = reports
        self._mediator = mediator
        self._settings = settings
        self._worker = worker
        self._outcomes = outcomes
        self._peers_can_run = peers_can_run
        self._settled = settled
        self._adapters: dict[type, TypeAdapter[Any]] = {}
        self._deadlines = Deadlines()

    async def run(self, claim: Claim) -> None:
        """Run the job of *claim* to an outcome: a result, a retry, a failure, or a give-back."""
        started = now_ms()
        if claim.problem:
            envelope = self._readable(claim)
            problem = EnvelopeError(
                f"job {claim.id} cannot run, so it was failed without running: {claim.problem}"
            )
            logger.error(
                "worker %s quarantined job %s from %s: %s", self._worker, claim.id, claim.queue, problem
            )
            await self._fail(claim, envelope, problem, started, raw=encode_raw(claim.body[:RAW_BODY_LIMIT]))
            return
        try:
            envelope = decode_envelope(claim.id, claim.body)
        except EnvelopeError as error:
            logger.error("worker %s rejected job %s from %s: %s", self._worker, claim.id, claim.queue, error)
            await self._fail(claim, None, error, started, raw=encode_raw(claim.body[:RAW_BODY_LIMIT]))
            return
        lost = claim.deliveries - envelope.failures - 1
        if lost >= self._settings.max_lost:
            poison = WorkerLostError(f"job {claim.id} lost its worker {lost} times; failed as poison")
            await self._fail(claim, envelope, poison, started)
            return
        attributes = {"messaging.destination.name": claim.queue}
        queue_wait.record(max(claim.claimed_at - claim.due_at, 0) / 1000, attributes)
        if not envelope.trace and not tracing_enabled():
            # No SDK records a span and no trace goes on from this job: its span would be a no-op that
            # costs a context switch per job all the same.
            await self._process(claim, envelope, started)
            return
        span = start_consumer_span(
            claim.queue, envelope.type, claim.id, envelope.failures + 1, envelope.trace
        )
        # Failures are recorded on the span by hand, with their error.type; a give-back on shutdown is
        # not a failure of the job and must not mark it as one.
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            await self._process(claim, envelope, started)

    async def _process(self, claim: Claim, envelope: JobEnvelope, started: int) -> None:
        """Find the job's handler, read its request and run it to an outcome."""
        try:
            spec = self._spec_for(envelope)
        except NoHandlerError as error:
            await self._unknown_type(claim, envelope, error, started)
            return
        try:
            message = spec.message_type.model_validate(envelope.payload)
        except ValidationError as error:
            await self._fail(claim, envelope, error, started)
            return
        await self._execute(claim, envelope, spec, message, started)

    def _readable(self, claim: Claim) -> JobEnvelope | None:
        """Return the claim's envelope when it can be read whole, so its failure record can be requeued."""
        try:
            return decode_envelope(claim.id, claim.body)
        except EnvelopeError:
            return None

    def _spec_for(self, envelope: JobEnvelope) -> HandlerSpec:
        registry = self._mediator._registry
        message_type = registry.by_name.get(envelope.type)
        if message_type is None:
            specs = []
        elif issubclass(message_type, Request):
            specs = [registry.requests[message_type]]
        else:
            specs = registry.handlers_of(message_type)
        for spec in specs:
            if envelope.handler is None or spec.name == envelope.handler:
                return spec
        handler = f" (handler {envelope.handler})" if envelope.handler else ""
        raise NoHandlerError(
            envelope.type + handler,
            registry.registered_names(),
            where=f"worker {self._worker} (queues {', '.join(self._settings.queues)})",
        )

    async def _unknown_type(
        self, claim: Claim, envelope: JobEnvelope, error: NoHandlerError, started: int
    ) -> None:
        """Give a job this worker cannot run back to a worker that can; fail it when none can."""
        waited = (now_ms() - (envelope.due_at or envelope.enqueued_at)) / 1000
        if waited < self._settings.unknown_type_timeout and await self._peers_can_run(
            envelope.type, claim.queue
        ):
            logger.warning(
                "worker %s has no handler for %s (job %s); gave it back for a worker that has one",
                self._worker,
                envelope.type,
                claim.id,
            )
            delay_ms = int(self._settings.unknown_type_delay * 1000)
            if await self._outcomes.release(claim, delay_ms) == ABORT_ASKED:
                await self._fail(claim, envelope, aborted("aborted while waiting for a worker"), started)
            return
        logger.error("worker %s failed job %s: %s", self._worker, claim.id, error)
        await self._fail(claim, envelope, error, started)

    async def _execute(
        self, claim: Claim, envelope: JobEnvelope, spec: HandlerSpec, message: Any, started: int
    ) -> None:
        job = JobInfo(
            id=envelope.id,
            queue=claim.queue,
            try_number=envelope.failures + 1,
            max_tries=envelope.max_tries,
            enqueued_at=datetime.fromtimestamp(envelope.enqueued_at / 1000, UTC),
            worker=self._worker,
        )
        mediator = self._mediator
        extra = {"job_id": envelope.id, "queue": claim.queue}
        reports = self._reports
        report = reports.open(envelope.id, claim.deliveries) if reports is not None else None
        job_logger: logging.LoggerAdapter[logging.Logger] = (
            logging.LoggerAdapter(mediator.logger, extra)
            if report is None
            else JobLogger(mediator.logger, extra, report)
        )
        ctx = Context(
            mediator=mediator, logger=job_logger, resources=mediator.resources, job=job, report=report
        )
        head, tail = mediator._registry.route(spec, ctx)
        clock = asyncio.get_running_loop().time
        began = clock()
        current_job.set(envelope.id)  # this task runs this one job: jobs it enqueues name it their parent
        deadlines = self._deadlines
        watched = deadlines.watch(spec.policy.timeout)
        try:
            try:
                value = await head(message, tail)
            except asyncio.CancelledError:
                if deadlines.timed_out(watched):
                    raise TimeoutError from None
                raise
            finally:  # every try counts, the failed and timed-out ones too
                deadlines.forget(watched)
                job_duration.record(clock() - began, {"messaging.destination.name": claim.queue})
                if report is not None:
                    report.close()
            encoded = self._encode(spec, value)
        except asyncio.CancelledError as cancelled:
            task = asyncio.current_task()
            assert task is not None
            if task.cancelling() == 0:
                # Nobody cancelled this task: the handler raised CancelledError itself (say, it awaited a
                # future someone cancelled). That is a failed try, not a stop, or it would run forever.
                await self._after_failure(claim, envelope, spec, cancelled, started)
                return
            if claim.lost:  # another claim holds the job now: nothing of this try may be written
                task.uncancel()
                self.counters.lost += 1
                leases_lost.add(1, {"messaging.destination.name": claim.queue})
                logger.warning(
                    "worker %s stopped job %s: its lease passed to another claim", self._worker, claim.id
                )
                return
            if claim.aborting:
                task.uncancel()
                await self._fail(claim, envelope, aborted("aborted while running"), started)
                return
            trace.get_current_span().set_attribute("arq_mediator.job.outcome", "given back")
            await self._give_back(claim, envelope, started)
            raise
        except PydanticSerializationError as error:  # the handler broke its contract: no retry mends that
            await self._fail(claim, envelope, error, started)
            return
        except Exception as error:
            await self._after_failure(claim, envelope, spec, error, started)
            return
        if claim.aborting:  # the handler caught its cancellation and returned: the abort still wins
            swallowed = aborted("aborted while running (its handler returned after being cancelled)")
            await self._fail(claim, envelope, swallowed, started)
            return
        record = ResultRecord(
            id=claim.id,
            queue=claim.queue,
            ok=True,
            type=envelope.type,
            value=encoded,
            try_number=job.try_number,
            worker=self._worker,
            started_at=started,
            finished_at=now_ms(),
        )
        keep = spec.policy.keep_result or mediator.keep_result
        if await self._outcomes.complete(claim, record, keep, failed=False):
            self._recorded(claim, "succeeded")
            self.counters.succeeded += 1

    def _encode(self, spec: HandlerSpec, value: Any) -> Any:
        message_type = spec.message_type
        if not issubclass(message_type, Request):
            return None
        adapter = self._adapters.get(message_type)
        if adapter is None:
            adapter = self._adapters[message_type] = TypeAdapter(response_type_of(message_type))
        # warnings="error": a handler returning something other than its declared type fails its job
        # here, rather than "succeeding" with a value the caller cannot read back.
        return adapter.dump_python(value, mode="json", warnings="error")

    async def _give_back(self, claim: Claim, envelope: JobEnvelope, started: int) -> None:
        """Return a cancelled job to its queue untried; record it aborted if that was asked meanwhile."""
        if await self._outcomes.release(claim) == ABORT_ASKED:
            await self._fail(claim, envelope, aborted("aborted while running"), started)

    async def settle_unstarted(self, claim: Claim) -> None:
        """End a prefetched job that never started: recorded aborted if that was asked, else given back."""
        started = now_ms()
        if claim.aborting or await self._outcomes.release(claim) == ABORT_ASKED:
            await self._fail(claim, self._readable(claim), aborted("aborted before it started"), started)

    async def _after_failure(
        self, claim: Claim, envelope: JobEnvelope, spec: HandlerSpec, error: BaseException, started: int
    ) -> None:
        try_number = envelope.failures + 1
        if not (isinstance(error, spec.policy.retry_on) and try_number < envelope.max_tries):
            await self._fail(claim, envelope, error, started)
            return
        delay = spec.policy.backoff.delay(try_number)
        delay_ms = int(delay * 1000)
        retried = envelope.model_copy(update={"failures": try_number, "due_at": now_ms() + delay_ms})
        span = trace.get_current_span()
        record_failure(span, error)
        outcome = await self._outcomes.retry(
            claim, stored_json(retried), delay_ms, reason=qualified_name(type(error))
        )
        if outcome == ABORT_ASKED:
            await self._fail(claim, envelope, aborted("aborted while running"), started)
            return
        if outcome != DONE:
            return
        logger.warning(
            "job %s (%s) try %d/%d failed with %r; retrying in %.2fs",
            claim.id,
            envelope.type,
            try_number,
            envelope.max_tries,
            error,
            delay,
        )
        span.set_attribute("arq_mediator.job.outcome", "retried")
        jobs_retried.add(1, {"messaging.destination.name": claim.queue})
        self._recorded(claim, "retried")
        self.counters.retried += 1

    async def _fail(
        self,
        claim: Claim,
        envelope: JobEnvelope | None,
        error: BaseException | ErrorRecord,
        started: int,
        raw: str | None = None,
    ) -> None:
        span = trace.get_current_span()  # the job's CONSUMER span, when it got as far as having one
        if isinstance(error, BaseException):
            if not isinstance(error, (EnvelopeError, WorkerLostError, NoHandlerError)):
                logger.error("job %s failed for good: %r", claim.id, error)
            record_failure(span, error)
            known = qualified_name(type(error)) in self._mediator._registry.errors
            described = ErrorRecord.from_exception(error, keep_state=known)
        else:
            logger.warning("worker %s: job %s ended %s", self._worker, claim.id, error.message)
            span.set_status(Status(StatusCode.ERROR, error.message))
            span.set_attribute("error.type", error.type)
            described = error
        span.set_attribute("arq_mediator.job.outcome", "failed")
        record = ResultRecord(
            id=claim.id,
            queue=claim.queue,
            ok=False,
            type=envelope.type if envelope is not None else "",
            error=described,
            job=envelope,
            raw=raw,
            try_number=0 if envelope is None else envelope.failures + 1,
            worker=self._worker,
            started_at=started,
            finished_at=now_ms(),
        )
        keep = self._mediator.keep_failed
        spec = None
        if envelope is not None:
            try:
                spec = self._spec_for(envelope)
            except NoHandlerError:
                spec = None
        if spec is not None and spec.policy.keep_failed:
            keep = spec.policy.keep_failed
        if await self._outcomes.complete(claim, record, keep, failed=True):
            self._recorded(claim, "failed")
            self.counters.failed += 1

    def _recorded(self, claim: Claim, outcome: str) -> None:
        # No longer running once recorded, so counters and the running count never add up to one too many.
        self._settled(claim.id)
        jobs_processed.add(
            1, {"messaging.destination.name": claim.queue, "arq_mediator.job.outcome": outcome}
        )
