"""How many jobs one client may queue per minute: the API's answer to "ten stress tests queued 20k jobs".

Litestar's rate-limit middleware counts requests, but one ``stress-test`` request may queue 10,000 jobs
and another one job, so the API counts jobs instead: each client (by its address) may queue a budget of
jobs per minute, and a request that would go over it is refused whole with a 429 and ``Retry-After``,
before anything is queued.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS

WINDOW_SECONDS = 60.0
# Clients remembered at most; beyond it, clients whose window has passed are forgotten.
_MAX_CLIENTS = 10_000


class OverBudget(HTTPException):
    """The request would queue more jobs than its client has left this minute."""

    status_code = HTTP_429_TOO_MANY_REQUESTS


@dataclass
class JobBudget:
    """Jobs per client per minute; *per_minute* 0 means no limit.

    Counts are kept in this API process: behind several API replicas each has its own budget.
    """

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)

    def spend(self, request: Request[Any, Any, Any], jobs: int) -> None:
        """Count *jobs* against the budget of *request*'s client.

        Raises:
            OverBudget: they do not fit in what is left of the client's minute; nothing was counted.
        """
        if self.per_minute <= 0:
            return
        client = request.client.host if request.client else "unknown"
        now = self.clock()
        started, used = self._windows.get(client, (now, 0))
        if now - started >= WINDOW_SECONDS:
            started, used = now, 0
        if used + jobs > self.per_minute:
            wait = max(math.ceil(started + WINDOW_SECONDS - now), 1)
            left = self.per_minute - used
            raise OverBudget(
                detail=(
                    f"this client may queue {self.per_minute} jobs per minute; this request would queue "
                    f"{jobs} and {left} are left; retry after {wait} s"
                ),
                headers={"Retry-After": str(wait)},
            )
        if len(self._windows) >= _MAX_CLIENTS and client not in self._windows:
            self._forget_finished_windows(now)
        self._windows[client] = (started, used + jobs)

    def _forget_finished_windows(self, now: float) -> None:
        for client, (started, _) in list(self._windows.items()):
            if now - started >= WINDOW_SECONDS:
                del self._windows[client]
