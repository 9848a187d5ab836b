"""The README's testing example: a unit test runs what it enqueues in memory, as a worker would."""

import asyncio

from pydantic import BaseModel

from arq_mediator import Context, JobFailedError, Mediator, Request
from arq_mediator.testing import local_queue


class Receipt(BaseModel):
    order_id: int
    cents: int


class ChargeCard(Request[Receipt]):
    order_id: int
    cents: int


mediator = Mediator()
attempts: list[int] = []


@mediator.handler(queue="payments", max_tries=3, retry_on=(ConnectionError,))
async def charge_card(request: ChargeCard, ctx: Context) -> Receipt:
    attempts.append(request.order_id)
    if request.cents <= 0:
        raise ValueError(f"cannot charge {request.cents} cents")  # not in retry_on: fails at once
    if attempts.count(request.order_id) < 2:
        raise ConnectionError("the payment gateway timed out")  # retried, as in a worker
    return Receipt(order_id=request.order_id, cents=request.cents)


async def test_charge_card() -> None:
    async with local_queue(mediator) as queue:  # no Redis: jobs wait in memory
        job = await mediator.enqueue(ChargeCard(order_id=7, cents=1250))  # JobHandle[Receipt]
        refused = await mediator.enqueue(ChargeCard(order_id=8, cents=0))
        await queue.run_all()  # every job through its JSON envelope, behaviours and retries
        assert await job.result() == Receipt(order_id=7, cents=1250)
        try:
            await refused.result()
        except JobFailedError as error:
            print(f"refused: {error.remote_type}: {error.remote_message}")
        print(f"charged after {attempts.count(7)} tries: {await job.result()}")


if __name__ == "__main__":
    asyncio.run(test_charge_card())
