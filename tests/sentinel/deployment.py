"""A Sentinel deployment of the test's own on loopback: one master, one replica, three sentinels.

Every process is a Debian ``redis-server`` (a sentinel is ``redis-server <config> --sentinel``, which is
what ``redis-sentinel`` runs), each on a free port with its files in the test's directory, and each is
stopped by its PID when the test ends. The sentinels judge a master down after `DOWN_AFTER_MS` of
silence, so a failover completes in a few seconds.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.jobs.worker_processes import RedisServer, wait_until
from tests.processes import free_port, stop_by_pid

MASTER_NAME = "jobs"
DOWN_AFTER_MS = 1000
# Two of the three sentinels must agree that the master is down before one of them fails it over.
QUORUM = 2


@dataclass
class SentinelProcess:
    """One sentinel on its own port, its configuration file in its directory (a sentinel rewrites it)."""

    directory: Path
    master_port: int
    port: int = field(default_factory=free_port)
    # The sentinel's run id, set rather than drawn by the sentinel, so the others can be told it up front.
    myid: str = field(default_factory=lambda: secrets.token_hex(20))
    process: subprocess.Popen[bytes] | None = None

    def start(self, peers: list[SentinelProcess], replica_ports: list[int]) -> None:
        """Write the configuration and start the sentinel.

        The other sentinels and the replicas are written in as already known (the lines a sentinel writes
        when it rewrites its own file): found by itself, a replica takes up to one INFO period (10 s) and
        much longer on a loaded machine, which made the deployment's start the slowest and least sure part.
        """
        known = [f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {port}\n" for port in replica_ports]
        known += [
            f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {peer.port} {peer.myid}\n"
            for peer in peers
            if peer is not self
        ]
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel myid {self.myid}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n" + "".join(known)
        )
        with (self.directory / "sentinel.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        """Stop the sentinel by its PID."""
        process, self.process = self.process, None
        if process is not None:
            stop_by_pid(process)


@dataclass
class SentinelDeployment:
    """The master, its replicas (one by default) and three sentinels; `url` reaches the master via them."""

    directory: Path
    replica_count: int = 1
    master: RedisServer = field(init=False)
    replicas: list[RedisServer] = field(init=False)
    sentinels: list[SentinelProcess] = field(init=False)

    def __post_init__(self) -> None:
        # No delay before a replica's first full sync: the default waits 5 s for more replicas to join.
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(self._folder("master"), options=fast_sync)
        follow = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replicas = [
            RedisServer(self._folder(f"replica-{i}"), options=(*fast_sync, *follow))
            for i in range(self.replica_count)
        ]
        self.sentinels = [SentinelProcess(self._folder(f"sentinel-{i}"), self.master.port) for i in range(3)]

    @property
    def replica(self) -> RedisServer:
        """Return the first replica."""
        return self.replicas[0]

    def _folder(self, name: str) -> Path:
        folder = self.directory / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def url(self, db: int = 0) -> str:
        """Return the ``redis+sentinel://`` URL of database *db* on the master."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/{db}"

    async def start(self) -> None:
        """Start every process; return once the replica is in sync and each sentinel knows all the others."""
        self.master.start()
        await self.master.ready()
        for replica in self.replicas:
            replica.start()
            await replica.ready()
        for sentinel in self.sentinels:
            sentinel.start(self.sentinels, [replica.port for replica in self.replicas])
        await wait_until(self._replicas_in_sync, "the replicas to sync with the master", timeout=30.0)
        await wait_until(
            self._sentinels_ready,
            "the sentinels to find each other and the replica",
            timeout=60.0,
            diagnose=self._sentinel_logs,
        )

    def _sentinel_logs(self) -> str:
        """Return the end of each sentinel's log, for a start that timed out."""
        return "\n".join(
            f"--- sentinel on {sentinel.port}:\n"
            + "\n".join((sentinel.directory / "sentinel.log").read_text(errors="replace").splitlines()[-15:])
            for sentinel in self.sentinels
            if (sentinel.directory / "sentinel.log").exists()
        )

    def stop(self) -> None:
        """Stop every process by its PID (those a test killed already are skipped)."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for replica in self.replicas:
            replica.stop()
        self.master.stop()

    async def _replicas_in_sync(self) -> bool:
        for replica in self.replicas:
            if (await self._info(replica.port, "replication")).get("master_link_status") != "up":
                return False
        return True

    async def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            client: Redis = Redis(port=sentinel.port)
            try:
                state = (await _masters(client)).get(MASTER_NAME)
            except RedisError:
                return False
            finally:
                await client.aclose()
            if not state or state["num-other-sentinels"] < 2 or state["num-slaves"] < self.replica_count:
                return False
        return True

    async def master_port(self) -> int | None:
        """Return the port of the master the sentinels name now, or ``None`` when they name none up."""
        client: Redis = Redis(port=self.sentinels[0].port)
        try:
            state = (await _masters(client)).get(MASTER_NAME)
        except RedisError:
            return None
        finally:
            await client.aclose()
        if not state or not state["is_master"] or state["is_sdown"] or state["is_odown"]:
            return None
        return int(state["port"])

    async def role(self, port: int) -> str | None:
        """Return the role (``master`` or ``slave``) the server on *port* reports, ``None`` if it is down."""
        return (await self._info(port, "replication")).get("role")

    async def _info(self, port: int, section: str) -> dict[str, str]:
        client: Redis = Redis(port=port, decode_responses=True)
        try:
            info: dict[str, str] = await client.info(section)
            return info
        except (RedisError, OSError):
            return {}
        finally:
            await client.aclose()


async def _masters(sentinel: Redis) -> dict[str, dict[str, Any]]:
    """Return what *sentinel* knows of each master it monitors, by name."""
    masters: dict[str, dict[str, Any]] = await sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
    return masters
