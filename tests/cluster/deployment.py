"""A Redis Cluster of the test's own on loopback: three masters, each with one replica.

Every node is a Debian ``redis-server --cluster-enabled yes`` on a port of its own (its cluster bus on the
port + 10000), with its files in the test's directory; ``redis-cli --cluster create`` assigns the slots.
Each node is stopped by its PID when the test ends. Nodes judge a peer down after `NODE_TIMEOUT_MS`, so a
killed master's replica takes over within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.jobs.worker_processes import wait_until
from tests.processes import stop_by_pid

NODE_TIMEOUT_MS = 1000
# Where the cluster nodes of this project's tests may take ports (the bus port is each + 10000): by default
# 7100-7199; ``ARQM_TEST_CLUSTER_PORTS=7400-7499`` gives another range, for runs side by side on one host.
PORTS_ENV = "ARQM_TEST_CLUSTER_PORTS"


def _port_range() -> range:
    first, _, last = os.environ.get(PORTS_ENV, "7100-7199").partition("-")
    return range(int(first), int(last) + 1)


PORTS = _port_range()


def unavailable_reason() -> str | None:
    """Return why no cluster can be started here (no redis-server, or one older than 7.0), or ``None``."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "redis-server and redis-cli are not installed"
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.", version)
    if found is None or int(found.group(1)) < 7:
        return f"cluster tests need redis-server 7.0 or later (sharded pub/sub), found {version.strip()!r}"
    return None


async def command(client: Redis, *arguments: str) -> Any:
    """Send one command to one node and return its reply."""
    return await client.execute_command(*arguments)  # type: ignore[no-untyped-call]


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports this process handed to a deployment: two deployments built before either starts must not share.
_HANDED_OUT: set[int] = set()


def _free_ports(count: int) -> list[int]:
    """Return *count* ports of `PORTS` free now, with their bus ports free too, and not handed out yet."""
    ports = [port for port in PORTS if port not in _HANDED_OUT and _free(port) and _free(port + 10000)]
    if len(ports) < count:
        raise RuntimeError(f"fewer than {count} free port pairs in {PORTS}")
    _HANDED_OUT.update(ports[:count])
    return ports[:count]


@dataclass
class ClusterNode:
    """One cluster node on its port, its files (nodes.conf) in its directory."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    # With ``False``, the other masters keep serving their slots while this one's are not served.
    full_coverage: bool = True

    def start(self) -> None:
        """Start the node."""
        arguments = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            # A replica may take over whatever its link's age: the test kills masters on purpose.
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-require-full-coverage",
            "yes" if self.full_coverage else "no",
            "--dir",
            str(self.directory),
        ]
        with (self.directory / "redis-server.log").open("ab") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)

    def client(self) -> Redis:
        """Return a plain client of this node alone."""
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def freeze(self) -> None:
        """SIGSTOP the node: it keeps its sockets but answers nothing, as a hung host would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen node: it reads what waited in its sockets and carries on."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10.0)
            self.process = None

    def stop(self) -> None:
        """Stop the node by its PID."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:  # a frozen node handles SIGTERM only once it runs again
                process.send_signal(signal.SIGCONT)
            stop_by_pid(process)


@dataclass
class ClusterDeployment:
    """Three masters and a replica of each; `url` reaches the cluster through any of them.

    With *full_coverage* ``False`` a master that is down takes only its own slots out of service (Redis
    stops the whole cluster otherwise), as a deployment without replicas would run.
    """

    directory: Path
    masters: int = 3
    replicas: int = 1
    full_coverage: bool = True
    nodes: list[ClusterNode] = field(init=False)

    def __post_init__(self) -> None:
        ports = _free_ports(self.masters * (1 + self.replicas))
        self.nodes = []
        for port in ports:
            folder = self.directory / f"node-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(ClusterNode(folder, port, full_coverage=self.full_coverage))

    def url(self) -> str:
        """Return the ``redis+cluster://`` URL listing every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    async def start(self) -> None:
        """Start every node, assign the slots, and return once every node says the cluster is ok."""
        for node in self.nodes:
            node.start()
        await asyncio.gather(*(self._answers(node) for node in self.nodes))
        if len(self.nodes) == 1:  # redis-cli creates three masters or more: one node takes every slot itself
            client = self.nodes[0].client()
            try:
                await command(client, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            finally:
                await client.aclose()
            await self.wait_ok()
            return
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes)]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = await asyncio.to_thread(subprocess.run, create, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        await self.wait_ok()
        await wait_until(self._replicas_in_sync, "every replica in sync with its master", timeout=20.0)

    async def _replicas_in_sync(self) -> bool:
        synced = 0
        for node in self.nodes:
            client = node.client()
            try:
                info = await client.info("replication")
            except (RedisError, OSError):
                return False
            finally:
                await client.aclose()
            synced += info.get("role") == "slave" and info.get("master_link_status") == "up"
        return synced == self.masters * self.replicas

    async def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with all slots served."""

        async def ok() -> bool:
            for node in self.nodes:
                if node.process is None:
                    continue
                client = node.client()
                try:
                    info = await command(client, "CLUSTER", "INFO")
                except (RedisError, OSError):
                    return False
                finally:
                    await client.aclose()
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                    return False
            return True

        await wait_until(ok, "cluster_state:ok on every node", timeout=timeout)

    async def master_of(self, key: str) -> ClusterNode:
        """Return the node serving *key*'s slot now."""
        client = next(node for node in self.nodes if node.process is not None).client()
        try:
            slot = int(await command(client, "CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in await command(client, "CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(node for node in self.nodes if node.port == port)
        finally:
            await client.aclose()
        raise AssertionError(f"no node serves the slot of {key}")

    async def replica_of(self, master: ClusterNode) -> ClusterNode:
        """Return a replica of *master*."""
        client = master.client()
        try:
            node_id = (await command(client, "CLUSTER", "MYID")).decode()
            lines = (await command(client, "CLUSTER", "REPLICAS", node_id)) or []
        finally:
            await client.aclose()
        port = int(lines[0].decode().split()[1].split(":")[1].split("@")[0])
        return next(node for node in self.nodes if node.port == port)

    async def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.nodes:
            if node.process is None:
                continue
            client = node.client()
            try:
                if (await command(client, "ROLE"))[0] == b"master":
                    await client.flushall()
            finally:
                await client.aclose()

    async def _answers(self, node: ClusterNode) -> None:
        async def ping() -> bool:
            client = node.client()
            try:
                return bool(await client.ping())
            except (RedisError, OSError):
                return False
            finally:
                await client.aclose()

        await wait_until(ping, f"cluster node on port {node.port}", timeout=10.0)

    def stop(self) -> None:
        """Stop every node by its PID, and give its ports back."""
        for node in self.nodes:
            node.stop()
            _HANDED_OUT.discard(node.port)
