"""Shortening retry backoff for the length of a test, leaving every retry decision as the handler set it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._policy import Backoff

if TYPE_CHECKING:
    from .._mediator import Mediator
    from .._registry import HandlerSpec


@contextmanager
def fixed_retry_delay(mediator: Mediator, seconds: float | None) -> Iterator[None]:
    """Make every handler's retries of *mediator* wait *seconds* (``None``: as set) for the block.

    Only the delay changes: ``max_tries``, ``retry_on`` and timeouts stay the handlers' own.
    """
    if seconds is None:
        yield
        return
    registry = mediator._registry
    requests = dict(registry.requests)
    notifications = {kind: list(specs) for kind, specs in registry.notifications.items()}
    backoff = Backoff(initial=seconds, factor=1.0, maximum=seconds, jitter=0.0)

    def quick(spec: HandlerSpec) -> HandlerSpec:
        return dataclasses.replace(spec, policy=dataclasses.replace(spec.policy, backoff=backoff))

    # Runners look a job's handler up in the registry on every try, so swapping the specs is enough.
    registry.requests.update({kind: quick(spec) for kind, spec in requests.items()})
    for kind, specs in notifications.items():
        registry.notifications[kind] = [quick(spec) for spec in specs]
    try:
        yield
    finally:
        registry.requests.update(requests)
        registry.notifications.update(notifications)
