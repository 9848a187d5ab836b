"""Benchmark: draining one queue per shard on a one-node cluster and on a three-master cluster, one run.

Starts both clusters itself (ports 7100-7199, files in a temporary folder; every node stopped by PID),
and a plain redis-server (arq's layout) as the baseline. In interleaved rounds, on each: defers `--jobs`
no-op jobs on each of the queues ``high``, ``mid`` and ``low`` (on three masters in the three-node
cluster, all on the one node otherwise) to come due at once, with one worker process per queue
(``--max-jobs`` each) already running, and times from their due moment until every queue is empty.
Prints the drain rate of each, the ratios, and where the CPU went: the Redis nodes' (and the busiest
node's) and the workers' CPU seconds per 1,000 jobs, read from /proc, and the cores they kept busy. On a
machine with fewer cores than processes the gain of more nodes is bounded by the cores: the figures say
by how much.

Run from the repository root: python tests/benchmarks/bench_cluster.py [--jobs N] [--rounds K]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: import the apps as the workers do, from the repository root
    sys.path.insert(0, str(ROOT))

from arq_mediator import Mediator  # noqa: E402
from tests.benchmarks.cluster_app import QUEUES, REQUESTS, URL_ENV, build  # noqa: E402
from tests.cluster.deployment import ClusterDeployment  # noqa: E402
from tests.jobs.worker_processes import wait_until  # noqa: E402
from tests.processes import ManagedProcess, ManagedProcesses, free_port  # noqa: E402

# Seconds from the end of the enqueue to the jobs' due moment: the workers are idle and waiting by then.
LEAD = 3.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process *pid* used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Drain:
    """One drain: jobs per second, and CPU seconds per 1,000 jobs of the nodes (all, busiest) and workers."""

    rate: float
    redis_cpu: float
    busiest_node_cpu: float
    worker_cpu: float

    @property
    def busy(self) -> float:
        """Return how many cores Redis and the workers kept busy on average during the drain."""
        return (self.redis_cpu + self.worker_cpu) / 1000 * self.rate


class Setup:
    """A cluster, or a plain server (`server` set, the cluster empty), and one worker process per queue."""

    def __init__(self, name: str, cluster: ClusterDeployment, processes: ManagedProcesses) -> None:
        self.name = name
        self.cluster = cluster
        self.processes = processes
        self.workers: list[ManagedProcess] = []
        self.server: ManagedProcess | None = None
        self.url = cluster.url()

    def start_workers(self, max_jobs: int) -> None:
        environment = {**os.environ, URL_ENV: self.url, "PYTHONUNBUFFERED": "1"}
        for queue in QUEUES:
            arguments = ["-m", "arq_mediator", "worker", "tests.benchmarks.cluster_app:mediator"]
            arguments += ["--queues", queue, "--max-jobs", str(max_jobs), "--name", f"{self.name}-{queue}"]
            self.workers.append(self.processes.start(f"{self.name}-{queue}", arguments, environment))

    async def wait_for_workers(self, mediator: Mediator) -> None:
        """Return once every worker process's heartbeat is in."""

        async def up() -> bool:
            return len((await mediator.stats()).workers) == len(QUEUES)

        await wait_until(up, f"{self.name} workers", timeout=60.0, diagnose=self.processes.logs)

    def cpu(self) -> tuple[list[float], float]:
        """Return each node's CPU seconds and the workers' together."""
        nodes = [cpu_seconds(node.process.pid) for node in self.cluster.nodes if node.process is not None]
        if self.server is not None:
            nodes.append(cpu_seconds(self.server.pid))
        return nodes, sum(cpu_seconds(worker.pid) for worker in self.workers)

    async def drain(self, mediator: Mediator, jobs: int) -> Drain:
        """Defer *jobs* per queue to one due moment, then time the workers through them all."""
        started = time.monotonic()
        for queue in QUEUES:
            for first in range(0, jobs, 1000):
                count = min(1000, jobs - first)
                due_in = LEAD - (time.monotonic() - started)
                await mediator.enqueue_many([REQUESTS[queue]() for _ in range(count)], by=max(due_in, 0.5))
        due_at = started + LEAD
        await asyncio.sleep(max(due_at - time.monotonic() - 0.2, 0))
        nodes_before, workers_before = self.cpu()

        async def drained() -> bool:
            stats = await mediator.stats()
            return sum(queue.ready + queue.running + queue.deferred for queue in stats.queues) == 0

        await wait_until(drained, f"{self.name} to drain", timeout=300.0, diagnose=self.processes.logs)
        elapsed = time.monotonic() - max(due_at, started)
        nodes_after, workers_after = self.cpu()
        total = jobs * len(QUEUES)
        node_cpu = [after - before for before, after in zip(nodes_before, nodes_after, strict=True)]
        return Drain(
            rate=total / elapsed,
            redis_cpu=sum(node_cpu) / total * 1000,
            busiest_node_cpu=max(node_cpu) / total * 1000,
            worker_cpu=(workers_after - workers_before) / total * 1000,
        )


