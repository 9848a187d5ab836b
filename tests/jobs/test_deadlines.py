"""The worker's shared timer for handler timeouts keeps `asyncio.timeout`'s semantics."""

from __future__ import annotations

import asyncio

import pytest

from arq_mediator._deadlines import Deadlines


async def tried(deadlines: Deadlines, seconds: float | None, body: asyncio.Future[str]) -> str:
    """Run one try the way the worker does: *body* under a deadline of *seconds*."""
    watched = deadlines.watch(seconds)
    try:
        return await body
    except asyncio.CancelledError:
        if deadlines.timed_out(watched):
            raise TimeoutError from None
        raise
    finally:
        deadlines.forget(watched)


async def test_each_try_times_out_at_its_own_deadline_whatever_order_they_start_in() -> None:
    """A try with an earlier deadline started after a later one still ends first; one in time succeeds."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    late, early, quick = loop.create_future(), loop.create_future(), loop.create_future()
    slow = asyncio.create_task(tried(deadlines, 0.3, late))
    fast = asyncio.create_task(tried(deadlines, 0.05, early))
    unlimited = asyncio.create_task(tried(deadlines, None, quick))
    began = loop.time()
    with pytest.raises(TimeoutError):
        await fast
    assert loop.time() - began < 0.25
    assert not slow.done()
    with pytest.raises(TimeoutError):
        await slow
    assert loop.time() - began >= 0.3
    quick.set_result("done")
    assert await unlimited == "done"
    assert (slow.cancelling(), fast.cancelling()) == (0, 0)


async def test_a_try_finished_in_time_leaves_nothing_to_cancel_it_later() -> None:
    """A try that ends before its deadline is not cancelled when the deadline passes."""
    deadlines = Deadlines()
    body = asyncio.get_running_loop().create_future()
    body.set_result("in time")
    assert await asyncio.create_task(tried(deadlines, 0.02, body)) == "in time"
    await asyncio.sleep(0.05)  # the deadline passes: nothing is watched any more
    assert deadlines.timed_out(None) is False


async def test_a_try_cancelled_by_someone_else_as_well_stays_cancelled() -> None:
    """A stop or abort arriving with the deadline wins: the try ends cancelled, not timed out."""
    deadlines = Deadlines()
    body = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(tried(deadlines, 0.02, body))
    await asyncio.sleep(0)
    task.cancel()  # the worker's stop, before the deadline
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_handler_that_swallows_its_timeout_and_returns_is_not_left_cancelled() -> None:
    """A body that catches the cancellation and returns keeps its value; its task is not left cancelling."""
    deadlines = Deadlines()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "caught"
        return "slept"

    async def one_try() -> str:
        watched = deadlines.watch(0.02)
        try:
            return await stubborn()
        finally:
            deadlines.forget(watched)

    task = asyncio.create_task(one_try())
    assert await task == "caught"
    assert task.cancelling() == 0
