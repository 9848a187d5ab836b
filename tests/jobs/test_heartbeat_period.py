"""The heartbeat's period counts from each beat's start, so a slow beat does not stretch the renewals."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

from arq_mediator._heartbeat import Heartbeat

if TYPE_CHECKING:
    from arq_mediator._worker import Worker

PERIOD = 0.5
# Each beat takes most of a period, as a beat on a cluster does while it waits out a hung node.
SLOW_BEAT = 0.4


class SlowBeats(Heartbeat):
    def __init__(self, worker: Worker, beats: int) -> None:
        super().__init__(worker)
        self.starts: list[float] = []
        self.done = asyncio.Event()
        self._wanted = beats

    async def _beat(self) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        if len(self.starts) >= self._wanted:
            self.done.set()
        await asyncio.sleep(SLOW_BEAT)


async def test_a_slow_beat_does_not_delay_the_next_one_by_its_own_time() -> None:
    worker = cast("Worker", SimpleNamespace(name="period-test", settings=SimpleNamespace(heartbeat=PERIOD)))
    heartbeat = SlowBeats(worker, beats=4)
    running = asyncio.create_task(heartbeat.run())
    try:
        async with asyncio.timeout(10):
            await heartbeat.done.wait()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    gaps = [later - earlier for earlier, later in zip(heartbeat.starts, heartbeat.starts[1:], strict=False)]
    # Counted from the end of each beat, the gaps would be PERIOD + SLOW_BEAT = 0.9 s.
    assert sorted(gaps)[len(gaps) // 2] < PERIOD + SLOW_BEAT / 2, gaps