async def run(jobs: int, rounds: int, max_jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        processes = ManagedProcesses(Path(folder))
        one = ClusterDeployment(Path(folder) / "one", masters=1, replicas=0)
        three = ClusterDeployment(Path(folder) / "three", masters=3, replicas=0)
        plain = Setup("server", ClusterDeployment(Path(folder) / "none", masters=0), processes)
        setups = [plain, Setup("1-node", one, processes), Setup("3-node", three, processes)]
        try:
            for setup in setups:
                if setup is plain:
                    plain.server, plain.url = start_server(processes, Path(folder))
                else:
                    await setup.cluster.start()
                setup.start_workers(max_jobs)
            for setup in setups:
                async with build(setup.url) as mediator:
                    await setup.wait_for_workers(mediator)
            drains: dict[str, list[Drain]] = {setup.name: [] for setup in setups}
            for round_number in range(rounds):
                for setup in setups if round_number % 2 == 0 else reversed(setups):
                    async with build(setup.url) as mediator:
                        drain = await setup.drain(mediator, jobs)
                    drains[setup.name].append(drain)
                    print(
                        f"round {round_number + 1} {setup.name}: {drain.rate:8,.0f} jobs/s; CPU s/1,000 jobs:"
                        f" Redis {drain.redis_cpu:.3f} (busiest node {drain.busiest_node_cpu:.3f}),"
                        f" workers {drain.worker_cpu:.3f}; cores busy {drain.busy:.2f};"
                        f" load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
            report(drains, jobs, max_jobs)
        finally:
            processes.stop_all()
            for setup in setups:
                setup.cluster.stop()


def start_server(processes: ManagedProcesses, folder: Path) -> tuple[ManagedProcess, str]:
    """Start a plain redis-server (no cluster); return it and its URL. It stops with the other processes."""
    port = str(free_port())
    arguments = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = processes.start_program("plain-redis", [*arguments, "--dir", str(folder)], dict(os.environ))
    return server, f"redis://127.0.0.1:{port}/0"


def report(drains: dict[str, list[Drain]], jobs: int, max_jobs: int) -> None:
    one, three, plain = drains["1-node"], drains["3-node"], drains["server"]
    best_one, best_three = max(d.rate for d in one), max(d.rate for d in three)
    print(
        f"\ndrain of {jobs:,} no-op jobs on each of {len(QUEUES)} queues, one worker process per queue "
        f"(max_jobs {max_jobs}), {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.2f}"
    )
    for name, runs in drains.items():
        rates = ", ".join(f"{d.rate:,.0f}" for d in runs)
        print(
            f"  {name}: {rates} jobs/s; CPU s per 1,000 jobs (median): Redis "
            f"{statistics.median(d.redis_cpu for d in runs):.3f}, busiest node "
            f"{statistics.median(d.busiest_node_cpu for d in runs):.3f}, workers "
            f"{statistics.median(d.worker_cpu for d in runs):.3f}; cores busy "
            f"{statistics.median(d.busy for d in runs):.2f}"
        )
    print(f"  3 nodes / 1 node (best runs): {best_three / best_one:.2f}x")
    print(f"  1-node cluster / plain server (best runs): {best_one / max(d.rate for d in plain):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per queue per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains of each cluster, interleaved")
    parser.add_argument("--max-jobs", type=int, default=50, help="max_jobs of each worker process")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.jobs, arguments.rounds, arguments.max_jobs))


if __name__ == "__main__":
    main()
