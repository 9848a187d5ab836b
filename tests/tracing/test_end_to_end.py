"""One trace from HTTP to worker: the API and the workers as OS processes, exporting real OTLP to a receiver.

Each test starts the API (uvicorn) and workers (``python -m services.worker``) on real Redis and PostgreSQL,
with the standard OpenTelemetry environment pointing at an OTLP/HTTP receiver in the test, calls the API,
and asserts on the spans the processes exported: their trace ids, parents, kinds and service names.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from tests.processes import ManagedProcess
from tests.tracing.conftest import SCHEDULE_DELAY_MS, TracedStack
from tests.tracing.otlp_receiver import ReceivedSpan

SERVER = "SPAN_KIND_SERVER"
PRODUCER = "SPAN_KIND_PRODUCER"
CONSUMER = "SPAN_KIND_CONSUMER"
CLIENT = "SPAN_KIND_CLIENT"
INTERNAL = "SPAN_KIND_INTERNAL"
ERROR = "STATUS_CODE_ERROR"
WORKERS = ("worker-general", "worker-heavy")
# Generous: spans leave each process within a fifth of a second of ending.
SPANS_TIMEOUT = 15.0
# The emails queue retries after 1 s, then 2 s (with jitter), polled for due jobs: three tries take ~4 s.
RETRIES_TIMEOUT = 20.0
MIXED_WORKLOAD = "/api/distributeddemo/mixed-workload"


# --- walking the spans ------------------------------------------------------------------------------


def index(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    """Return *spans* by span id."""
    return {span.span_id: span for span in spans}


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> Iterator[ReceivedSpan]:
    """Yield the parent of *span*, its parent, and so on, as far as the received spans reach."""
    seen = {span.span_id}
    while span.parent_span_id in by_id and span.parent_span_id not in seen:
        span = by_id[span.parent_span_id]
        seen.add(span.span_id)
        yield span


def descendants(root: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Return every received span below *root* in its trace."""
    by_id = index(spans)
    return [
        span
        for span in spans
        if span.trace_id == root.trace_id and any(a.span_id == root.span_id for a in ancestors(span, by_id))
    ]


