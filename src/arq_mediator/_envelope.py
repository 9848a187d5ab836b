"""The JSON that crosses Redis: job envelopes and result records. Nothing here ever unpickles."""

from __future__ import annotations

import base64
import json
import traceback
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import EnvelopeError

ENVELOPE_VERSION: Literal[1] = 1


class JobEnvelope(BaseModel):
    """A job as stored under ``arq:job:<id>``: which message, its payload, and how to run it.

    Attributes:
        v: Format version, so a later release can read older jobs; left out of the JSON while it is 1.
        id: The job id.
        type: The message type's stable `message_name`.
        handler: For a notification's fan-out job, the one handler it is for; ``None`` for a request.
        payload: The message as JSON.
        queue: The queue it was enqueued on.
        max_tries: Tries in all.
        failures: Tries that failed so far (a try lost with its worker does not count).
        enqueued_at: When it was first enqueued, in ms since the epoch.
        due_at: When its current try may start, in ms since the epoch (later than `enqueued_at` when
            deferred or retried).
        trace: W3C trace context of the enqueueing span.
        meta: Free-form facts about the producer (host, pid, recurring schedule).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = ENVELOPE_VERSION
    id: str
    type: str
    handler: str | None = None
    payload: dict[str, Any]
    queue: str
    max_tries: int
    failures: int = 0
    enqueued_at: int
    due_at: int | None = None
    trace: dict[str, str] = {}
    meta: dict[str, str] = {}


class ErrorRecord(BaseModel):
    """An exception as data: its type's qualified name, its message and its formatted traceback.

    Attributes:
        type: The exception type's ``module.QualName``.
        message: ``str()`` of the exception, cut to 4 KiB.
        traceback: The formatted traceback, its end kept, cut to 16 KiB.
        state: For exception types registered with ``Mediator.register_error``: its ``args`` and public
            attributes, from which the caller raises it again.
    """

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    traceback: str = ""
    state: dict[str, Any] | None = None

    @classmethod
    def from_exception(cls, error: BaseException, *, keep_state: bool = False) -> ErrorRecord:
        """Describe *error*, with its traceback; both cut to a bounded size, as records are kept for days.

        With *keep_state*, the exception's arguments and public attributes are kept too, when JSON can
        carry them, so that the caller can raise the same exception again.
        """
        return cls(
            type=qualified_name(type(error)),
            message=_bounded(str(error), MESSAGE_LIMIT),
            traceback=_bounded("".join(traceback.format_exception(error)), TRACEBACK_LIMIT, keep_end=True),
            state=_state_of(error) if keep_state else None,
        )


def _state_of(error: BaseException) -> dict[str, Any] | None:
    """Return *error*'s arguments and public attributes if JSON can carry them, else ``None``."""
    attributes = {name: value for name, value in vars(error).items() if not name.startswith("_")}
    state = {"args": list(error.args), "attributes": attributes}
    try:
        json.dumps(state)
    except (TypeError, ValueError):
        return None
    return state


# The most of an error's message and traceback a record keeps, in characters.
MESSAGE_LIMIT = 4096
TRACEBACK_LIMIT = 16384


def _bounded(text: str, limit: int, *, keep_end: bool = False) -> str:
    """Return *text* cut to about *limit* characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    cut = f"[... {len(text) - limit} characters left out ...]"
    return cut + text[-limit:] if keep_end else text[:limit] + cut


class ResultRecord(BaseModel):
    """A finished job, as stored under ``arq:result:<id>`` and published on its completion channel.

    Attributes:
        ok: Whether the last try succeeded.
        type: The message type's stable name ("" when the job could not be read).
        value: The handler's return value as JSON, when ``ok``.
        error: What made the job fail, when not ``ok``.
        job: The envelope of the last try, kept so a failed job can be requeued as it was.
        raw: For a job whose body could not be read as an envelope, the body (base64), kept for inspection.
        try_number: The try that finished it.
        worker: The worker that finished it.
        started_at: When that try started, in ms since the epoch.
        finished_at: When it finished, in ms since the epoch.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    ok: bool
    type: str = ""
    value: Any = None
    error: ErrorRecord | None = None
    job: JobEnvelope | None = None
    raw: str | None = None
    try_number: int = 0
    worker: str = ""
    started_at: int = 0
    finished_at: int = 0


def decode_envelope(job_id: str, body: bytes) -> JobEnvelope:
    """Read a job body as a JSON envelope.

    Raises:
        EnvelopeError: the body is not a JSON envelope of a known version (a pickled arq job, say);
            nothing in it was executed.
    """
    try:
        envelope = JobEnvelope.model_validate_json(body)
    except ValidationError as error:
        hint = " (it looks like a pickle: arq-mediator never unpickles)" if body[:1] == b"\x80" else ""
        raise EnvelopeError(
            f"job {job_id} is not a valid arq-mediator JSON envelope{hint}: "
            f"{error.error_count()} problem(s), first: {error.errors()[0]['msg']}"
        ) from None
    if envelope.id != job_id:
        # A body planted under another job's key must not be able to finish, or fail, that other job.
        raise EnvelopeError(f"job {job_id} holds an envelope for job {envelope.id}; refused")
    return envelope


def encode_raw(body: bytes) -> str:
    """Return *body* as base64, to keep an unreadable job's bytes in its failure record."""
    return base64.b64encode(body).decode("ascii")


def qualified_name(kind: type[Any]) -> str:
    """Return ``module.QualName`` of *kind*, the name an error record gives an exception type."""
    return f"{kind.__module__}.{kind.__qualname__}"


# One encoder for every call: json.dumps with separators= builds a new encoder each time.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def dumps(value: Any) -> str:
    """Serialize plain JSON data compactly."""
    return _COMPACT.encode(value)


def stored_json(model: BaseModel) -> str:
    """Return an envelope or a record as the JSON Redis keeps: fields left at their default left out.

    Every field the engine reads has a default matching what it means when absent (``v`` 1, no error,
    no trace...), so a reader, this release or an earlier one, gets the same model back; the bytes saved
    are kept per job for as long as its record is (a `null` ``value``, ``error``, ``job`` and ``raw`` were
    a fifth of a no-op's result record).
    """
    return model.model_dump_json(exclude_defaults=True)
