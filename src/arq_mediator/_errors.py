"""Exceptions raised by arq-mediator; every one derives from `ArqMediatorError`."""

from __future__ import annotations


class ArqMediatorError(Exception):
    """Base class of every error arq-mediator raises itself."""


class HandlerRegistrationError(ArqMediatorError, TypeError):
    """A handler or behaviour cannot be registered as written; the message says how to fix it."""


class NoHandlerError(ArqMediatorError, LookupError):
    """No handler is registered for the type of message that was sent."""

    def __init__(self, message_type: type, registered: list[str]) -> None:
        self.message_type = message_type
        self.registered = registered
        listed = ", ".join(registered) if registered else "none"
        super().__init__(
            f"no handler is registered for {message_type.__qualname__}; "
            f"register one with @mediator.handler. Message types with handlers: {listed}"
        )


class MissingResourceError(ArqMediatorError, LookupError):
    """A handler asked its context for a resource nobody provided."""


class EnvelopeError(ArqMediatorError, ValueError):
    """A job read from Redis is not a JSON envelope arq-mediator can run; nothing in it was executed."""


class QueueNotConnectedError(ArqMediatorError, RuntimeError):
    """A queue operation was called on a mediator with no Redis connection open."""


class JobFailed(ArqMediatorError):
    """A background job failed; its remote exception is described, not re-created.

    Attributes:
        job_id: The failed job's id.
        remote_type: Qualified name of the exception the handler raised (or arq-mediator's own error).
        remote_message: That exception's message.
        remote_traceback: The formatted traceback from the worker.
    """

    def __init__(self, job_id: str, remote_type: str, remote_message: str, remote_traceback: str) -> None:
        self.job_id = job_id
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(f"job {job_id} failed with {remote_type}: {remote_message}")


class JobNotFound(ArqMediatorError, LookupError):
    """No job with that id is queued, running, or has a result kept."""


class JobAborted(ArqMediatorError):
    """The job was aborted before it finished (recorded as its error)."""


class WorkerLost(ArqMediatorError):
    """The job's worker stopped heart-beating too many times while running it (recorded as its error)."""


class HandlerNotFound(ArqMediatorError, LookupError):
    """A worker took a job whose type it has no handler for (recorded as the job's error)."""
