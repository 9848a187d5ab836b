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
            f"register one with @mediator.handler. Registered request types: {listed}"
        )


class MissingResourceError(ArqMediatorError, LookupError):
    """A handler asked its context for a resource nobody provided."""
