"""Build a job from a message: its id, its envelope's JSON, its PRODUCER span; and read a delay's options."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError

from ._envelope import dumps
from ._errors import MessageEncodingError
from ._jobs import PendingJob, now_ms
from ._live import current_job
from ._messages import Message, Request
from ._policy import to_seconds
from ._telemetry import start_producer_span

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from opentelemetry.trace import Span

    from ._layout import Layout
    from ._registry import HandlerSpec


def new_job_id() -> str:
    """Return a fresh job id: 96 random bits as 16 url-safe characters.

    Not arq's 32 hex digits of a uuid4 (122 bits): an id is repeated in every key and sorted-set entry
    of its job (job, queue, result, history, indexes), and at 16 characters each such string fits
    Redis's allocator a size class lower (``arq:result:<id>`` in 32 bytes, not 48). 96 bits stay
    unguessable, and two live jobs (queued, or with a result kept) share an id with a probability
    below 1e-13 with 1e8 of them; a shared id would make the second enqueue find the first.
    """
    return secrets.token_urlsafe(12)


def build_job(
    message: Message,
    spec: HandlerSpec,
    queue: str | None,
    job_id: str | None,
    max_tries: int | None,
    now: int,
    delay_ms: int,
    *,
    layout: Layout,
    max_job_bytes: int,
) -> tuple[PendingJob, Span]:
    """Return *message* as a job for *spec*'s handler, ready to push, with its PRODUCER span started.

    Raises:
        ValueError: *max_tries* is below 1.
        MessageEncodingError: the message cannot be encoded, or its job is over *max_job_bytes*.
    """
    if max_tries is not None and max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")
    queue = queue or spec.policy.queue
    job_id = layout.job_id(queue, job_id or new_job_id())
    message_name = type(message).message_name
    parent = current_job.get()
    span, trace_context = start_producer_span(queue, message_name, job_id)
    header: dict[str, Any] = {
        "id": job_id,
        "type": message_name,
        "queue": queue,
        "max_tries": max_tries or spec.policy.max_tries,
        "enqueued_at": now,
    }
    # What is default is left out (a queued job's envelope is most of its memory in Redis): version 1,
    # no handler for a request, due when enqueued, no trace context, no parent job.
    if not isinstance(message, Request):
        header["handler"] = spec.name
    if delay_ms:
        header["due_at"] = now + delay_ms
    if trace_context:
        header["trace"] = trace_context
    if parent is not None:
        header["meta"] = {"parent": parent}
    # The payload is serialized by pydantic's core and spliced in, rather than dumped to Python
    # objects and serialized again: the envelope's JSON is the hot part of enqueueing.
    try:
        payload = message.model_dump_json()
    except PydanticSerializationError as error:  # an `Any` field holding what JSON cannot carry, say
        span.end()
        raise MessageEncodingError(f"{message_name} cannot be sent as a job: {error}") from error
    body = dumps(header)[:-1] + ',"payload":' + payload + "}"
    if len(body) > max_job_bytes and len(body.encode()) > max_job_bytes:
        span.end()
        raise MessageEncodingError(
            f"{message_name} job is {len(body.encode())} bytes of JSON, over the limit of "
            f"{max_job_bytes} (Mediator(max_job_bytes=...)); pass a reference to large data "
            "(a key, a path, a URL) rather than the data itself"
        )
    pending = PendingJob(job_id, queue, delay_ms, body, type=message_name, parent=parent or "")
    return pending, span


def delay_ms_of(by: timedelta | float | None, at: datetime | None, *, required: bool = False) -> int:
    """Return the delay in ms that *by* (a delay) or *at* (an aware datetime) asks for; 0 for neither.

    Raises:
        ValueError: both are given (or neither, when *required*), a negative delay, or a naive *at*.
    """
    if (by is not None and at is not None) or (required and by is None and at is None):
        raise ValueError("give exactly one of by= (a delay) or at= (an aware datetime)")
    if at is not None:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at= needs a timezone-aware datetime, e.g. datetime.now(UTC) + delta")
        return max(int(at.timestamp() * 1000) - now_ms(), 0)
    seconds = to_seconds(by) or 0.0
    if seconds < 0:
        raise ValueError(f"by= needs a delay of zero or more, got {seconds} s")
    return int(seconds * 1000)
