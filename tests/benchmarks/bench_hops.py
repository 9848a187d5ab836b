"""Where one job's time goes on an idle worker: enqueue -> handler start -> result returned, hop by hop.

Runs a worker process (the peer benchmark's arq-mediator worker, `peers/mediator_worker.py`) on a Redis
server of its own, enqueues one job at a time from this process and awaits its result, while a `MONITOR`
connection records when each command reached Redis (server clock, microseconds; the same machine's clock
as this process's `time.time()`). Each sample's hops, medians over the samples:

* ``ENQUEUE sent -> at Redis``: this process builds the envelope and writes the script call;
* ``ENQUEUE -> CLAIM at Redis``: the wake PUBLISH reaches the worker's subscriber, the claim loop wakes and
  sends its CLAIM;
* ``CLAIM -> body's RPUSH at Redis``: the CLAIM reply reaches the worker, which parses the envelope, builds
  the context and span, and runs the handler, whose first act is the body's RPUSH;
* ``pushed: ENQUEUE -> body's RPUSH``, instead of the two above when the enqueue pushed the job to the
  idle worker (`_push_scripts`): the push message reaches it, which parses and starts it;
* ``RPUSH -> COMPLETE at Redis``: the RPUSH reply, the handler returns, the outcome is written;
* ``COMPLETE -> result returned``: the done PUBLISH reaches this process's result reader and the record is
  parsed;

plus, on the caller's side, when its SUBSCRIBE and its status read of `result()` reached Redis.
MONITOR slows Redis a little; read the shares, not the absolute sum.

    .venv/bin/python tests/benchmarks/bench_hops.py [--samples 200] [--redis-url redis://127.0.0.1:6395/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: import the peer modules as the worker does
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.peers.mediator_peer import VARIANTS, MediatorClient  # noqa: E402
from tests.benchmarks.peers.workload import REDIS_URL_ENV  # noqa: E402
from tests.benchmarks.private_redis import private_redis_server  # noqa: E402
from tests.processes import stop_by_pid  # noqa: E402

GAP = 0.02  # seconds between samples, at most: the worker is idle (its queue empty) when each job comes


@dataclass
class Sample:
    """One job's client-side times and the commands Redis saw for it (server times, seconds)."""

    sent: float
    returned: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)


def _command_names(line: str) -> tuple[str, str, list[str]]:
    """Split a MONITOR line into its time, its source ("lua" or an address) and its quoted words."""
    stamp, _, rest = line.partition(" ")
    source = rest[1 : rest.index("]")].split(" ")[-1]
    words = [word.strip('"') for word in rest[rest.index("]") + 2 :].split('" "')]
    return stamp, source, words


@contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url is None:
        with private_redis_server() as private:
            yield private
        return
    asyncio.run(_flushed(url))
    yield url


async def _flushed(url: str) -> None:
    redis: Redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()


@contextmanager
def _worker(url: str) -> Iterator[subprocess.Popen[bytes]]:
    [variant] = VARIANTS  # the peer benchmark's arq-mediator worker, started as that benchmark starts it
    process = subprocess.Popen(variant.command, cwd=ROOT, env=os.environ | {REDIS_URL_ENV: url})
    try:
        yield process
    finally:
        stop_by_pid(process)


async def _until_worker(redis: Redis) -> None:
    for _ in range(200):
        if await redis.zcard("arqm:workers"):
            return
        await asyncio.sleep(0.05)
    raise SystemExit("the worker did not register within 10 s")


async def _sample_jobs(url: str, samples: int, warmup: int) -> tuple[list[Sample], list[str], dict[str, str]]:
    client = MediatorClient(url)
    await client.open()
    control: Redis = Redis.from_url(url)
    await _until_worker(control)
    scripts = client.mediator._jobs.scripts
    names = {scripts.enqueue.sha: "ENQUEUE", scripts.claim.sha: "CLAIM", scripts.complete.sha: "COMPLETE"}
    names[scripts.status.sha] = "STATUS"
    monitor = await asyncio.create_subprocess_exec(
        "redis-cli", "-u", url, "monitor", stdout=asyncio.subprocess.PIPE
    )
    assert monitor.stdout is not None
    await monitor.stdout.readline()  # "OK"
    lines: list[str] = []
    reading = asyncio.create_task(_read_lines(monitor.stdout, lines))
    taken: list[Sample] = []
    try:
        for index in range(warmup + samples):
            await asyncio.sleep(random.uniform(0, GAP))
            sample = Sample(sent=time.time())
            wait = await client.enqueue("roundtrip", sample.sent)
            await wait(10.0)
            sample.returned = time.time()
            if index >= warmup:
                taken.append(sample)
        await asyncio.sleep(0.2)
    finally:
        monitor.terminate()
        await monitor.wait()
        await reading
        await control.aclose()
        await client.close()
    return taken, lines, names


