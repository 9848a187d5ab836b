"""Where a job's Redis memory goes: every key the engine keeps, grouped by kind, with ``MEMORY USAGE``.

`bench_memory.py --breakdown` prints this for a queued job and a retained result, history on and off.
Keys are grouped by their name with the job id (and counter buckets) left out; a group's figure is its
keys' ``MEMORY USAGE`` (value, key name and dictionary entry) summed and divided by the jobs, so a sorted
set shared by all jobs (the queue, an index) shows its cost per entry. What ``used_memory`` grew by beyond
those sums is the keyspace's own bookkeeping: hash-table buckets and the entry of each key with an expiry.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from redis.asyncio import Redis

# A job id as the engine makes them (old and new), and the bucket numbers of the history's counters.
_ID = re.compile(r"(?<=:)(?:[0-9a-f]{32}|[A-Za-z0-9_-]{16})$")
_BUCKET = re.compile(r":\d+$")


@dataclass(frozen=True, slots=True)
class Group:
    """The keys of one kind: how many, their encoding, whether they expire, bytes per job."""

    kind: str
    keys: int
    encoding: str
    expiring: int
    per_job: float


def kind_of(key: str) -> str:
    """Return *key*'s name with its job id (``<id>``) or counter bucket (``<n>``) left out."""
    return _BUCKET.sub(":<n>", _ID.sub("<id>", key))


async def breakdown(client: Redis, jobs: int, grown: int) -> tuple[list[Group], float]:
    """Return the groups of every key in the database, per job, and the keyspace's bookkeeping per job."""
    keys: dict[str, list[bytes]] = defaultdict(list)
    async for key in client.scan_iter(count=1000):
        keys[kind_of(key.decode())].append(key)
    groups = []
    total = 0
    for kind, names in sorted(keys.items()):
        usage = expiring = 0
        for start in range(0, len(names), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for name in names[start : start + 1000]:
                    pipe.memory_usage(name, samples=0)
                    pipe.pttl(name)
                replies = await pipe.execute()
            usage += sum(int(size or 0) for size in replies[0::2])
            expiring += sum(1 for ttl in replies[1::2] if ttl > 0)
        encoding = (await client.object("encoding", names[0])) or b"?"
        total += usage
        groups.append(Group(kind, len(names), encoding.decode(), expiring, usage / jobs))
    return groups, (grown - total) / jobs


def report(title: str, groups: list[Group], bookkeeping: float, jobs: int) -> list[str]:
    """Return *groups* as printable lines, biggest first, with the bookkeeping and the sum."""
    lines = [f"{title} ({jobs:,} jobs; MEMORY USAGE per job)"]
    for group in sorted(groups, key=lambda group: -group.per_job):
        if group.per_job < 0.5:
            continue
        expiry = f", {group.expiring:,} expiring" if group.expiring else ""
        lines.append(
            f"  {group.per_job:7.0f} B  {group.kind}  ({group.keys:,} keys, {group.encoding}{expiry})"
        )
    lines.append(f"  {bookkeeping:7.0f} B  keyspace bookkeeping (buckets, expiry entries)")
    lines.append(f"  {sum(group.per_job for group in groups) + bookkeeping:7.0f} B  in all")
    return lines
