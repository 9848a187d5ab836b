"""arq-mediator: typed requests run inline or as arq background jobs, through one pipeline."""

from ._context import Context, JobInfo
from ._errors import ArqMediatorError, HandlerRegistrationError, MissingResourceError, NoHandlerError
from ._mediator import Mediator
from ._messages import Message, Notification, Request
from ._policy import Backoff, JobPolicy
from ._registry import CallNext

__all__ = [
    "ArqMediatorError",
    "Backoff",
    "CallNext",
    "Context",
    "HandlerRegistrationError",
    "JobInfo",
    "JobPolicy",
    "Mediator",
    "Message",
    "MissingResourceError",
    "NoHandlerError",
    "Notification",
    "Request",
]
