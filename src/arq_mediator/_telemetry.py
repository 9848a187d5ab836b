"""OpenTelemetry through the API only: spans across the queue, job metrics, trace ids in logs.

With no SDK configured every call here lands on the API's no-op objects. Inline `send` is traced only
when a real tracer provider is set when its route is built (see `tracing_enabled`), so the inline hot
path pays nothing otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._envelope import qualified_name

try:
    _VERSION = version("arq-mediator")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    _VERSION = "0"

SYSTEM = "arq"
tracer = trace.get_tracer("arq_mediator", _VERSION)
meter = metrics.get_meter("arq_mediator", _VERSION)

jobs_enqueued = meter.create_counter(
    "arq_mediator.jobs.enqueued", unit="{job}", description="Jobs put on a queue, by queue and request type."
)
jobs_processed = meter.create_counter(
    "arq_mediator.jobs.processed", unit="{job}", description="Job tries finished, by queue, type and outcome."
)
jobs_retried = meter.create_counter(
    "arq_mediator.jobs.retried", unit="{job}", description="Failed tries scheduled for another try."
)
leases_lost = meter.create_counter(
    "arq_mediator.jobs.leases_lost",
    unit="{job}",
    description="Tries a worker stopped because another claim took the job's lease (stalled or cut off).",
)
outcomes_dropped = meter.create_counter(
    "arq_mediator.jobs.outcomes_dropped",
    unit="{job}",
    description="Outcomes (results, retries) a worker wrote after its lease had passed to another claim.",
)
job_duration = meter.create_histogram(
    "arq_mediator.job.duration", unit="s", description="Time a handler ran, per try."
)
queue_wait = meter.create_histogram(
    "arq_mediator.job.queue_wait", unit="s", description="Time from when a job could start to when it did."
)
# Depths the workers saw at their last heartbeat, read by the gauge below when metrics are collected.
queue_depths: dict[str, int] = {}


def _observe_depths(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(depth, {"messaging.destination.name": queue}) for queue, depth in queue_depths.items()
    ]


meter.create_observable_gauge(
    "arq_mediator.queue.depth",
    callbacks=[_observe_depths],
    unit="{job}",
    description="Jobs ready or running per queue, as the workers of this process last saw them.",
)


# The API's own providers: with one of these no SDK is set. A tuple made once, as this is asked per job.
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def tracing_enabled() -> bool:
    """Return whether a real tracer provider (an SDK) is set, rather than the API's no-op default."""
    return not isinstance(trace.get_tracer_provider(), _NO_SDK)


def start_producer_span(queue: str, message_name: str, job_id: str) -> tuple[Span, dict[str, str]]:
    """Start the PRODUCER span of one enqueued job; return it and the trace context to put in the job.

    The context is injected from inside the span, so the consumer becomes the span's child.
    """
    span = tracer.start_span(
        f"send {queue}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
            "arq_mediator.request.type": message_name,
        },
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, carrier


def start_consumer_span(
    queue: str, message_name: str, job_id: str, try_number: int, carrier: Mapping[str, str]
) -> Span:
    """Start the CONSUMER span of one try of a job, as the child of the span that enqueued it."""
    return tracer.start_span(
        f"process {queue}",
        context=propagate.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
            "arq_mediator.request.type": message_name,
            "arq_mediator.job.try": try_number,
        },
    )


def record_failure(span: Span, error: BaseException) -> None:
    """Mark *span* failed by *error*: the exception event, status ERROR and ``error.type``."""
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
    span.set_attribute("error.type", qualified_name(type(error)))


def traced_head(
    head: Callable[[Any, Any], Awaitable[Any]], message_name: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    """Wrap the head of an inline pipeline in an INTERNAL span named after the request type."""
    short_name = message_name.rpartition(".")[2]

    async def traced(message: Any, tail: Any) -> Any:
        with tracer.start_as_current_span(
            short_name, kind=SpanKind.INTERNAL, attributes={"arq_mediator.request.type": message_name}
        ):
            return await head(message, tail)

    return traced


class TraceContextFilter(logging.Filter):
    """Add ``trace_id`` and ``span_id`` (hex, or empty outside a span) to every log record it sees.

    Attach it to a handler and use ``%(trace_id)s`` in the format, so a log line leads to its trace.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp *record* with the current span's ids; never drop it."""
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.span_id = format(context.span_id, "016x") if context.is_valid else ""
        return True
