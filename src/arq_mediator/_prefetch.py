"""The worker's prefetch: jobs of its first queue claimed ahead of its free slots, in a small ready buffer.

Without it, a slot that frees waits one CLAIM round trip before its next job starts. With it, the slot
starts a buffered job at once and the claim loop refills the buffer meanwhile. A buffered job is leased
(another worker cannot take it), so the buffer only covers one claim's latency: about (recent completion
rate) x (recent claim round trip) x `HEADROOM` jobs, capped by `WorkerSettings.prefetch`. Jobs of seconds
complete too rarely for that to reach one job, so they are never held back from an idle peer; and when
the rate falls (the jobs got slower), the jobs the buffer holds beyond its new size are given back.

Only the first queue's jobs are buffered: nothing outranks them, so starting one never passes over a job
of a higher-priority queue that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from ._claims import Claim

# Completions the rate is measured over: enough to smooth a burst, few enough to follow a change.
RATE_WINDOW = 64
# How many claims' latency the buffer covers: the refill's own round trip, and one more for its jitter.
HEADROOM = 2.0
# Weight of the newest round trip in the claim latency's moving average.
ROUND_TRIP_WEIGHT = 0.2
# Seconds a job may wait in the buffer before the buffer is cut to its size: a job waits about one claim
# round trip while jobs keep finishing, so one that waited this long was claimed for a pace now gone.
RECHECK = 0.1


class Prefetch:
    """The ready buffer of one worker and the measures that size it.

    Args:
        limit: The most jobs it may hold (`WorkerSettings.prefetch`); 0 turns prefetching off.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Each buffered claim, with when (loop clock) it was buffered.
        self._ready: deque[tuple[float, Claim]] = deque()
        self._completions: deque[float] = deque(maxlen=RATE_WINDOW)
        self._round_trip = 0.0
        # Jobs taken out of the buffer unstarted, while they are given back or recorded aborted.
        self._settling: dict[str, tuple[Claim, asyncio.Task[None]]] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def held(self) -> Iterator[Claim]:
        """Yield the claims whose leases the buffer holds: those waiting, and those being settled."""
        for _, claim in self._ready:
            yield claim
        for claim, _ in self._settling.values():
            yield claim

    def settle(self, claim: Claim, settle: Callable[[Claim], Coroutine[Any, Any, None]]) -> None:
        """Settle *claim*, taken out of the buffer unstarted, with *settle* (a give-back or an abort)."""
        task = asyncio.create_task(settle(claim), name=f"unstarted job {claim.id}")
        self._settling[claim.id] = (claim, task)
        task.add_done_callback(lambda _: self._settling.pop(claim.id, None))

    def settling(self) -> list[asyncio.Task[None]]:
        """Return the tasks settling jobs that left the buffer unstarted."""
        return [task for _, task in self._settling.values()]

    def finished(self, now: float) -> None:
        """Count a job that freed its slot at *now* (loop clock, seconds)."""
        self._completions.append(now)

    def claimed(self, seconds: float) -> None:
        """Record how long a claim's round trip took."""
        if self._round_trip == 0.0:
            self._round_trip = seconds
        else:
            self._round_trip += ROUND_TRIP_WEIGHT * (seconds - self._round_trip)

    def rate(self, now: float) -> float:
        """Return jobs finished per second lately; it falls while none finishes, so slow jobs read low."""
        if len(self._completions) < 2:
            return 0.0
        return len(self._completions) / max(now - self._completions[0], 1e-6)

    def target(self, now: float) -> int:
        """Return how many jobs the buffer should hold now."""
        if self.limit == 0:
            return 0
        return min(self.limit, int(self.rate(now) * self._round_trip * HEADROOM))

    def wanted(self, now: float, *, claiming: bool) -> int:
        """Return how many more jobs to claim for the buffer, with a claim for free slots (*claiming*) or
        in a claim of its own.

        A claim of its own waits until the buffer is half empty: refilled job by job, it would send a claim
        per finished job; half the buffer still covers the refill's round trip (see `HEADROOM`).
        """
        target = self.target(now)
        if not claiming and 2 * len(self._ready) > target:
            return 0
        return max(target - len(self._ready), 0)

    def add(self, claim: Claim, now: float) -> None:
        """Buffer *claim* at *now*, after those claimed before it (a claim's jobs come in priority order)."""
        self._ready.append((now, claim))

    def next(self) -> Claim:
        """Take the buffered job claimed first."""
        return self._ready.popleft()[1]

    def remove(self, job_id: str) -> Claim | None:
        """Take the buffered job *job_id* out, if it is here."""
        for entry in self._ready:
            if entry[1].id == job_id:
                self._ready.remove(entry)
                return entry[1]
        return None

    def surplus(self, now: float) -> list[Claim]:
        """Once the first buffered job has waited `RECHECK`, take out the jobs beyond the buffer's size now,
        those claimed last first."""
        if not self._ready or now - self._ready[0][0] < RECHECK:
            return []
        extra = len(self._ready) - self.target(now)
        return [self._ready.pop()[1] for _ in range(max(extra, 0))]

    def drain(self) -> list[Claim]:
        """Take out every buffered job."""
        claims = [claim for _, claim in self._ready]
        self._ready.clear()
        return claims
