"""Benchmark: `mediator.send` against a direct handler call, in one run on one machine.

Prints the per-call time of each variant and its ratio to the direct call. Targets (issue 2):
send <= 2.0x direct; send with one pass-through behaviour <= 3.0x; dispatch flat in the number of
registered request types (1 vs 1,000).

Run: python tests/benchmarks/bench_send.py [--calls N] [--rounds K]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, create_model

from arq_mediator import CallNext, Context, Mediator, Request


class Pong(BaseModel):
    value: int


class Ping(Request[Pong]):
    value: int


PONG = Pong(value=1)


async def handle_ping(request: Ping, ctx: Context) -> Pong:
    return PONG


async def pass_through(request: Any, call_next: CallNext) -> Any:
    return await call_next(request)


def build_mediator(extra_types: int, behaviours: int) -> Mediator:
    mediator = Mediator()
    mediator.handler(handle_ping)
    for index in range(extra_types):
        # Distinct request types with their own handlers, so the registry really holds that many.
        request_type: Any = create_model(f"Filler{index}", __base__=Request[Pong], value=(int, 0))

        async def handle_filler(request: Any, ctx: Context) -> Pong:
            return PONG

        handle_filler.__annotations__ = {"request": request_type, "ctx": Context, "return": Pong}
        mediator.handler(handle_filler)
    for _ in range(behaviours):
        mediator.behavior(pass_through)
    return mediator


async def time_loop(call: Callable[[Ping], Awaitable[Pong]] | None, calls: int, context: Context) -> float:
    request = Ping(value=1)
    start = time.perf_counter()
    if call is None:  # the baseline: the handler awaited directly, no indirection at all
        for _ in range(calls):
            await handle_ping(request, context)
    else:
        for _ in range(calls):
            await call(request)
    return (time.perf_counter() - start) / calls


async def measure(calls: int, rounds: int) -> dict[str, float]:
    variants: dict[str, Callable[[Ping], Awaitable[Pong]] | None] = {}
    plain = build_mediator(0, 0)
    variants["direct handler call"] = None
    variants["send, 1 type registered"] = plain.send
    variants["send, 1,000 types registered"] = build_mediator(999, 0).send
    variants["send, 1 behaviour"] = build_mediator(0, 1).send
    variants["send, 1 behaviour, 1,000 types"] = build_mediator(999, 1).send
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved rounds, so drift on a shared machine hits every variant alike
        for name, call in variants.items():
            samples[name].append(await time_loop(call, calls, plain.context))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    results = asyncio.run(measure(arguments.calls, arguments.rounds))
    direct = results["direct handler call"]
    targets = {"send, 1 type registered": 2.0, "send, 1,000 types registered": 2.0}
    targets |= {"send, 1 behaviour": 3.0, "send, 1 behaviour, 1,000 types": 3.0}
    print(f"{'variant':34} {'ns/call':>9} {'ratio':>7} {'target':>7}")
    for name, seconds in results.items():
        ratio = seconds / direct
        target = targets.get(name)
        verdict = "" if target is None else ("ok" if ratio <= target else "MISS")
        target_text = f"<={target:.1f}x" if target else ""
        print(f"{name:34} {seconds * 1e9:9.0f} {ratio:6.2f}x {target_text:>7} {verdict}")


if __name__ == "__main__":
    main()
