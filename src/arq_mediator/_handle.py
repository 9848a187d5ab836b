"""`JobHandle[R]`: a typed reference to a background job, rebuildable from its id."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import TypeAdapter

from ._envelope import ErrorRecord, ResultRecord, qualified_name
from ._errors import JobAbortedError, JobFailedError, redis_unavailable_as_queue_error

if TYPE_CHECKING:
    from ._jobs import JobClient

R = TypeVar("R")
# The type name an aborted job's error record carries, and the one records written before 1.0 carry.
ABORTED_TYPES = frozenset({qualified_name(JobAbortedError), "arq_mediator._errors.JobAborted"})


def aborted(how: str) -> ErrorRecord:
    """Return the error record of a job aborted *how* ("aborted while running", say)."""
    return ErrorRecord(type=qualified_name(JobAbortedError), message=how)


class JobStatus(enum.StrEnum):
    """Where a job stands."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    NOT_FOUND = "not_found"


class JobHandle(Generic[R]):
    """A background job: its id and queue, its status, and its typed result once it finishes.

    Handles are cheap and hold no connection of their own; rebuild one from an id with
    ``mediator.job(job_id, RequestType)``.

    Attributes:
        id: The job id.
        queue: The queue the job is on (``None`` on a handle rebuilt from an id).
        enqueued: Whether the call that returned this handle put the job on its queue: ``False`` when a
            job with the same id was queued, running or finished already (an idempotent repeat).
    """

    __slots__ = ("_adapter", "_client", "_from_outbox", "enqueued", "id", "queue")

    def __init__(
        self,
        client: JobClient,
        job_id: str,
        queue: str | None,
        adapter: TypeAdapter[R] | None,
        *,
        enqueued: bool = False,
        from_outbox: bool = False,
    ) -> None:
        self._client = client
        self._adapter = adapter
        # Written to an outbox: until the relay pushes it, Redis knows no such job, and result() waits.
        self._from_outbox = from_outbox
        self.id = job_id
        self.queue = queue
        self.enqueued = enqueued

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, queue={self.queue!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def status(self) -> JobStatus:
        """Return where the job stands now.

        Raises:
            QueueUnavailableError: Redis could not be reached or did not answer in time.
        """
        with redis_unavailable_as_queue_error():
            state, _ = await self._client.status(self.id)
        return state

    async def record(self) -> ResultRecord | None:
        """Return the finished job's result record (value or error, worker, timings), or ``None``."""
        with redis_unavailable_as_queue_error():
            _, record = await self._client.status(self.id)
        return record

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its value, validated into the response type.

        Completion is pushed by the worker; nothing polls. A handle an `Outbox` returned also waits while
        the job is still on its way from the outbox (and, if its transaction rolled back, until *timeout*).

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            JobFailedError: the job failed; the exception carries the remote type, message and traceback.
            JobAbortedError: the job was aborted (a `JobFailedError` too).
            Exception: a type given to `Mediator.register_error`, raised again as the handler raised it.
            QueueUnavailableError: Redis could not be reached or did not answer in time.
            JobNotFoundError: no such job is queued, running or finished (or its result has expired).
            TimeoutError: *timeout* passed first; the job goes on.
        """
        with redis_unavailable_as_queue_error():
            record = await self._client.wait(self.id, timeout, may_be_missing=self._from_outbox)
        return self._value_of(record)

    def _value_of(self, record: ResultRecord) -> R:
        if not record.ok:
            error = record.error
            assert error is not None  # a failed record always carries one
            failure = JobAbortedError if error.type in ABORTED_TYPES else JobFailedError
            described = failure(self.id, error.type, error.message, error.traceback)
            rebuilt = _rebuilt(self._client.errors.get(error.type), error.state, described)
            if rebuilt is described:
                raise described
            raise rebuilt from described
        if self._adapter is None:
            value: Any = record.value
            return value  # type: ignore[no-any-return]
        return self._adapter.validate_python(record.value)

    async def abort(self) -> bool:
        """Abort the job: remove it if it has not started, cancel it on its worker if it is running.

        Either way it ends as failed by `JobAbortedError`: listed with the failed jobs, and requeueable.

        Returns:
            ``True`` if it was removed or its worker was asked to cancel it; ``False`` if it had already
            finished.

        Raises:
            JobNotFoundError: no such job exists.
        """
        with redis_unavailable_as_queue_error():
            return await self._client.abort(self.id, int(self._client.keep_failed * 1000))


def _rebuilt(
    error_type: type[BaseException] | None, state: dict[str, Any] | None, described: JobFailedError
) -> BaseException:
    """Return the remote exception built again from its recorded state, or *described* when it cannot be."""
    if error_type is None or state is None:
        return described
    try:
        rebuilt = error_type(*state.get("args", []))
        for name, value in state.get("attributes", {}).items():
            setattr(rebuilt, name, value)
    except Exception:  # a constructor that does not take its own args back: describe it instead
        return described
    rebuilt.add_note(f"raised by background job {described.job_id}; its traceback is in the cause")
    return rebuilt
