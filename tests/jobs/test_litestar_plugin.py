"""The Litestar plugin: the mediator opens with the app, reaches routes, and queue trouble is a 503."""

from __future__ import annotations

from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import AsyncTestClient

from arq_mediator import Mediator, Request
from arq_mediator.litestar import MediatorPlugin


class Hello(Request[str]):
    name: str


async def hello(request: Hello) -> str:
    return f"hello {request.name}"


def app_for(mediator: Mediator) -> Litestar:
    """Return an app with one route that enqueues, one that reads a job, one that sends inline."""

    @post("/hello")
    async def enqueue_hello(mediator: NamedDependency[Mediator]) -> dict[str, str]:
        handle = await mediator.enqueue(Hello(name="queued"))
        return {"id": handle.id}

    @get("/jobs/{job_id:str}")
    async def read_job(job_id: FromPath[str], mediator: NamedDependency[Mediator]) -> dict[str, object]:
        return {"value": await mediator.job(job_id).result(timeout=0)}

    @get("/inline")
    async def inline(mediator: NamedDependency[Mediator]) -> str:
        return await mediator.send(Hello(name="inline"))

    return Litestar([enqueue_hello, read_job, inline], plugins=[MediatorPlugin(mediator)])


async def test_routes_get_the_open_mediator_and_an_unknown_job_is_a_404(redis_url: str) -> None:
    """Routes receive the mediator the app opened; an unknown job id answers 404 with a detail."""
    mediator = Mediator(redis=redis_url)
    mediator.handler(hello)
    async with AsyncTestClient(app_for(mediator)) as client:
        assert (await client.get("/inline")).text == "hello inline"
        assert (await client.post("/hello")).status_code == 201
        missing = await client.get("/jobs/no-such-job")
    assert missing.status_code == 404
    assert missing.json()["status_code"] == 404
    assert "no job no-such-job" in missing.json()["detail"]


async def test_an_unreachable_queue_is_a_503_with_retry_after() -> None:
    """With Redis unreachable, enqueueing answers 503 and Retry-After, the app itself staying up."""
    mediator = Mediator(redis="redis://127.0.0.1:1/0", connect_timeout=0.2)
    mediator.handler(hello)
    async with AsyncTestClient(app_for(mediator)) as client:
        response = await client.post("/hello")
        assert (await client.get("/inline")).text == "hello inline"
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["status_code"] == 503
    assert response.json()["detail"].startswith("the job queue is unavailable")
