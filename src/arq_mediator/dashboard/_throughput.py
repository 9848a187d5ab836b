"""Throughput graphs: succeeded and failed jobs per second, minute, hour or day, from the history's counters.

The engine counts each finished job in three hashes (`_history`): per second in a hash per minute, per
minute in a hash per hour, per hour in a hash per day. A graph reads the few hashes its points fall in,
in one round trip; a day's point sums that day's hours.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._history import counter_key
from ._model import ThroughputPoint

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._model import Resolution

# Per resolution: the length of one point (ms), the kind of hash its counters live in, how many points one
# such hash holds (0: a point sums whole hashes, as many as fit in it), and the most points one graph has.
_LAYOUT: dict[str, tuple[int, str, int, int]] = {
    "second": (1000, "second", 60, 10_000),
    "minute": (60_000, "minute", 60, 10_000),
    "hour": (3_600_000, "minute", 0, 2_400),
    "day": (86_400_000, "minute", 0, 100),
}
_HOUR = 3_600_000


async def throughput_points(
    redis: Redis,
    resolution: Resolution,
    points: int,
    now: int,
    spread: Callable[[str], list[str]] = lambda key: [key],
) -> list[ThroughputPoint]:
    """Return the last *points* intervals of *resolution* up to *now* (ms), oldest first.

    *spread* names where each counter hash lives (on a cluster, each queue's copy); their counts add up.

    Raises:
        ValueError: an unknown resolution, or *points* out of range (from 1 to 10,000 seconds or minutes,
            2,400 hours, 100 days).
    """
    if resolution not in _LAYOUT:
        raise ValueError(f"resolution must be one of {', '.join(_LAYOUT)}; got {resolution!r}")
    length, kind, per_hash, most = _LAYOUT[resolution]
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= most:
        raise ValueError(f"points must be from 1 to {most} for {resolution}s, got {points!r}")
    last = now // length
    starts = range(last - points + 1, last + 1)
    if per_hash:
        buckets = sorted({start // per_hash for start in starts})
    else:  # hours of minute counters, one hash per hour
        buckets = [
            hour for start in starts for hour in range(start * length // _HOUR, (start + 1) * length // _HOUR)
        ]
    places = {bucket: spread(counter_key(kind, bucket)) for bucket in buckets}
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in buckets:
            for key in places[bucket]:
                pipe.hgetall(key)
        replies = iter(await pipe.execute())
    counters: dict[int, dict[str, int]] = {}
    for bucket in buckets:  # on a cluster each queue counts its own: summed
        summed = counters[bucket] = {}
        for reply in (next(replies) for _ in places[bucket]):
            for name, value in reply.items():
                field = name.decode(errors="replace")
                summed[field] = summed.get(field, 0) + _count(value)
    result = []
    for start in starts:
        if per_hash:
            fields = counters[start // per_hash]
            offset = start % per_hash
            succeeded, failed = fields.get(f"s{offset}", 0), fields.get(f"f{offset}", 0)
        else:
            hours = _hours(start, length)
            succeeded = sum(v for hour in hours for name, v in counters[hour].items() if name[:1] == "s")
            failed = sum(v for hour in hours for name, v in counters[hour].items() if name[:1] == "f")
        moment = datetime.fromtimestamp(start * length / 1000, UTC)
        result.append(ThroughputPoint(start=moment, succeeded=succeeded, failed=failed))
    return result


def _hours(start: int, length: int) -> range:
    """Return the hours (since the epoch) the point *start* of *length* ms spans."""
    return range(start * length // _HOUR, (start + 1) * length // _HOUR)


def _count(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
