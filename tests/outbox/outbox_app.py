"""A mediator with an outbox, for the outbox tests in this process and in relay processes they start.

``python -m arq_mediator relay tests.outbox.outbox_app:outbox --database-url ...`` relays its table; the
Redis it pushes to comes from `URL_ENV`.
"""

from __future__ import annotations

import os

from sqlalchemy import MetaData

from arq_mediator import Context, Mediator, Notification, Request
from arq_mediator.outbox import Outbox, outbox_table

URL_ENV = "ARQM_OUTBOX_TEST_REDIS_URL"
TABLE = "test_outbox"
QUEUE = "outbox-tests"

metadata = MetaData()
table = outbox_table(metadata, TABLE)


class Echo(Request[str]):
    """Answer with the text, in upper case."""

    text: str


class Signed(Notification):
    """Someone signed up: two handlers each record it."""

    name: str


async def echo(request: Echo, ctx: Context) -> str:
    """Return the text in upper case."""
    return request.text.upper()


async def greet(event: Signed, ctx: Context) -> None:
    """Take note of the sign-up (its job's result is the proof it ran)."""


async def count(event: Signed, ctx: Context) -> None:
    """Take note of the sign-up a second time, as a second handler."""


def build(redis_url: str | None) -> tuple[Mediator, Outbox]:
    """Return a mediator on *redis_url* with the handlers above, and its outbox of `table`."""
    mediator = Mediator(redis=redis_url)
    mediator.handler(queue=QUEUE)(echo)
    mediator.handler(queue=QUEUE)(greet)
    mediator.handler(queue=QUEUE)(count)
    return mediator, Outbox(mediator, table)


mediator, outbox = build(os.environ.get(URL_ENV))
