"""arq-mediator: typed requests run inline or as arq background jobs, through one pipeline."""

import warnings

from ._context import Context, JobInfo
from ._envelope import ErrorRecord, JobEnvelope, ResultRecord
from ._errors import (
    ArqMediatorError,
    EnvelopeError,
    HandlerRegistrationError,
    JobAbortedError,
    JobFailedError,
    JobIdConflictError,
    JobNotFoundError,
    MessageEncodingError,
    MissingResourceError,
    NoHandlerError,
    NotReplicatedError,
    QueueNotConnectedError,
    QueueUnavailableError,
    WorkerLostError,
)
from ._handle import JobHandle, JobStatus
from ._history import JobHistory
from ._mediator import Mediator
from ._messages import Message, Notification, Request
from ._policy import Backoff, Durability
from ._queue_introspection import QueueStats, Stats, WorkerState
from ._recurring_jobs import RecurringJob
from ._registry import CallNext
from ._telemetry import TraceContextFilter
from ._worker import Worker, run_worker
from ._worker_settings import WorkerSettings

__all__ = [
    "ArqMediatorError",
    "Backoff",
    "CallNext",
    "Context",
    "Durability",
    "EnvelopeError",
    "ErrorRecord",
    "HandlerRegistrationError",
    "JobAbortedError",
    "JobEnvelope",
    "JobFailedError",
    "JobHandle",
    "JobHistory",
    "JobIdConflictError",
    "JobInfo",
    "JobNotFoundError",
    "JobStatus",
    "Mediator",
    "Message",
    "MessageEncodingError",
    "MissingResourceError",
    "NoHandlerError",
    "NotReplicatedError",
    "Notification",
    "QueueNotConnectedError",
    "QueueStats",
    "QueueUnavailableError",
    "RecurringJob",
    "Request",
    "ResultRecord",
    "Stats",
    "TraceContextFilter",
    "Worker",
    "WorkerLostError",
    "WorkerSettings",
    "WorkerState",
    "run_worker",
]

# Names before 1.0, kept for one release: each still works, with a DeprecationWarning naming its successor.
_RENAMED = {
    "JobFailed": "JobFailedError",
    "JobNotFound": "JobNotFoundError",
    "JobAborted": "JobAbortedError",
    "WorkerLost": "WorkerLostError",
    "HandlerNotFound": "NoHandlerError",
}


def __getattr__(name: str) -> object:
    """Resolve a pre-1.0 name to its successor, with a DeprecationWarning."""
    successor = _RENAMED.get(name)
    if successor is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"arq_mediator.{name} is deprecated and will be removed after 1.0; use {successor}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[successor]
