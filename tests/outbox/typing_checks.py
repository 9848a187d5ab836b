"""The outbox's types, checked by mypy --strict (not a pytest module): handles are typed by the response.

The `assert_type` calls are verified by mypy; the `# type: ignore[...]` lines are expected errors, and
mypy --strict reports an ignore that stops being needed, so each fails the type check if its error goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_type

from sqlalchemy.ext.asyncio import AsyncSession

from arq_mediator import JobHandle
from arq_mediator.outbox import Outbox

from .outbox_app import Echo, Signed


async def typed_writes(outbox: Outbox, session: AsyncSession) -> None:
    """Each way of writing to the outbox gives handles typed by what the request answers."""
    assert_type(await outbox.enqueue(Echo(text="x"), session=session), JobHandle[str])
    assert_type(await outbox.defer(Echo(text="x"), session=session, by=5), JobHandle[str])
    assert_type(await outbox.enqueue_many([Echo(text="x")], session=session), list[JobHandle[str]])
    assert_type(await outbox.enqueue_publish(Signed(name="x"), session=session), list[JobHandle[None]])
    if TYPE_CHECKING:
        await outbox.enqueue(Echo(text="x"))  # type: ignore[call-arg]
        await outbox.enqueue(Signed(name="x"), session=session)  # type: ignore[arg-type]
