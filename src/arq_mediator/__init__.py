"""arq-mediator: typed requests run inline or as arq background jobs, through one pipeline."""

from ._context import Context, JobInfo
from ._envelope import ErrorRecord, JobEnvelope, ResultRecord
from ._errors import (
    ArqMediatorError,
    EnvelopeError,
    HandlerNotFound,
    HandlerRegistrationError,
    JobAborted,
    JobFailed,
    JobNotFound,
    MissingResourceError,
    NoHandlerError,
    QueueNotConnectedError,
    WorkerLost,
)
from ._handle import JobHandle, JobStatus
from ._jobs import QueueStats, Stats, WorkerState
from ._mediator import Mediator
from ._messages import Message, Notification, Request
from ._policy import Backoff, JobPolicy
from ._producer import RecurringJob
from ._registry import CallNext
from ._telemetry import TraceContextFilter
from ._worker import Worker, run_worker
from ._worker_settings import WorkerSettings

__all__ = [
    "ArqMediatorError",
    "Backoff",
    "CallNext",
    "Context",
    "EnvelopeError",
    "ErrorRecord",
    "HandlerNotFound",
    "HandlerRegistrationError",
    "JobAborted",
    "JobEnvelope",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobPolicy",
    "JobStatus",
    "Mediator",
    "Message",
    "MissingResourceError",
    "NoHandlerError",
    "Notification",
    "QueueNotConnectedError",
    "QueueStats",
    "RecurringJob",
    "Request",
    "ResultRecord",
    "Stats",
    "TraceContextFilter",
    "Worker",
    "WorkerLost",
    "WorkerSettings",
    "WorkerState",
    "run_worker",
]
