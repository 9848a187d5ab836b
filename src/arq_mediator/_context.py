"""What a handler receives besides its request: the mediator, a logger, resources and job facts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._errors import MissingResourceError
from ._live import checked_fraction

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from ._live import JobReport
    from ._mediator import Mediator
    from ._messages import Request

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class JobInfo:
    """Facts about the background job a handler is running in.

    Attributes:
        id: The job id, stable across retries.
        queue: The queue the job was taken from.
        try_number: 1 on the first try, 2 on the first retry, and so on.
        max_tries: How many tries the job has in all.
        enqueued_at: When the job was first enqueued (UTC).
        worker: Name of the worker process running it.
    """

    id: str
    queue: str
    try_number: int
    max_tries: int
    enqueued_at: datetime
    worker: str


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a handler may use besides its request; passed explicitly, never read from globals.

    Attributes:
        mediator: The mediator running the handler, to send, publish or enqueue follow-up work.
        logger: A logger for the handler; in a worker it carries the job's id in ``extra``.
        resources: Resources provided at start-up (a DB session factory, an HTTP client), keyed by type.
        job: Facts about the job when running in a worker; ``None`` when run inline by ``send``.
        report: Where `progress` and the logger's lines go, in a worker with history on.
    """

    mediator: Mediator
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    resources: Mapping[type[Any], Any]
    job: JobInfo | None = None
    report: JobReport | None = None

    def progress(self, fraction: float) -> None:
        """Report how far the job is, from 0.0 to 1.0, for the dashboard; nothing happens outside a job.

        It costs no round trip: the worker writes the latest value to the job's history shortly after.

        Raises:
            ValueError: *fraction* is not a number from 0 to 1.
        """
        checked = checked_fraction(fraction)
        if self.report is not None:
            self.report.set_progress(checked)

    def send(self, request: Request[R]) -> Coroutine[Any, Any, R]:
        """Run *request* inline, as `Mediator.send` does, its handler getting this context.

        Inside a job the inner handler (and its behaviours) see the same job facts and logger, where
        ``ctx.mediator.send`` would give them the mediator's own context, with no job.
        """
        return self.mediator.send_with(request, self)

    def resource(self, kind: type[T]) -> T:
        """Return the resource provided for *kind*.

        Raises:
            MissingResourceError: nothing was provided for *kind*; the message lists what was.
        """
        try:
            return cast("T", self.resources[kind])
        except KeyError:
            provided = ", ".join(sorted(k.__qualname__ for k in self.resources)) or "none"
            raise MissingResourceError(
                f"no resource of type {kind.__qualname__} was provided; call mediator.provide(value) "
                f"at start-up (e.g. in a @mediator.lifespan). Provided: {provided}"
            ) from None
