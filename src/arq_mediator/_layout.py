"""Which key layout a Redis gets: arq's own on one server, a hash-tagged one on Redis Cluster.

On one server (or a sentinel-managed one) keys are arq's (`_keys`), unchanged. On a cluster every key
and channel one script touches must live in one hash slot, so each gets the hash tag of the queue the
call is about, right after its prefix: ``arq:queue:{q}:q``, ``arq:job:{q}:<id>``, ``arqm:workers:{q}``,
``arqm:history:{q}:index:failed``. Scripts receive that tag (``{q}``) as their one key, which also routes the
call to the node serving the slot. Job ids carry their queue's tag too (``{q}<16 chars>``, or ``{q}<the
caller's id>``), so a handle, a result wait or an abort finds a job's slot from its id alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

if TYPE_CHECKING:
    from redis.asyncio import Redis

# What a cluster script calls the tag of its call: the one key it is given.
_LUA_TAG = "' .. T .. '"


def tag_of(job_id: str) -> str | None:
    """Return the queue whose tag *job_id* starts with (``{q}...``), or ``None`` when it carries none."""
    if job_id.startswith("{"):
        end = job_id.find("}")
        if end > 1:
            return job_id[1:end]
    return None


@dataclass(frozen=True, slots=True)
class Layout:
    """Where keys live: arq's layout (``cluster`` false) or the hash-tagged cluster layout."""

    cluster: bool = False

    def route(self, queue: str) -> list[str]:
        """Return the KEYS of a script call about *queue*: none on one server, its tag on a cluster."""
        return ["{" + queue + "}"] if self.cluster else []

    def key(self, prefix: str, queue: str, name: str) -> str:
        """Return the key *prefix* + *name*, in *queue*'s slot on a cluster."""
        return f"{prefix}{{{queue}}}:{name}" if self.cluster else prefix + name

    def named(self, name: str, queue: str) -> str:
        """Return the key (or channel) *name* of one server; on a cluster, *queue*'s own copy of it."""
        return f"{name}:{{{queue}}}" if self.cluster else name

    def job_key(self, prefix: str, job_id: str) -> str:
        """Return the key *prefix* + *job_id* (its job, result, lease...) in the slot the id's tag names.

        Raises:
            ValueError: on a cluster, *job_id* carries no queue tag (see `JobClient.locate`).
        """
        return self.by_job(prefix, job_id, job_id)

    def by_job(self, prefix: str, job_id: str, name: str) -> str:
        """Return the key *prefix* + *name* of something of *job_id*'s, in the slot of the id's tag."""
        if not self.cluster:
            return prefix + name
        queue = tag_of(job_id)
        if queue is None:
            raise ValueError(f"job id {job_id!r} carries no queue tag; look it up with JobClient.locate")
        return self.key(prefix, queue, name)

    def job_id(self, queue: str, job_id: str) -> str:
        """Return the id a job of *queue* is stored under: on a cluster, *job_id* with the queue's tag."""
        if not self.cluster or job_id.startswith("{" + queue + "}"):
            return job_id
        return "{" + queue + "}" + job_id

    def check_queue(self, queue: str) -> None:
        """Refuse a queue name the cluster layout cannot tag.

        Raises:
            ValueError: on a cluster, *queue* is empty or holds a brace (it would end the hash tag early).
        """
        if self.cluster and (not queue or "{" in queue or "}" in queue):
            raise ValueError(f"on Redis Cluster a queue name is not empty and has no braces; got {queue!r}")

    def lua_prefix(self, prefix: str) -> str:
        """Return what a script's ``'{PREFIX}' .. name`` placeholder becomes, quotes left as they are."""
        return prefix + _LUA_TAG + ":" if self.cluster else prefix

    def lua_name(self, name: str) -> str:
        """Return what a script's ``'{NAME}'`` placeholder (a whole key or channel name) becomes."""
        return name + ":" + _LUA_TAG if self.cluster else name

    def lua(self, source: str) -> str:
        """Return a rendered script as this layout runs it: on a cluster, with its tag and sharded pub/sub."""
        if not self.cluster:
            return source
        return "local T = KEYS[1]\n" + source.replace("'PUBLISH'", "'SPUBLISH'")


SINGLE = Layout()
CLUSTER = Layout(cluster=True)


def layout_of(redis: Redis) -> Layout:
    """Return the layout of the Redis *redis* is a client of."""
    return CLUSTER if isinstance(redis, RedisCluster) else SINGLE


async def run_script(script: Callable[..., Awaitable[Any]], keys: list[str], args: Sequence[Any]) -> Any:
    """Call *script* with *keys* only when there are any (a cluster's): one server's calls stay as before."""
    if keys:
        return await script(keys=keys, args=args)
    return await script(args=args)
