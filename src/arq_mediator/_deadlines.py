"""Handler timeouts of one worker on one event-loop timer, instead of an `asyncio.timeout` per job.

A job's try registers its deadline; one timer, set for the earliest deadline, cancels the tries whose
deadline passed and sets itself for the next. Most jobs end long before their deadline and share the
handler's timeout, so a try costs a dictionary entry rather than a timer of its own. The semantics are
`asyncio.timeout`'s: a try cancelled only by its deadline raises `TimeoutError`; one also cancelled by
someone else (a stop, an abort, a lost lease) stays cancelled.
"""

from __future__ import annotations

import asyncio


class Deadlines:
    """The deadlines of the tries running in one event loop."""

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, seconds: float | None) -> asyncio.Task[object] | None:
        """Cancel the current task after *seconds* (``None``: never) unless `forget` comes first.

        Returns:
            The task to pass to `timed_out` and `forget`, ``None`` when nothing is watched.
        """
        if seconds is None:
            return None
        task: asyncio.Task[object] | None = asyncio.current_task()
        assert task is not None, "a try runs in a task"
        loop = task.get_loop()
        deadline = loop.time() + seconds
        self._deadlines[task] = deadline
        if self._timer is None or deadline < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._expire, loop)
        return task

    def timed_out(self, task: asyncio.Task[object] | None) -> bool:
        """Tell whether *task*'s cancellation came from its deadline alone (then it is a `TimeoutError`)."""
        return task is not None and task in self._expired and task.cancelling() == 1

    def forget(self, task: asyncio.Task[object] | None) -> None:
        """Stop watching *task*; take back the cancellation its deadline asked for, if it did."""
        if task is None:
            return
        self._deadlines.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        upcoming: float | None = None
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()
            elif upcoming is None or deadline < upcoming:
                upcoming = deadline
        if upcoming is not None:
            self._timer = loop.call_at(upcoming, self._expire, loop)