async def _read_lines(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """Read the MONITOR stream as it comes: a full pipe would stall Redis's writes to it."""
    async for line in stream:
        lines.append(line.decode(errors="replace").rstrip("\n"))


def _attribute(samples: list[Sample], lines: list[str], names: dict[str, str]) -> None:
    index = 0
    for line in lines:
        try:
            stamp_text, source, words = _command_names(line)
            stamp = float(stamp_text)
        except ValueError:
            continue
        while index + 1 < len(samples) and stamp >= samples[index + 1].sent:
            index += 1
        sample = samples[index]
        if stamp < sample.sent or source == "lua":
            continue
        verb = words[0].upper()
        label = names.get(words[1], "EVALSHA ?") if verb == "EVALSHA" and len(words) > 1 else verb
        if verb == "RPUSH" and words[1:2] != ["peers:starts"]:
            continue
        if label == "CLAIM" and ("RPUSH" in sample.seen or "ENQUEUE" not in sample.seen):
            continue  # a claim after the job (or the previous job's, late): not its pickup
        sample.seen.setdefault(label, stamp)


def _report(samples: list[Sample]) -> None:
    hops = [
        ("ENQUEUE sent -> at Redis", "sent", "ENQUEUE"),
        ("ENQUEUE -> CLAIM at Redis (wake + claim loop)", "ENQUEUE", "CLAIM"),
        ("CLAIM -> body RPUSH at Redis (reply, parse, handler start)", "CLAIM", "RPUSH"),
        ("pushed: ENQUEUE -> body RPUSH (push message, parse, start)", "ENQUEUE", "RPUSH"),
        ("body RPUSH -> COMPLETE at Redis", "RPUSH", "COMPLETE"),
        ("COMPLETE -> result() returned (done PUBLISH, parse)", "COMPLETE", "returned"),
        ("caller: ENQUEUE -> its SUBSCRIBE at Redis", "ENQUEUE", "SUBSCRIBE"),
        ("caller: ENQUEUE -> its STATUS read at Redis", "ENQUEUE", "STATUS"),
    ]
    complete = [s for s in samples if {"ENQUEUE", "RPUSH", "COMPLETE"} <= set(s.seen)]
    pushed = sum(1 for s in complete if "CLAIM" not in s.seen)
    print(
        f"{len(complete)} of {len(samples)} samples with every hop seen ({pushed} pushed to the worker, "
        f"{len(complete) - pushed} claimed by it); medians in ms:"
    )

    def at(sample: Sample, name: str) -> float | None:
        if name == "sent":
            return sample.sent
        if name == "returned":
            return sample.returned
        return sample.seen.get(name)

    for title, start, end in hops:
        spans = []
        for sample in complete:
            if title.startswith("pushed") and "CLAIM" in sample.seen:
                continue
            begin, finish = at(sample, start), at(sample, end)
            if begin is not None and finish is not None:
                spans.append((finish - begin) * 1000)
        if spans:
            print(f"  {title:62} {statistics.median(spans):7.3f}  (p90 {_p90(spans):7.3f})")
    pickup = [(s.seen["RPUSH"] - s.sent) * 1000 for s in complete]
    total = [(s.returned - s.sent) * 1000 for s in complete]
    print(f"  {'enqueue -> body RPUSH at Redis (about the idle pickup)':62} {statistics.median(pickup):7.3f}")
    print(f"  {'enqueue -> result returned':62} {statistics.median(total):7.3f}")


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


def main() -> None:
    """Run the samples and print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--redis-url", help="a Redis of your own to flush and use (default: a private one)")
    arguments = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    with _server(arguments.redis_url) as url, _worker(url):
        samples, lines, names = asyncio.run(_sample_jobs(url, arguments.samples, arguments.warmup))
    _attribute(samples, lines, names)
    _report(samples)


if __name__ == "__main__":
    main()
