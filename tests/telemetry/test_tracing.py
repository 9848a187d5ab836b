"""Traces across the queue: producer and consumer spans, their parents, retries, failures, inline spans."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from arq_mediator import Backoff, Context, JobFailedError, Mediator, Notification, RecurringJob, Request
from arq_mediator._jobs import now_ms
from arq_mediator._telemetry import tracer as library_tracer
from arq_mediator._telemetry import tracing_enabled
from tests.keys import job_key, queue_key

from ..jobs.conftest import BaseProbe, running_worker
from ..jobs.waiting import FAST
from .conftest import Telemetry, assert_child, attribute, by_attribute, ids, parent_id

tracer = trace.get_tracer("tests.telemetry")


class Greet(Request[str]):
    name: str


class Order(Request[str]):
    item: str


class Ship(Request[str]):
    item: str


class SignedUp(Notification):
    user: str


class Flaky(Request[int]):
    pass


class Doomed(Request[int]):
    pass


class Tick(Request[int]):
    pass


class Ping(Request[str]):
    pass


class Pinged(Notification):
    pass


class FlakyError(Exception):
    """What Flaky raises on its first two tries."""


@dataclass
class Probe(BaseProbe):
    """Per-test state: the tries Flaky saw and the notification handlers that ran."""

    flaky_tries: list[int] = field(default_factory=list)
    welcomed: list[str] = field(default_factory=list)


async def greet(request: Greet, ctx: Context) -> str:
    with tracer.start_as_current_span("greeting"), tracer.start_as_current_span("greeting detail"):
        return f"hello {request.name}"


async def take_order(request: Order, ctx: Context) -> str:
    handle = await ctx.mediator.enqueue(Ship(item=request.item))
    return handle.id


async def ship(request: Ship, ctx: Context) -> str:
    return f"shipped {request.item}"


async def welcome(notification: SignedUp, ctx: Context) -> None:
    ctx.resource(Probe).welcomed.append("welcome")


async def audit(notification: SignedUp, ctx: Context) -> None:
    ctx.resource(Probe).welcomed.append("audit")


async def bill(notification: SignedUp, ctx: Context) -> None:
    ctx.resource(Probe).welcomed.append("bill")


async def flaky(request: Flaky, ctx: Context) -> int:
    assert ctx.job is not None
    ctx.resource(Probe).flaky_tries.append(ctx.job.try_number)
    if ctx.job.try_number < 3:
        raise FlakyError(f"try {ctx.job.try_number} fails")
    return ctx.job.try_number


async def doomed(request: Doomed, ctx: Context) -> int:
    raise ValueError("doomed for good")


async def tick(request: Tick, ctx: Context) -> int:
    return 1


async def ping(request: Ping, ctx: Context) -> str:
    with tracer.start_as_current_span("pong"):
        return "pong"


async def on_ping_a(notification: Pinged, ctx: Context) -> None:
    pass


async def on_ping_b(notification: Pinged, ctx: Context) -> None:
    pass


QUEUES = ["greet", "orders", "shipping", "signups", "flaky", "doomed", "ticks"]
FLAKY_ERROR = f"{FlakyError.__module__}.{FlakyError.__qualname__}"


def register(mediator: Mediator) -> None:
    """Register the handlers the `mediator` fixture opens with (after the autouse `telemetry` fixture set
    the SDK, so its inline routes are traced)."""
    mediator.handler(queue="greet")(greet)
    mediator.handler(queue="orders")(take_order)
    mediator.handler(queue="shipping")(ship)
    for handler in (welcome, audit, bill):
        mediator.handler(queue="signups")(handler)
    mediator.handler(queue="flaky", max_tries=3, backoff=Backoff(initial=0.01, jitter=0))(flaky)
    mediator.handler(queue="doomed")(doomed)
    mediator.handler(queue="ticks")(tick)
    mediator.handler(ping)
    mediator.handler(on_ping_a)
    mediator.handler(on_ping_b)


class DueAtFirstLook:
    """A stand-in schedule: due the moment a schedule loop first looks at it, then not for a day.

    The tick does not depend on when the worker starts: a worker that starts late on a loaded machine
    still finds it due at once, where a tick fixed in advance could already lie behind it.
    """

    def __init__(self) -> None:
        self.looked = False

    def next_after(self, moment: datetime) -> datetime:
        if self.looked:
            return moment + timedelta(days=1)
        self.looked = True
        return moment


def fire_soon(mediator: Mediator) -> RecurringJob:
    """Register a Tick schedule (under a fresh name), due as soon as a worker's schedule loop starts."""
    entry = mediator.recurring(Tick(), cron="0 0 1 1 *", name=f"tick-{uuid.uuid4().hex[:12]}")
    object.__setattr__(entry, "schedule", DueAtFirstLook())
    return entry


# Jobs -------------------------------------------------------------------------------------------------