def children(parent: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Return the received spans whose parent is *parent*."""
    return [
        span for span in spans if span.parent_span_id == parent.span_id and span.trace_id == parent.trace_id
    ]


def producer_of(job_id: str, spans: list[ReceivedSpan]) -> ReceivedSpan | None:
    """Return the PRODUCER span that enqueued job *job_id*, once received."""
    found = [s for s in spans if s.kind == PRODUCER and s.attributes.get("messaging.message.id") == job_id]
    assert len(found) <= 1, f"job {job_id} was sent by more than one span: {found}"
    return found[0] if found else None


def consumers_of(job_id: str, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Return the CONSUMER spans of every try of job *job_id* received so far, in try order."""
    found = [s for s in spans if s.kind == CONSUMER and s.attributes.get("messaging.message.id") == job_id]
    return sorted(found, key=lambda span: int(span.attributes["arq_mediator.job.try"]))


def server_span(path: str, spans: list[ReceivedSpan]) -> ReceivedSpan | None:
    """Return the API's SERVER span of the one ``POST *path*`` request, once received."""
    found = [s for s in spans if s.kind == SERVER and s.service == "api" and s.name == f"POST {path}"]
    assert len(found) <= 1, f"more than one request to {path}: {found}"
    return found[0] if found else None


def explain(spans: list[ReceivedSpan]) -> str:
    """Return the received spans, one a line, for assertion messages."""
    return "\n".join(span.describe() for span in sorted(spans, key=lambda span: span.start_ns))


# --- running the stack ------------------------------------------------------------------------------


async def start(stack: TracedStack, *profiles: str, **variables: str) -> list[ManagedProcess]:
    """Start the API and a worker of each of *profiles* with *variables*; return the workers once up."""
    stack.start_api()
    workers = [stack.start_worker(profile, **variables) for profile in profiles]
    await stack.ready(workers)
    return workers


async def mixed_workload(client: httpx.AsyncClient, reports: int, users: int) -> list[dict[str, Any]]:
    """Run the mixed workload and return its items (every job succeeded)."""
    answer = await client.post(MIXED_WORKLOAD, params={"reportCount": reports, "userCount": users})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    assert [item["status"] for item in items] == ["succeeded"] * (reports + users), items
    return items


async def failing_email(stack: TracedStack) -> tuple[ReceivedSpan, list[ReceivedSpan], ManagedProcess]:
    """Schedule one email that every try fails to deliver; wait for its three tries' spans.

    Returns:
        The API's PRODUCER span of the email job, the CONSUMER spans of its tries, and the worker.
    """
    (worker,) = await start(stack, "general", EMAIL_FAILURE_RATE="1")
    answer = await stack.client.post(
        "/api/distributeddemo/scheduled-cascade", params={"count": 1, "intervalSeconds": 0}
    )
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["jobs"][0]["jobId"]

    def three_tries(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, list[ReceivedSpan]] | None:
        producer, tries = producer_of(job_id, spans), consumers_of(job_id, spans)
        return (producer, tries) if producer is not None and len(tries) >= 3 else None

    producer, tries = await stack.receiver.wait_for(
        three_tries, RETRIES_TIMEOUT, what=f"the producer span and three consumer spans of job {job_id}"
    )
    return producer, tries, worker


# --- the tests --------------------------------------------------------------------------------------


async def test_one_trace_joins_the_request_the_enqueue_the_worker_and_its_queries(stack: TracedStack) -> None:
    """A report job and a create-user job each form one trace: SERVER -> PRODUCER -> worker CONSUMER -> DB."""
    await start(stack, "general", "heavy")
    items = await mixed_workload(stack.client, reports=2, users=2)
    report = next(item for item in items if item["kind"] == "report")
    user = next(item for item in items if item["kind"] == "user")

    def arrived(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        # A process exports spans in the order they end: a consumer span ends after its queries' spans.
        done = server_span(MIXED_WORKLOAD, spans) and all(
            consumers_of(item["jobId"], spans) for item in (report, user)
        )
        return spans if done else None

    spans = await stack.receiver.wait_for(arrived, SPANS_TIMEOUT, what="the request's and both jobs' spans")
    request = server_span(MIXED_WORKLOAD, spans)
    assert request is not None
    by_id = index(spans)
    for item, queue, table in ((report, "reports", "reports"), (user, "critical", "users")):
        producer = producer_of(item["jobId"], spans)
        assert producer is not None, explain(spans)
        assert (producer.name, producer.kind, producer.service) == (f"send {queue}", PRODUCER, "api")
        assert producer.parent_span_id == request.span_id, explain(spans)
        assert producer.trace_id == request.trace_id

        (consumer,) = consumers_of(item["jobId"], spans)
        assert (consumer.name, consumer.kind) == (f"process {queue}", CONSUMER)
        assert consumer.service in WORKERS
        assert consumer.parent_span_id == producer.span_id
        assert consumer.trace_id == request.trace_id
        assert consumer.attributes["messaging.system"] == "arq"
        assert consumer.attributes["messaging.destination.name"] == queue

        queries = [
            s for s in descendants(consumer, spans) if s.kind == CLIENT and "db.system" in s.attributes
        ]
        assert queries, f"no database span under {consumer.describe()}:\n{explain(spans)}"
        assert all(query.service == consumer.service for query in queries)
        assert all(query.attributes["db.system"] == "postgresql" for query in queries)
        inserts = [
            q for q in queries if str(q.attributes.get("db.statement", "")).startswith(f"INSERT INTO {table}")
        ]
        assert inserts, [q.attributes.get("db.statement") for q in queries]
        # The whole chain, from the query up to the request: the handler's work, then the queue, then HTTP.
        path = [span.span_id for span in ancestors(inserts[0], by_id)]
        assert consumer.span_id in path, path
        assert path[path.index(consumer.span_id) :] == [consumer.span_id, producer.span_id, request.span_id]


async def test_the_fan_out_of_a_handler_continues_the_trace_into_the_workers(stack: TracedStack) -> None:
    """The create-user job's UserCreated fan-out is sent under its CONSUMER span and consumed in its trace."""
    await start(stack, "general", "heavy")
    (user,) = await mixed_workload(stack.client, reports=0, users=1)

    def fanned_out(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        creating = consumers_of(user["jobId"], spans)
        if not creating or server_span(MIXED_WORKLOAD, spans) is None:
            return None
        sent = [s for s in descendants(creating[0], spans) if s.kind == PRODUCER]
        done = len(sent) >= 2 and all(children(producer, spans) for producer in sent)
        return spans if done else None

    spans = await stack.receiver.wait_for(
        fanned_out, SPANS_TIMEOUT, what="the fan-out jobs' producer and consumer spans"
    )
    (creating,) = consumers_of(user["jobId"], spans)
    assert (creating.name, creating.kind) == ("process critical", CONSUMER)
    request = server_span(MIXED_WORKLOAD, spans)
    assert request is not None
    assert creating.trace_id == request.trace_id

    sent = sorted((s for s in descendants(creating, spans) if s.kind == PRODUCER), key=lambda s: s.name)
    assert [(s.name, s.service) for s in sent] == [
        ("send default", creating.service),
        ("send emails", creating.service),
    ], explain(spans)
    assert {s.attributes["arq_mediator.request.type"] for s in sent} == {"demo.UserCreated"}
    for producer in sent:
        queue = producer.attributes["messaging.destination.name"]
        (consumer,) = children(producer, spans)
        assert (consumer.name, consumer.kind) == (f"process {queue}", CONSUMER)
        assert consumer.service.startswith("worker-")
        assert consumer.trace_id == request.trace_id
        assert consumer.attributes["messaging.message.id"] == producer.attributes["messaging.message.id"]
    # The welcome-email job sends its SendEmail inline: an INTERNAL span under that job's consumer.
    emailing = next(s for s in spans if s.name == "process emails" and s.parent_span_id in index(sent))
    assert [(s.name, s.kind) for s in children(emailing, spans)] == [("SendEmail", INTERNAL)], explain(spans)


async def test_a_retried_job_has_one_consumer_span_per_try_under_its_producer(stack: TracedStack) -> None:
    """An email failing three times shows three failed CONSUMER spans, tries 1-3, under one PRODUCER span."""
    producer, tries, _ = await failing_email(stack)
    assert (producer.name, producer.kind, producer.service) == ("send emails", PRODUCER, "api")
    assert [span.attributes["arq_mediator.job.try"] for span in tries] == [1, 2, 3]
    assert len({span.span_id for span in tries}) == 3
    for span in tries:
        assert (span.name, span.kind, span.service) == ("process emails", CONSUMER, "worker-general")
        assert span.parent_span_id == producer.span_id
        assert span.trace_id == producer.trace_id
        assert span.status == ERROR
        assert str(span.attributes["error.type"]).endswith("EmailDeliveryFailed")
        assert "exception" in span.events
    assert [span.attributes["arq_mediator.job.outcome"] for span in tries] == ["retried", "retried", "failed"]
    assert tries[0].end_ns <= tries[1].start_ns
    assert tries[1].end_ns <= tries[2].start_ns


async def test_worker_log_lines_carry_the_trace_and_span_of_their_try(stack: TracedStack) -> None:
    """The worker's retry warnings and final error carry the trace and span ids of their try's consumer."""
    producer, tries, worker = await failing_email(stack)
    job_id = tries[0].attributes["messaging.message.id"]
    output = await worker.printed(f"job {job_id} failed for good", timeout=5.0)
    ids = r"\[trace_id=(?P<trace>[0-9a-f]{32}) span_id=(?P<span>[0-9a-f]{16})\]"
    retried = {
        int(match["try"]): (match["trace"], match["span"])
        for match in re.finditer(
            rf"WARNING arq_mediator\.worker {ids}: job {job_id} \S+ try (?P<try>\d)/3 failed", output
        )
    }
    failed = re.findall(rf"ERROR arq_mediator\.worker {ids}: job {job_id} failed for good", output)
    assert retried == {
        1: (producer.trace_id, tries[0].span_id),
        2: (producer.trace_id, tries[1].span_id),
    }, output
    assert failed == [(producer.trace_id, tries[2].span_id)], output


async def test_a_stopped_worker_flushes_its_last_spans_on_the_way_out(stack: TracedStack) -> None:
    """A worker whose exporter would wait ten minutes still delivers its spans when stopped by SIGTERM."""
    stack.start_api()
    worker = stack.start_worker("general", OTEL_BSP_SCHEDULE_DELAY="600000")
    await stack.ready([worker])
    (user,) = await mixed_workload(stack.client, reports=0, users=1)
    # The fan-out jobs were queued before the create-user job finished; wait until they ran too.
    for _ in range(200):
        totals = (await stack.client.get("/api/distributeddemo/worker-stats")).json()["totals"]
        if totals["ready"] + totals["running"] + totals["deferred"] == 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the fan-out jobs did not finish: {totals}")

    await stack.receiver.wait_for(lambda spans: server_span(MIXED_WORKLOAD, spans), SPANS_TIMEOUT)
    await asyncio.sleep(2 * SCHEDULE_DELAY_MS / 1000)  # what the API exported in the meantime, only
    assert not [s for s in stack.receiver.spans() if s.service == "worker-general"], stack.receiver.report()

    assert await worker.stop() == 0, worker.output()

    spans = stack.receiver.spans()  # the exporter posted before the process exited
    (creating,) = consumers_of(user["jobId"], spans)
    assert creating.service == "worker-general"
    fan_out = [s for s in descendants(creating, spans) if s.kind == CONSUMER]
    assert sorted(s.name for s in fan_out) == ["process default", "process emails"], explain(spans)


async def test_the_processes_export_the_job_metrics(stack: TracedStack) -> None:
    """The API exports jobs enqueued; the workers (gzip) processed, duration, queue wait and queue depth."""
    await start(stack, "general", "heavy")
    await mixed_workload(stack.client, reports=1, users=1)
    api = {"arq_mediator.jobs.enqueued"}
    workers = {
        "arq_mediator.jobs.enqueued",  # the create-user handler's fan-out
        "arq_mediator.jobs.processed",
        "arq_mediator.job.duration",
        "arq_mediator.job.queue_wait",
        "arq_mediator.queue.depth",
    }

    def exported(pairs: list[tuple[str, str]]) -> bool:
        by_api = {name for service, name in pairs if service == "api"}
        by_workers = {name for service, name in pairs if service in WORKERS}
        return api <= by_api and workers <= by_workers

    await stack.receiver.wait_for_metrics(exported, SPANS_TIMEOUT, what=f"api: {api}; workers: {workers}")
    assert stack.receiver.encodings() == {"identity", "gzip"}
    assert not stack.receiver.errors()


async def test_a_user_created_through_the_outbox_keeps_the_request_trace_in_its_fan_out(
    stack: TracedStack,
) -> None:
    """POST /api/users writes the fan-out to the outbox; the relayed jobs' spans join the request's trace."""
    await start(stack, "general")
    email = f"traced-{uuid.uuid4().hex[:8]}@example.com"
    answer = await stack.client.post("/api/users", json={"email": email, "name": "Traced"})
    assert answer.status_code == 201, answer.text

    def fanned_out(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
        consumers = [
            s
            for s in spans
            if s.kind == CONSUMER and s.attributes.get("arq_mediator.request.type") == "demo.UserCreated"
        ]
        return spans if len(consumers) >= 2 and server_span("/api/users", spans) is not None else None

    spans = await stack.receiver.wait_for(fanned_out, SPANS_TIMEOUT, what="the fan-out jobs' consumer spans")
    request = server_span("/api/users", spans)
    assert request is not None
    by_id = index(spans)
    for consumer in (s for s in spans if s.kind == CONSUMER):
        assert consumer.trace_id == request.trace_id, explain(spans)
        producer = by_id[consumer.parent_span_id]
        assert (producer.kind, producer.service) == (PRODUCER, "api")
        assert producer.attributes["arq_mediator.outbox"] == "arq_mediator_outbox"
        assert request.span_id in [span.span_id for span in ancestors(producer, by_id)]
