"""Exceptions raised by arq-mediator: one family under `ArqMediatorError`, every name ending in ``Error``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import ClusterDownError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ArqMediatorError(Exception):
    """Base class of every error arq-mediator raises itself."""


class HandlerRegistrationError(ArqMediatorError, TypeError):
    """A handler or behaviour cannot be registered as written; the message says how to fix it."""


class NoHandlerError(ArqMediatorError, LookupError):
    """No handler is registered for a message type: where it was sent, enqueued, or taken by a worker.

    Attributes:
        message_type: The type (or, in a worker, the type's message name) that has no handler.
        registered: The message names that do have handlers there.
    """

    def __init__(self, message_type: type | str, registered: list[str], *, where: str = "") -> None:
        self.message_type = message_type
        self.registered = registered
        name = message_type if isinstance(message_type, str) else message_type.__qualname__
        listed = ", ".join(registered) if registered else "none"
        place = f"{where} has no handler" if where else "no handler is registered"
        hint = (
            "; register one with @mediator.handler, and make sure the process imports the module that "
            "registers it"
        )
        super().__init__(f"{place} for {name}{hint}. Message types with handlers: {listed}")


class MissingResourceError(ArqMediatorError, LookupError):
    """A handler asked its context for a resource nobody provided."""


class EnvelopeError(ArqMediatorError, ValueError):
    """A job read from Redis is not a JSON envelope arq-mediator can run; nothing in it was executed."""


class QueueNotConnectedError(ArqMediatorError, RuntimeError):
    """A queue operation was called on a mediator with no Redis connection open."""


class QueueUnavailableError(ArqMediatorError, ConnectionError):
    """Redis could not be reached, or did not answer in time; the cause is chained.

    Nothing was changed by the call that raised it, unless the call was already under way in Redis when
    the answer was lost (then it may have been carried out: an idempotent ``job_id`` makes a retry safe).
    """


class NotReplicatedError(QueueUnavailableError):
    """A durable enqueue's jobs reached the master, but too few replicas confirmed them in time.

    The jobs are queued on the master, and run unless it fails before its replicas catch up; a failover
    then may lose them. Enqueue them again with the same job ids (idempotent) to be sure once the
    replicas are back.

    Attributes:
        job_ids: The ids of the jobs the call queued.
        replicas: How many replicas confirmed them (fewer than asked for).
    """

    def __init__(self, message: str, job_ids: list[str], replicas: int) -> None:
        super().__init__(message)
        self.job_ids = job_ids
        self.replicas = replicas


class JobIdConflictError(ArqMediatorError, ValueError):
    """A job id given to ``enqueue`` belongs to a job of another message type."""


class MessageEncodingError(ArqMediatorError, ValueError):
    """A message cannot be sent as a job: JSON cannot carry one of its values, or it is too large."""


class JobFailedError(ArqMediatorError):
    """A background job failed; its remote exception is described, not re-created.

    Attributes:
        job_id: The failed job's id.
        remote_type: Qualified name of the exception the handler raised (or arq-mediator's own error).
        remote_message: That exception's message.
        remote_traceback: The formatted traceback from the worker.
    """

    def __init__(
        self, job_id: str, remote_type: str, remote_message: str, remote_traceback: str = ""
    ) -> None:
        self.job_id = job_id
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"job {self.job_id} failed with {self.remote_type}: {self.remote_message}"


class JobAbortedError(JobFailedError):
    """A background job was aborted, before it started or while it ran (a kind of failure)."""

    def _describe(self) -> str:
        return f"job {self.job_id} was aborted: {self.remote_message}"


class JobNotFoundError(ArqMediatorError, LookupError):
    """No job with that id is queued, running, or has a result kept."""


class WorkerLostError(ArqMediatorError):
    """The job's worker stopped heart-beating too many times while running it (recorded as its error)."""


# The Redis client's errors that mean "unreachable or not answering", as opposed to an error reply; on a
# cluster also "no node reachable" and "the slot's master is down" (until its replica takes over).
REDIS_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    RedisClusterException,
    ClusterDownError,
)


@contextmanager
def redis_unavailable_as_queue_error() -> Iterator[None]:
    """Turn the Redis client's connection errors and timeouts into `QueueUnavailableError`."""
    try:
        yield
    except (TimeoutError, QueueUnavailableError):  # the caller's deadline, or ours: both OSErrors too
        raise
    except REDIS_UNAVAILABLE as error:
        raise QueueUnavailableError(
            f"the job queue's Redis is unavailable: {error or type(error).__name__}"
        ) from error


# Error records name an exception's type by module and name: the public module, which users import
# and catch from, rather than this private one.
for _public in (
    ArqMediatorError,
    HandlerRegistrationError,
    NoHandlerError,
    MissingResourceError,
    EnvelopeError,
    QueueNotConnectedError,
    QueueUnavailableError,
    NotReplicatedError,
    JobIdConflictError,
    MessageEncodingError,
    JobFailedError,
    JobAbortedError,
    JobNotFoundError,
    WorkerLostError,
):
    _public.__module__ = "arq_mediator"
