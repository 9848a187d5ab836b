"""How a handler runs as a background job: its queue, tries, timeout and retry backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

DEFAULT_QUEUE = "default"
# What a mediator keeps by default: a day of results, a week of failures (to look at and requeue).
KEEP_RESULT = 86_400.0
KEEP_FAILED = 7 * 86_400.0
# The largest job envelope a mediator enqueues and its workers run by default, in bytes.
MAX_JOB_BYTES = 1024 * 1024


def to_seconds(value: float | timedelta | None) -> float | None:
    """Return *value* in seconds, accepting seconds or a `timedelta`."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Durability:
    """What a durable enqueue waits for: *replicas* replicas holding the jobs, for up to *timeout* seconds.

    Redis replicates asynchronously: a master that fails right after it acknowledged an enqueue may take
    the job with it, as the replica promoted in its place never received it. A durable enqueue sends
    ``WAIT <replicas> <timeout>`` after the enqueue script, on the same connection in the same round trip,
    and succeeds only once that many replicas confirmed; else it raises `NotReplicatedError`.

    Attributes:
        replicas: Replicas that must confirm the jobs.
        timeout: Seconds to wait for them at most; shorter than the mediator's command timeout.
    """

    replicas: int = 1
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.timeout <= 0:
            raise ValueError(
                f"a durable enqueue waits for 1 or more replicas for a positive time, got {self.replicas=} "
                f"and {self.timeout=}"
            )


def durability_of(choice: Durability | bool | None, default: Durability | None) -> Durability | None:
    """Return what an enqueue waits for: *choice* (``True`` for one replica), or *default* when ``None``."""
    if choice is None:
        return default
    if isinstance(choice, Durability):
        return choice
    return Durability() if choice else None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, capped: retry *n* waits about ``initial * factor**(n-1)`` seconds.

    Attributes:
        initial: Delay before the first retry, in seconds.
        factor: Growth of the delay from one retry to the next.
        maximum: Cap on any one delay, in seconds.
        jitter: Fraction of the delay drawn at random (0 = none, 1 = anywhere from 0 to the full delay),
            so that jobs failing together do not all come back together.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.factor < 1 or self.maximum < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(
                "Backoff needs initial >= 0, factor >= 1, maximum >= 0 and 0 <= jitter <= 1; "
                f"got {self.initial=}, {self.factor=}, {self.maximum=}, {self.jitter=}"
            )

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Return the delay in seconds before retry *retry_number* (1 for the first retry)."""
        try:
            ceiling = min(self.maximum, self.initial * self.factor ** max(retry_number - 1, 0))
        except OverflowError:  # factor**n outgrew a float long after passing the cap
            ceiling = self.maximum
        draw = (rng or random).random()
        return ceiling * (1 - self.jitter * draw)


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """Where and how a handler's background jobs run.

    Attributes:
        queue: The queue its jobs go to unless ``enqueue`` names another.
        max_tries: Tries in all, the first included; 1 means no retry.
        timeout: Seconds one try may run before it is cancelled and counted as failed; ``None`` for no limit.
        retry_on: Exception types worth another try; any other exception fails the job at once.
        backoff: Delays between tries.
        keep_result: Seconds a succeeded job's result is kept for ``JobHandle.result``; ``None`` uses the
            mediator's ``keep_result``.
        keep_failed: Seconds a failed job's record is kept (listed, requeueable); ``None`` uses the
            mediator's ``keep_failed``.
    """

    queue: str = DEFAULT_QUEUE
    max_tries: int = 1
    timeout: float | None = 300.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: Backoff = field(default_factory=Backoff)
    keep_result: float | None = None
    keep_failed: float | None = None

    def __post_init__(self) -> None:
        if not self.queue:
            raise ValueError("queue must be a non-empty name")
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {self.max_tries}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive or None, got {self.timeout}")
        for name, keep in (("keep_result", self.keep_result), ("keep_failed", self.keep_failed)):
            if keep is not None and keep <= 0:
                raise ValueError(f"{name} must be positive or None, got {keep}")
