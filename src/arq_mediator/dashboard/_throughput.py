"""Throughput graphs: succeeded and failed jobs per second, minute, hour or day, from the history's counters.

The engine counts each finished job in three hashes (`_history`): per second in a hash per minute, per
minute in a hash per hour, per hour in a hash per day. A graph reads the few hashes its points fall in,
in one round trip; a day's point sums that day's hours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._history import counter_key
from ._model import ThroughputPoint

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._model import Resolution

# The most points one graph has.
MAX_POINTS = 10_000
# Per resolution: the length of one point (ms), the hash its counters live in ("second" counters are kept
# in a hash per minute, and so on), how many points one such hash holds.
_LAYOUT: dict[str, tuple[int, str, int]] = {
    "second": (1000, "second", 60),
    "minute": (60_000, "minute", 60),
    "hour": (3_600_000, "hour", 24),
    "day": (86_400_000, "hour", 1),
}


async def throughput_points(
    redis: Redis, resolution: Resolution, points: int, now: int
) -> list[ThroughputPoint]:
    """Return the last *points* intervals of *resolution* up to *now* (ms), oldest first.

    Raises:
        ValueError: an unknown resolution, or *points* not from 1 to `MAX_POINTS`.
    """
    if resolution not in _LAYOUT:
        raise ValueError(f"resolution must be one of {', '.join(_LAYOUT)}; got {resolution!r}")
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= MAX_POINTS:
        raise ValueError(f"points must be from 1 to {MAX_POINTS}, got {points!r}")
    length, hash_kind, per_hash = _LAYOUT[resolution]
    last = now // length
    starts = range(last - points + 1, last + 1)
    # A day's counters are its hours, in one hash per day.
    buckets = list(starts) if resolution == "day" else sorted({start // per_hash for start in starts})
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in buckets:
            pipe.hgetall(counter_key(hash_kind, bucket))
        replies = await pipe.execute()
    counters = {
        bucket: {name.decode(errors="replace"): value for name, value in reply.items()}
        for bucket, reply in zip(buckets, replies, strict=True)
    }
    result = []
    for start in starts:
        if resolution == "day":
            fields = counters[start]
            succeeded = sum(_count(value) for name, value in fields.items() if name.startswith("s"))
            failed = sum(_count(value) for name, value in fields.items() if name.startswith("f"))
        else:
            fields = counters[start // per_hash]
            offset = start % per_hash
            succeeded, failed = _count(fields.get(f"s{offset}")), _count(fields.get(f"f{offset}"))
        moment = datetime.fromtimestamp(start * length / 1000, UTC)
        result.append(ThroughputPoint(start=moment, succeeded=succeeded, failed=failed))
    return result


def _count(value: bytes | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
