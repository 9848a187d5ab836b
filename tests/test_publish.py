"""Inline `publish`: every handler of a notification runs, concurrently, and failures are grouped."""

from __future__ import annotations

import asyncio

import pytest

from arq_mediator import Context, Mediator, Notification, Request


class OrderPlaced(Notification):
    order_id: int


class OrderCancelled(Notification):
    order_id: int


class PaymentDeclined(Exception):
    pass


class Abort(BaseException):
    """A BaseException that is not an Exception, as cancellation-like signals are."""


async def test_publish_runs_every_handler(mediator: Mediator) -> None:
    """Each handler of the notification's type runs once with the notification; others do not run."""
    calls: list[tuple[str, int]] = []

    @mediator.handler
    async def reserve_stock(event: OrderPlaced, ctx: Context) -> None:
        assert ctx.mediator is mediator
        calls.append(("reserve_stock", event.order_id))

    @mediator.handler
    async def send_receipt(event: OrderPlaced) -> None:
        calls.append(("send_receipt", event.order_id))

    @mediator.handler
    async def refund(event: OrderCancelled) -> None:
        calls.append(("refund", event.order_id))

    await mediator.publish(OrderPlaced(order_id=7))
    assert sorted(calls) == [("reserve_stock", 7), ("send_receipt", 7)]
    await mediator.publish(OrderPlaced(order_id=8))  # served from the cached fan-out
    assert len(calls) == 4


async def test_publish_runs_handlers_concurrently(mediator: Mediator) -> None:
    """A handler waiting for an event set by a later handler completes, which a sequential run cannot do."""
    ready = asyncio.Event()
    order: list[str] = []

    @mediator.handler
    async def waiter(event: OrderPlaced) -> None:
        order.append("waiter started")
        await ready.wait()
        order.append("waiter finished")

    @mediator.handler
    async def setter(event: OrderPlaced) -> None:
        order.append("setter ran")
        ready.set()

    async with asyncio.timeout(5):  # a sequential implementation would wait forever in `waiter`
        await mediator.publish(OrderPlaced(order_id=1))
    assert order == ["waiter started", "setter ran", "waiter finished"]


async def test_failure_does_not_stop_other_handlers(mediator: Mediator) -> None:
    """When one handler fails the others still finish; then an ExceptionGroup of that failure is raised."""
    failure = PaymentDeclined("card declined")
    release = asyncio.Event()
    finished: list[str] = []

    @mediator.handler
    async def slow(event: OrderPlaced) -> None:
        await release.wait()  # still running when `charge` has already failed
        finished.append("slow")

    @mediator.handler
    async def charge(event: OrderPlaced) -> None:
        release.set()
        raise failure

    @mediator.handler
    async def notify(event: OrderPlaced) -> None:
        finished.append("notify")

    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.timeout(5):
            await mediator.publish(OrderPlaced(order_id=1))
    group = caught.value
    assert group.message == "1 of 3 handlers of OrderPlaced failed"
    assert group.exceptions == (failure,)
    assert group.exceptions[0] is failure
    assert sorted(finished) == ["notify", "slow"]


async def test_several_failures_are_grouped_in_registration_order(mediator: Mediator) -> None:
    """Every failing handler's exception is in the group, in the order the handlers were registered."""
    first = PaymentDeclined("first")
    second = ValueError("second")

    @mediator.handler
    async def fails_first(event: OrderPlaced) -> None:
        raise first

    @mediator.handler
    async def succeeds(event: OrderPlaced) -> None:
        pass

    @mediator.handler
    async def fails_second(event: OrderPlaced) -> None:
        raise second

    with pytest.raises(ExceptionGroup) as caught:
        await mediator.publish(OrderPlaced(order_id=1))
    assert caught.value.message == "2 of 3 handlers of OrderPlaced failed"
    assert caught.value.exceptions == (first, second)


async def test_publish_without_handlers_is_a_no_op(mediator: Mediator) -> None:
    """Publishing a notification nobody handles is not an error; a handler added later is then used."""
    calls: list[int] = []
    await mediator.publish(OrderPlaced(order_id=1))
    await mediator.publish(OrderPlaced(order_id=2))

    @mediator.handler
    async def record(event: OrderPlaced) -> None:
        calls.append(event.order_id)

    await mediator.publish(OrderPlaced(order_id=3))
    assert calls == [3]


async def test_base_exception_is_reraised_as_itself(mediator: Mediator) -> None:
    """A handler raising a BaseException that is not an Exception re-raises it as is, not in a group."""
    abort = Abort("stop now")
    finished: list[str] = []

    @mediator.handler
    async def fails(event: OrderPlaced) -> None:
        raise PaymentDeclined("ordinary failure")

    @mediator.handler
    async def aborts(event: OrderPlaced) -> None:
        raise abort

    @mediator.handler
    async def completes(event: OrderPlaced) -> None:
        finished.append("completes")

    with pytest.raises(Abort) as caught:
        await mediator.publish(OrderPlaced(order_id=1))
    assert caught.value is abort
    assert finished == ["completes"]


async def test_handler_can_publish_another_notification(mediator: Mediator) -> None:
    """A handler can publish another notification via ctx.mediator; its handlers finish before it returns."""
    seen: list[int] = []

    @mediator.handler
    async def on_cancelled(event: OrderCancelled) -> None:
        seen.append(event.order_id)

    @mediator.handler
    async def on_placed(event: OrderPlaced, ctx: Context) -> None:
        await ctx.mediator.publish(OrderCancelled(order_id=event.order_id))
        seen.append(-event.order_id)

    await mediator.publish(OrderPlaced(order_id=5))
    assert seen == [5, -5]


class Lookup(Request[int]):
    pass


async def test_publishing_a_request_is_a_type_error_pointing_to_send() -> None:
    """`publish` takes notifications; a request is refused with a TypeError naming send(), not ignored."""
    mediator = Mediator()

    @mediator.handler
    async def lookup(request: Lookup) -> int:
        return 1

    with pytest.raises(
        TypeError, match=r"Lookup is not one: a request has one handler, run it with send\(\)"
    ):
        await mediator.publish(Lookup())  # type: ignore[arg-type]
