"""How the worker's loops ride out errors: back off, log each kind of error once, say when it heals.

A loop that meets an error (a refused connection, an error reply such as OOM or READONLY, a reply it
cannot read) must neither stop nor flood the log: it waits a little longer each time and goes on.
"""

from __future__ import annotations

import logging

_FIRST_DELAY = 0.1
_MAX_DELAY = 5.0


def error_kind(error: BaseException) -> str:
    """Return what tells one kind of error from another: its type and the first word of its message."""
    words = str(error).split(maxsplit=1)
    return f"{type(error).__name__}:{words[0] if words else ''}"


class LoopHealth:
    """Track one loop's failures: the delay before its next attempt and what has been logged.

    Args:
        logger: Where the loop reports.
        loop: What the loop does, for the messages ("worker w1 heartbeat").
    """

    def __init__(self, logger: logging.Logger, loop: str) -> None:
        self._logger = logger
        self._loop = loop
        self._seen: set[str] = set()
        self._delay = _FIRST_DELAY
        self.failures = 0

    def failed(self, error: BaseException) -> float:
        """Record *error*; return how long to wait before the next attempt.

        The first error of each kind is logged as a warning, repeats only at debug level.
        """
        kind = error_kind(error)
        delay = self._delay
        if kind in self._seen:
            self._logger.debug("%s failed again (%r); retrying in %.1fs", self._loop, error, delay)
        else:
            self._seen.add(kind)
            self._logger.warning("%s failed (%r); retrying in %.1fs", self._loop, error, delay)
        self.failures += 1
        self._delay = min(self._delay * 2, _MAX_DELAY)
        return delay

    def succeeded(self) -> None:
        """Record a success; after failures, say that the loop works again."""
        if self.failures:
            self._logger.warning("%s works again after %d failed attempt(s)", self._loop, self.failures)
        self.failures = 0
        self._delay = _FIRST_DELAY
        self._seen.clear()