async def test_enqueue_starts_a_producer_span_with_messaging_attributes(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """Enqueueing ends a PRODUCER span `send <queue>` with the messaging attributes of the job."""
    handle = await mediator.enqueue(Greet(name="ada"))

    [producer] = telemetry.spans()
    assert (producer.name, producer.kind) == ("send greet", SpanKind.PRODUCER)
    assert producer.parent is None
    assert producer.status.status_code == StatusCode.UNSET
    assert producer.attributes == {
        "messaging.system": "arq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "greet",
        "messaging.message.id": handle.id,
        "arq_mediator.request.type": Greet.message_name,
    }


async def test_the_envelope_carries_the_producer_spans_trace_context(
    mediator: Mediator, telemetry: Telemetry, redis_url: str
) -> None:
    """The job's envelope holds a W3C traceparent naming the producer span, injected inside it."""
    handle = await mediator.enqueue(Greet(name="ada"))

    client: Redis = Redis.from_url(redis_url)
    try:
        raw = await client.get(job_key(handle.id))
    finally:
        await client.aclose()
    assert raw is not None
    [producer] = telemetry.spans("send greet")
    assert producer.context is not None
    trace_id, span_id = ids(producer)
    flags = producer.context.trace_flags
    assert flags.sampled
    assert json.loads(raw)["trace"] == {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"}


async def test_the_consumer_span_is_the_child_of_the_producer_span(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """The worker's CONSUMER span `process <queue>` has the producer span as parent, with try 1."""
    handle = await mediator.enqueue(Greet(name="ada"))
    async with running_worker(mediator, queues=["greet"], **FAST):
        assert await handle.result(timeout=5) == "hello ada"
        [consumer] = await telemetry.wait_for_spans(1, "process greet", SpanKind.CONSUMER)

    [producer] = telemetry.spans("send greet", SpanKind.PRODUCER)
    assert_child(consumer, producer)
    assert consumer.status.status_code == StatusCode.UNSET
    assert consumer.attributes is not None
    assert dict(consumer.attributes) == {
        "messaging.system": "arq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "greet",
        "messaging.message.id": handle.id,
        "arq_mediator.request.type": Greet.message_name,
        "arq_mediator.job.try": 1,
    }


async def test_the_handlers_own_spans_are_children_of_the_consumer_span(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """Spans a handler starts nest under the job's CONSUMER span, in the same trace."""
    handle = await mediator.enqueue(Greet(name="ada"))
    async with running_worker(mediator, queues=["greet"], **FAST):
        await handle.result(timeout=5)
        [consumer] = await telemetry.wait_for_spans(1, "process greet", SpanKind.CONSUMER)

    [greeting] = telemetry.spans("greeting", SpanKind.INTERNAL)
    [detail] = telemetry.spans("greeting detail", SpanKind.INTERNAL)
    assert_child(greeting, consumer)
    assert_child(detail, greeting)


async def test_enqueue_inside_a_span_makes_the_producer_its_child(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """A job enqueued inside an active span joins its trace: that span -> producer -> consumer."""
    with tracer.start_as_current_span("http request", kind=SpanKind.SERVER) as request_span:
        handle = await mediator.enqueue(Greet(name="ada"))
    async with running_worker(mediator, queues=["greet"], **FAST):
        await handle.result(timeout=5)
        [consumer] = await telemetry.wait_for_spans(1, "process greet", SpanKind.CONSUMER)

    [producer] = telemetry.spans("send greet", SpanKind.PRODUCER)
    assert_child(producer, request_span)
    assert_child(consumer, producer)
    [request] = telemetry.spans("http request")
    assert request.parent is None
    assert {span.context.trace_id for span in telemetry.spans() if span.context is not None} == {
        request_span.get_span_context().trace_id
    }


async def test_a_follow_up_job_continues_the_trace(mediator: Mediator, telemetry: Telemetry) -> None:
    """A handler's follow-up job: its producer is the first consumer's child, its consumer that producer's."""
    with tracer.start_as_current_span("http request") as request_span:
        handle = await mediator.enqueue(Order(item="book"))
    async with running_worker(mediator, queues=["orders", "shipping"], **FAST):
        ship_id = await handle.result(timeout=5)
        assert await mediator.job(ship_id, Ship).result(timeout=5) == "shipped book"
        [second_consumer] = await telemetry.wait_for_spans(1, "process shipping", SpanKind.CONSUMER)
        [first_consumer] = await telemetry.wait_for_spans(1, "process orders", SpanKind.CONSUMER)

    [first_producer] = telemetry.spans("send orders", SpanKind.PRODUCER)
    [second_producer] = telemetry.spans("send shipping", SpanKind.PRODUCER)
    assert_child(first_producer, request_span)
    assert_child(first_consumer, first_producer)
    assert_child(second_producer, first_consumer)
    assert_child(second_consumer, second_producer)
    assert attribute(second_producer, "messaging.message.id") == ship_id
    assert attribute(second_consumer, "messaging.message.id") == ship_id


async def test_a_notifications_fan_out_jobs_are_children_of_the_publishing_span(
    mediator: Mediator, telemetry: Telemetry, probe: Probe
) -> None:
    """A notification enqueued to N handlers: N producers under the publishing span, a consumer under each."""
    with tracer.start_as_current_span("http request") as request_span:
        handles = await mediator.enqueue_publish(SignedUp(user="ada"))
    assert len(handles) == 3
    async with running_worker(mediator, queues=["signups"], **FAST):
        for handle in handles:
            await handle.result(timeout=5)
        consumers = await telemetry.wait_for_spans(3, "process signups", SpanKind.CONSUMER)

    assert sorted(probe.welcomed) == ["audit", "bill", "welcome"]
    producers = by_attribute(telemetry.spans("send signups", SpanKind.PRODUCER), "messaging.message.id")
    assert set(producers) == {handle.id for handle in handles}
    for producer in producers.values():
        assert_child(producer, request_span)
        assert attribute(producer, "arq_mediator.request.type") == SignedUp.message_name
    for job_id, consumer in by_attribute(consumers, "messaging.message.id").items():
        assert_child(consumer, producers[job_id])


async def test_each_try_of_a_retried_job_is_a_consumer_span_under_the_same_producer(
    mediator: Mediator, telemetry: Telemetry, probe: Probe
) -> None:
    """Tries 1 and 2 fail (ERROR, error.type, exception event, retried), try 3 succeeds; one producer."""
    handle = await mediator.enqueue(Flaky())
    async with running_worker(mediator, queues=["flaky"], **FAST):
        assert await handle.result(timeout=5) == 3
        consumers = await telemetry.wait_for_spans(3, "process flaky", SpanKind.CONSUMER)

    assert probe.flaky_tries == [1, 2, 3]
    [producer] = telemetry.spans("send flaky", SpanKind.PRODUCER)
    tries = by_attribute(consumers, "arq_mediator.job.try")
    assert sorted(tries) == [1, 2, 3]
    for number in (1, 2, 3):
        assert_child(tries[number], producer)
        assert attribute(tries[number], "messaging.message.id") == handle.id
    for number in (1, 2):
        failed = tries[number]
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.status.description == f"try {number} fails"
        assert attribute(failed, "error.type") == FLAKY_ERROR
        assert attribute(failed, "arq_mediator.job.outcome") == "retried"
        [event] = [event for event in failed.events if event.name == "exception"]
        assert event.attributes is not None
        assert event.attributes["exception.type"] == FLAKY_ERROR
        assert event.attributes["exception.message"] == f"try {number} fails"
    succeeded = tries[3]
    assert succeeded.status.status_code != StatusCode.ERROR
    assert attribute(succeeded, "error.type") is None
    assert not [event for event in succeeded.events if event.name == "exception"]


async def test_a_job_failing_for_good_marks_its_consumer_span_failed(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """A job that fails with no try left: status ERROR, error.type, an exception event, outcome failed."""
    handle = await mediator.enqueue(Doomed())
    async with running_worker(mediator, queues=["doomed"], **FAST):
        with pytest.raises(JobFailedError):
            await handle.result(timeout=5)
        [consumer] = await telemetry.wait_for_spans(1, "process doomed", SpanKind.CONSUMER)

    assert consumer.status.status_code == StatusCode.ERROR
    assert consumer.status.description == "doomed for good"
    assert attribute(consumer, "error.type") == "builtins.ValueError"
    assert attribute(consumer, "arq_mediator.job.outcome") == "failed"
    assert [event.name for event in consumer.events] == ["exception"]
    [producer] = telemetry.spans("send doomed", SpanKind.PRODUCER)
    assert producer.status.status_code == StatusCode.UNSET  # enqueueing it went fine
    assert_child(consumer, producer)


async def test_an_idempotent_repeat_enqueue_marks_its_producer_span(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """Enqueueing a job id that is already queued ends a producer span flagged arq_mediator.job.existing."""
    await mediator.enqueue(Greet(name="ada"), job_id="greet-once")
    await mediator.enqueue(Greet(name="ada"), job_id="greet-once")

    first, second = telemetry.spans("send greet", SpanKind.PRODUCER)
    assert attribute(first, "arq_mediator.job.existing") is None
    assert attribute(second, "arq_mediator.job.existing") is True


async def test_a_recurring_tick_starts_a_root_producer_span(mediator: Mediator, telemetry: Telemetry) -> None:
    """A tick enqueued by a worker's schedule loop starts a new trace: a root producer, its consumer below."""
    entry = fire_soon(mediator)
    assert trace.get_current_span() is trace.INVALID_SPAN
    async with running_worker(mediator, queues=["ticks"], **FAST):
        [consumer] = await telemetry.wait_for_spans(1, "process ticks", SpanKind.CONSUMER)

    [producer] = telemetry.spans("send ticks", SpanKind.PRODUCER)
    assert producer.parent is None
    assert str(attribute(producer, "messaging.message.id")).startswith(f"recurring:{entry.name}:")
    assert_child(consumer, producer)


async def test_a_tick_enqueued_directly_outside_any_span_is_a_root(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """`enqueue_tick` called where no span is current starts a root producer span."""
    entry = mediator.recurring(Tick(), cron="@hourly", name=f"tick-{uuid.uuid4().hex[:12]}")
    assert await mediator.enqueue_tick(entry, datetime(2030, 1, 1, tzinfo=UTC))

    [producer] = telemetry.spans("send ticks", SpanKind.PRODUCER)
    assert producer.parent is None
    assert attribute(producer, "messaging.message.id") == f"recurring:{entry.name}:1893456000"


async def test_a_tick_of_a_worker_started_inside_a_span_is_still_a_root(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """A recurring tick starts a new trace even when the worker itself was started inside a span."""
    fire_soon(mediator)
    with tracer.start_as_current_span("service main"):
        async with running_worker(mediator, queues=["ticks"], **FAST):
            await telemetry.wait_for_spans(1, "process ticks", SpanKind.CONSUMER)

    [producer] = telemetry.spans("send ticks", SpanKind.PRODUCER)
    assert producer.parent is None


async def test_a_rejected_job_leaves_the_span_the_worker_runs_in_alone(
    mediator: Mediator, telemetry: Telemetry, redis_url: str
) -> None:
    """A job body the worker rejects does not mark whatever span the worker was started in as failed."""
    job_id = f"unreadable-{uuid.uuid4().hex}"
    client: Redis = Redis.from_url(redis_url)
    try:
        await client.set(job_key(job_id), b"not json at all")
        await client.zadd(queue_key("greet"), {job_id: now_ms()})
    finally:
        await client.aclose()
    with tracer.start_as_current_span("service main") as main:
        async with running_worker(mediator, queues=["greet"], **FAST):
            with pytest.raises(JobFailedError):
                await mediator.job(job_id).result(timeout=5)

    assert main.is_recording() is False
    [recorded] = telemetry.spans("service main")
    assert recorded.status.status_code == StatusCode.UNSET
    assert attribute(recorded, "error.type") is None
    assert attribute(recorded, "arq_mediator.job.outcome") is None


# Inline -----------------------------------------------------------------------------------------------


def test_tracing_is_enabled_with_the_sdk_set(telemetry: Telemetry) -> None:
    """`tracing_enabled()` sees the SDK's tracer provider."""
    assert tracing_enabled()


def test_the_librarys_import_time_tracer_delegates_to_the_sdk(telemetry: Telemetry) -> None:
    """The tracer the library took from the API proxy at import records spans through the SDK set later."""
    with library_tracer.start_as_current_span("through the proxy") as span:
        assert span.is_recording()

    [recorded] = telemetry.spans("through the proxy")
    assert recorded.instrumentation_scope is not None
    assert recorded.instrumentation_scope.name == "arq_mediator"


async def test_inline_send_gets_an_internal_span_named_after_the_request_type(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """`send` runs in an INTERNAL span named after the request type, the child of the current span."""
    with tracer.start_as_current_span("http request") as request_span:
        assert await mediator.send(Ping()) == "pong"

    [inline] = telemetry.spans("Ping")
    assert inline.kind == SpanKind.INTERNAL
    assert attribute(inline, "arq_mediator.request.type") == Ping.message_name
    assert_child(inline, request_span)
    [pong] = telemetry.spans("pong")
    assert_child(pong, inline)


async def test_inline_send_outside_a_span_starts_a_root_span(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """`send` with no current span starts a trace of its own."""
    await mediator.send(Ping())
    await mediator.send(Ping())

    first, second = telemetry.spans("Ping", SpanKind.INTERNAL)
    assert parent_id(first) is None
    assert parent_id(second) is None
    assert ids(first)[0] != ids(second)[0]


async def test_inline_publish_gets_an_internal_span_per_handler(
    mediator: Mediator, telemetry: Telemetry
) -> None:
    """`publish` runs each handler in an INTERNAL span named after the notification type."""
    with tracer.start_as_current_span("http request") as request_span:
        await mediator.publish(Pinged())

    spans = telemetry.spans("Pinged", SpanKind.INTERNAL)
    assert len(spans) == 2
    assert len({ids(span)[1] for span in spans}) == 2
    for span in spans:
        assert_child(span, request_span)
        assert attribute(span, "arq_mediator.request.type") == Pinged.message_name
