"""The README's library example: typed requests, a notification and a behaviour, run inline."""

import asyncio
import time
from typing import Any

from pydantic import BaseModel

from arq_mediator import CallNext, Context, Mediator, Notification, Request


class UserOut(BaseModel):
    id: int
    email: str


class CreateUser(Request[UserOut]):  # a request is generic in its response type
    email: str
    name: str


class UserCreated(Notification):  # a notification goes to every handler of its type
    user_id: int


mediator = Mediator()
users: dict[int, UserOut] = {}
welcomed: list[int] = []


@mediator.handler(queue="critical", max_tries=3)  # the job policy is used when it runs in a worker
async def create_user(request: CreateUser, ctx: Context) -> UserOut:
    user = UserOut(id=len(users) + 1, email=request.email)
    users[user.id] = user
    await ctx.mediator.publish(UserCreated(user_id=user.id))
    return user


@mediator.handler(queue="emails")
async def send_welcome(event: UserCreated, ctx: Context) -> None:
    welcomed.append(event.user_id)


@mediator.behavior  # wraps every handler, inline and (later) in workers
async def timing(request: Any, call_next: CallNext) -> Any:
    started = time.perf_counter()
    try:
        return await call_next(request)
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"{type(request).__name__} took {elapsed_ms:.2f} ms")


async def main() -> None:
    user = await mediator.send(CreateUser(email="ada@example.com", name="Ada"))  # typed: UserOut
    print(f"created user {user.id} <{user.email}>; welcomed: {welcomed}")
    assert user == UserOut(id=1, email="ada@example.com")
    assert welcomed == [1]


if __name__ == "__main__":
    asyncio.run(main())
