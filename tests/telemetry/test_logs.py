"""Trace ids in logs: `TraceContextFilter` stamps records with the current span's trace and span ids."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from arq_mediator import Context, Mediator, Request, TraceContextFilter

from ..jobs.conftest import running_worker
from ..jobs.waiting import FAST
from .conftest import Telemetry, ids

tracer = trace.get_tracer("tests.telemetry")
logger = logging.getLogger("tests.telemetry.logs")


class Chore(Request[str]):
    name: str


async def chore(request: Chore, ctx: Context) -> str:
    ctx.logger.info("doing chore %s", request.name)
    return request.name


@pytest.fixture
def stamped(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Return caplog with a `TraceContextFilter` on its handler, capturing INFO and up."""
    log_filter = TraceContextFilter()
    caplog.handler.addFilter(log_filter)
    caplog.set_level(logging.INFO)
    yield caplog
    caplog.handler.removeFilter(log_filter)


def register(mediator: Mediator) -> None:
    """Register the handler the `mediator` fixture opens with."""
    mediator.handler(queue="chores")(chore)


def stamp(record: logging.LogRecord) -> tuple[str, str]:
    """Return the (trace_id, span_id) the filter put on *record*."""
    return record.__dict__["trace_id"], record.__dict__["span_id"]


def record_of(caplog: pytest.LogCaptureFixture, message: str) -> logging.LogRecord:
    """Return the one captured record whose message is *message*."""
    [record] = [record for record in caplog.records if record.getMessage() == message]
    return record


def test_a_record_inside_a_span_carries_its_ids(stamped: pytest.LogCaptureFixture) -> None:
    """A record logged inside a span gets its trace id (32 hex digits) and span id (16 hex digits)."""
    with tracer.start_as_current_span("work") as span:
        logger.info("inside")

    trace_id, span_id = stamp(record_of(stamped, "inside"))
    context = span.get_span_context()
    assert trace_id == format(context.trace_id, "032x")
    assert span_id == format(context.span_id, "016x")
    assert (len(trace_id), len(span_id)) == (32, 16)


def test_a_record_outside_any_span_carries_empty_ids(stamped: pytest.LogCaptureFixture) -> None:
    """A record logged where no span is current gets empty trace and span ids, and is kept."""
    logger.info("outside")

    assert stamp(record_of(stamped, "outside")) == ("", "")


def test_the_filter_never_drops_a_record() -> None:
    """`filter` returns True inside and outside a span, so it only ever adds fields."""
    log_filter = TraceContextFilter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "message", None, None)

    assert log_filter.filter(record) is True
    with tracer.start_as_current_span("work"):
        assert log_filter.filter(record) is True
    assert stamp(record)[0] != ""


async def test_a_job_handlers_log_record_carries_the_consumer_spans_ids(
    mediator: Mediator, telemetry: Telemetry, stamped: pytest.LogCaptureFixture
) -> None:
    """`ctx.logger` in a job handler logs under the job's CONSUMER span, so the record leads to its trace."""
    with tracer.start_as_current_span("http request") as request_span:
        handle = await mediator.enqueue(Chore(name="dishes"))
    async with running_worker(mediator, queues=["chores"], **FAST):
        assert await handle.result(timeout=5) == "dishes"
        [consumer] = await telemetry.wait_for_spans(1, "process chores", SpanKind.CONSUMER)

    record = record_of(stamped, "doing chore dishes")
    trace_id, span_id = ids(consumer)
    assert stamp(record) == (format(trace_id, "032x"), format(span_id, "016x"))
    assert trace_id == request_span.get_span_context().trace_id
    assert record.__dict__["job_id"] == handle.id  # the job logger's own extra, alongside
