"""The `Mediator`: registers handlers, behaviours, errors and resources, and opens and closes its queue.

What it runs inline is `_inline`; what it enqueues, `_producer` and `_recurring_jobs`; its admin calls,
`_queue_admin`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from arq.connections import RedisSettings

from ._connection import Timeouts, check_target, open_client
from ._context import Context
from ._envelope import qualified_name
from ._history import DEFAULT_HISTORY, JobHistory
from ._inline import InlineDispatch
from ._jobs import JobClient
from ._policy import (
    DEFAULT_QUEUE,
    KEEP_FAILED,
    KEEP_RESULT,
    MAX_JOB_BYTES,
    Backoff,
    Durability,
    JobPolicy,
    durability_of,
    to_seconds,
)
from ._queue_admin import QueueAdmin
from ._recurring_jobs import RecurringJobs
from ._registry import Registry, Route, inspect_behavior, inspect_handler

if TYPE_CHECKING:
    from redis.asyncio import Redis

R = TypeVar("R")
T = TypeVar("T")
E = TypeVar("E", bound=type[Exception])
HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[Any]])
# A behaviour takes (request, call_next) or (request, call_next, ctx); registration checks which.
BehaviorT = TypeVar("BehaviorT", bound=Callable[..., Awaitable[Any]])
Lifespan = Callable[["Mediator"], AsyncIterator[None]]


class Mediator(RecurringJobs, QueueAdmin, InlineDispatch):
    """Route typed requests to their handlers, inline now or as background jobs on arq queues.

    The constructor only records configuration: the Redis pool and the lifespans open in
    ``async with mediator`` and close on the way out.

    Args:
        redis: Where the job queues live: a ``redis://`` URL, a Sentinel URL
            (``redis+sentinel://host:port,host:port/<master name>/<db>``) or arq ``RedisSettings``; ``None``
            for a mediator that only runs requests inline (or that gets a client from `connect`).
        logger: The logger handlers receive through their context; ``arq_mediator`` by default.
        connect_timeout: Seconds to open a connection to Redis.
        command_timeout: Seconds to wait for Redis to answer one command, so a Redis that hangs fails
            calls as fast as one that refuses them.
        keep_result: Seconds a succeeded job's result is kept, unless its handler says otherwise.
        keep_failed: Seconds a failed job's record is kept, unless its handler says otherwise.
        max_job_bytes: The largest job envelope `enqueue` accepts and workers run.
        durable_enqueue: Make every enqueue wait until a replica holds its jobs (``True``, or a
            `Durability` for more replicas or another timeout), so a failover cannot lose an acknowledged
            job; each call may say otherwise with ``durable=``. Off by default: it costs a replica's
            round trip per call.
        history: What the engine records of each job's life for the dashboard (steps, logs, counters)
            and for how long; ``None`` records nothing. Producers and workers of one Redis should agree.

    Raises:
        ValueError: a URL of an unknown scheme or a malformed Sentinel URL, a durable enqueue that would
            wait as long as the command timeout, or a setting out of range.
    """

    def __init__(
        self,
        *,
        redis: str | RedisSettings | None = None,
        logger: logging.Logger | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        keep_result: float | timedelta = KEEP_RESULT,
        keep_failed: float | timedelta = KEEP_FAILED,
        max_job_bytes: int = MAX_JOB_BYTES,
        durable_enqueue: Durability | bool = False,
        history: JobHistory | None = DEFAULT_HISTORY,
    ) -> None:
        super().__init__(Registry(), keep_failed=to_seconds(keep_failed) or 0.0, max_job_bytes=max_job_bytes)
        check_target(redis)
        self.history = history
        self._redis_target = redis
        self._timeouts = Timeouts(connect=connect_timeout, command=command_timeout)
        self.durable_enqueue = durability_of(durable_enqueue, None)
        if self.durable_enqueue is not None and self.durable_enqueue.timeout >= command_timeout:
            raise ValueError(
                f"a durable enqueue waits up to {self.durable_enqueue.timeout}s for replicas, which must be "
                f"shorter than command_timeout ({command_timeout}s), or the wait would end as a timeout"
            )
        if self.durable_enqueue is not None and self._layout.cluster:
            raise ValueError("durable_enqueue (WAIT for replicas) is not supported on Redis Cluster")
        self.keep_result = to_seconds(keep_result) or 0.0
        if self.keep_result <= 0:
            raise ValueError(f"keep_result must be positive, got {keep_result}")
        self._resources: dict[type[Any], Any] = {}
        self._lifespans: list[Callable[[Mediator], Any]] = []
        self._exit_stack: AsyncExitStack | None = None
        self.logger = logger or logging.getLogger("arq_mediator")
        # One context serves every inline call: it is immutable and its resources are a live view.
        self._inline_context = Context(mediator=self, logger=self.logger, resources=self.resources)
        # Pipelines bound to the inline context, built on first use and dropped on any registration.
        self._inline_routes: dict[type, Route] = {}
        self._inline_fanouts: dict[type, list[Route]] = {}

    @property
    def has_handlers(self) -> bool:
        """Return whether any handler is registered (a process that imported none can run nothing)."""
        return bool(self._registry.requests or self._registry.notifications)

    @property
    def resources(self) -> MappingProxyType[type[Any], Any]:
        """Return a read-only view of the resources provided so far, keyed by type."""
        return MappingProxyType(self._resources)

    @property
    def context(self) -> Context:
        """Return the context inline handlers receive."""
        return self._inline_context

    # Registration -------------------------------------------------------------------------------------

    @overload
    def handler(self, function: HandlerT, /) -> HandlerT: ...

    @overload
    def handler(
        self,
        function: None = None,
        /,
        *,
        queue: str = DEFAULT_QUEUE,
        max_tries: int = 1,
        timeout: float | timedelta | None = 300.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        backoff: Backoff | None = None,
        keep_result: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
    ) -> Callable[[HandlerT], HandlerT]: ...

    def handler(
        self,
        function: HandlerT | None = None,
        /,
        *,
        queue: str = DEFAULT_QUEUE,
        max_tries: int = 1,
        timeout: float | timedelta | None = 300.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        backoff: Backoff | None = None,
        keep_result: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
    ) -> HandlerT | Callable[[HandlerT], HandlerT]:
        """Register an ``async def handle(request: SomeMessage, ctx: Context)`` for its message type.

        The message type is read from the first parameter's annotation. A `Request` type takes exactly one
        handler; a `Notification` type takes any number. The options set the handler's job policy.

        Args:
            queue: Queue its background jobs go to.
            max_tries: Tries in all when run as a job; 1 means no retry.
            timeout: Limit on one try of a job, in seconds or as a timedelta; ``None`` for none.
            retry_on: Exception types that earn another try; others fail the job at once.
            backoff: Delays between tries; exponential with jitter by default.
            keep_result: How long a succeeded job's result is kept; the mediator's setting by default.
            keep_failed: How long a failed job's record is kept; the mediator's setting by default.

        Raises:
            HandlerRegistrationError: at decoration time, when the handler cannot be registered as written.
        """
        policy = JobPolicy(
            queue=queue,
            max_tries=max_tries,
            timeout=to_seconds(timeout),
            retry_on=retry_on,
            backoff=backoff or Backoff(),
            keep_result=to_seconds(keep_result),
            keep_failed=to_seconds(keep_failed),
        )

        def register(handler_function: HandlerT) -> HandlerT:
            self._registry.add_handler(inspect_handler(handler_function, policy))
            self._forget_routes()
            return handler_function

        return register if function is None else register(function)

    @overload
    def behavior(self, function: BehaviorT, /) -> BehaviorT: ...

    @overload
    def behavior(
        self, function: None = None, /, *, applies_to: type | tuple[type, ...] | None = None
    ) -> Callable[[BehaviorT], BehaviorT]: ...

    def behavior(
        self, function: BehaviorT | None = None, /, *, applies_to: type | tuple[type, ...] | None = None
    ) -> BehaviorT | Callable[[BehaviorT], BehaviorT]:
        """Register ``async def behavior(request, call_next[, ctx])`` around every handler, everywhere.

        Behaviours nest in registration order: the first registered is outermost. Each receives the
        message and ``call_next``; it may change the message, short-circuit by returning without calling
        ``call_next``, or catch what the handler raises. A behaviour wraps the messages that are instances of
        *applies_to* or, when that is not given, of its first parameter's annotation (all messages when
        unannotated).

        A behaviour that declares a third parameter receives the handler's `Context`: in a worker it
        carries the job (``ctx.job.id``, its try) and the job's logger.
        """
        scope = (applies_to,) if isinstance(applies_to, type) else applies_to

        def register(behavior_function: BehaviorT) -> BehaviorT:
            self._registry.add_behavior(inspect_behavior(behavior_function, scope))
            self._forget_routes()
            return behavior_function

        return register if function is None else register(function)

    def _forget_routes(self) -> None:
        self._inline_routes.clear()
        self._inline_fanouts.clear()

    def register_error(self, error_type: E) -> E:
        """Have `JobHandle.result` raise *error_type* itself when a job fails with it; return it.

        Use it as a class decorator. The worker records the exception's ``args`` and public attributes
        (when JSON can carry them) and the caller builds it again from them, with the remote failure as
        its ``__cause__``. Other exceptions reach the caller as `JobFailedError`. Both sides must register
        the type, as they register handlers.

        Raises:
            TypeError: *error_type* is not an exception class.
        """
        if not (isinstance(error_type, type) and issubclass(error_type, Exception)):
            raise TypeError(f"register_error() takes an exception class, got {error_type!r}")
        self._registry.errors[qualified_name(error_type)] = error_type
        return error_type

    def provide(self, value: T, *, as_type: type[T] | None = None, replace: bool = False) -> T:
        """Make *value* available to handlers as ``ctx.resource(as_type or type(value))``; return it.

        What is provided while the mediator is open (by its lifespans, say) is withdrawn when it closes,
        so it can open again.

        Args:
            value: The resource.
            as_type: The type handlers ask for; ``type(value)`` by default.
            replace: Replace a resource already provided for that type (a test's fake, say).

        Raises:
            ValueError: a resource of that type was provided already and *replace* is not set.
        """
        kind = as_type or type(value)
        if kind in self._resources and not replace:
            raise ValueError(
                f"a resource of type {kind.__qualname__} was provided already; pass replace=True to "
                "replace it (a second provide() is usually a lifespan entered twice or a copy-paste slip)"
            )
        self._resources[kind] = value
        return value

    def lifespan(self, function: Lifespan) -> Lifespan:
        """Register an async generator that opens resources on ``async with mediator`` and closes them after.

        The generator receives the mediator (to ``provide`` what it opens), yields once, and cleans up.
        """
        self._lifespans.append(asynccontextmanager(function))
        return function

    async def connect(self, redis: Redis) -> None:
        """Use an already open Redis client for the job queues; the caller keeps it and closes it.

        `disconnect` undoes it: it stops waiting for results, and leaves the client open.
        """
        self._client = JobClient(
            redis, keep_failed=self.keep_failed, errors=self._registry.errors, history=self.history
        )

    async def disconnect(self) -> None:
        """Stop using the Redis client given to `connect`: close the result listener, keep the client."""
        await self._disconnect()

    async def __aenter__(self) -> Self:
        """Open the Redis pool (when configured), then enter every lifespan in registration order.

        Raises:
            RuntimeError: the mediator is already open.
        """
        if self._exit_stack is not None:
            raise RuntimeError("this mediator is already open; enter `async with mediator` once")
        self._forget_routes()  # an OpenTelemetry SDK set up before opening now gets its inline spans
        stack = AsyncExitStack()
        async with stack:
            if self._redis_target is not None and self._client is None:
                pool = open_client(self._redis_target, self._timeouts)
                stack.push_async_callback(pool.aclose)
                self._client = JobClient(
                    pool, keep_failed=self.keep_failed, errors=self._registry.errors, history=self.history
                )
                stack.push_async_callback(self._disconnect)
            provided = dict(self._resources)
            # Runs after the lifespans closed what they provided: their resources must not outlive them.
            stack.callback(self._withdraw_resources, provided)
            for lifespan in self._lifespans:
                await stack.enter_async_context(lifespan(self))
            self._exit_stack = stack.pop_all()
        return self

    def _withdraw_resources(self, provided: dict[type[Any], Any]) -> None:
        self._resources.clear()
        self._resources.update(provided)

    async def _disconnect(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Leave every lifespan in reverse order, then close the Redis pool."""
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
