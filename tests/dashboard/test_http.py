"""The dashboard over HTTP: who it serves, how actions are protected, paging, and answers to bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.connection import ASGIConnection

from arq_mediator.dashboard import DashboardPlugin, JobState, dashboard_app
from tests.dashboard.fakes import FakeSource, job
from tests.dashboard.serving import get_token, outside_address, serving, serving_unix, token_in

PAGES = ["/", "/queues", "/jobs/failed", "/jobs/succeeded", "/job/failed-1", "/recurring", "/workers"]


@pytest.fixture
def source() -> FakeSource:
    """Return a source with one failed, one succeeded and one running job."""
    fake = FakeSource()
    fake.add(
        job("failed-1", JobState.FAILED),
        job("done-1", JobState.SUCCEEDED, queue="emails"),
        job("run-1", JobState.RUNNING),
    )
    return fake


@asynccontextmanager
async def dashboard(
    source: Any, *, host: str = "127.0.0.1", connect_to: str = "127.0.0.1", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve a dashboard on *source* at /dashboard on *host*; yield a client connecting from *connect_to*."""
    app = dashboard_app(source, path="/dashboard", **options)
    async with (
        serving(app, host) as port,
        httpx.AsyncClient(base_url=f"http://{connect_to}:{port}/dashboard") as client,
    ):
        yield client


# Access --------------------------------------------------------------------------------------------------


async def test_every_page_answers_a_local_request(source: FakeSource) -> None:
    """From loopback, each page answers 200 with HTML and the security headers."""
    async with dashboard(source) as client:
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("text/html")
            policy = response.headers["content-security-policy"]
            assert "default-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy


async def test_a_remote_peer_is_refused_even_when_it_claims_to_be_local(source: FakeSource) -> None:
    """A peer that is not loopback gets 403, whatever X-Forwarded-For, Forwarded or X-Real-IP say."""
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no address other than loopback to connect from")
    spoofs = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1"}
    async with dashboard(source, host=address, connect_to=address) as client:
        for path in PAGES:
            response = await client.get(path, headers=spoofs)
            assert response.status_code == 403, path
            assert "only local requests" in response.text
        assert (await client.get("/events", headers=spoofs)).status_code == 403


async def test_authorize_replaces_the_loopback_rule(source: FakeSource) -> None:
    """An ``authorize`` hook (sync or async) decides alone: it admits a remote peer, refuses a local one."""
    calls: list[str] = []

    async def by_header(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        calls.append(connection.url.path)
        return connection.headers.get("x-dashboard-key") == "sesame"

    async with dashboard(source, authorize=by_header) as client:
        assert (await client.get("/")).status_code == 403
        assert (await client.get("/", headers={"x-dashboard-key": "sesame"})).status_code == 200
    assert calls == ["/dashboard", "/dashboard"]
    address = outside_address()
    if address is not None:
        async with dashboard(source, host=address, connect_to=address, authorize=lambda _: True) as client:
            assert (await client.get("/queues")).status_code == 200


async def test_a_unix_socket_needs_authorize(source: FakeSource, tmp_path: Path) -> None:
    """On a Unix socket no request has a peer address: without ``authorize`` each gets 403 saying so."""
    for authorize, status in ((None, 403), (lambda _: True, 200)):
        socket_path = str(tmp_path / f"dashboard-{status}.sock")
        app = dashboard_app(source, path="/dashboard", authorize=authorize)
        transport = httpx.AsyncHTTPTransport(uds=socket_path)
        async with (
            serving_unix(app, socket_path),
            httpx.AsyncClient(transport=transport, base_url="http://dashboard/dashboard") as client,
        ):
            for path in PAGES:
                response = await client.get(path)
                assert response.status_code == status, (path, response.text)
            if status == 403:
                assert "no peer address" in response.text
                assert "authorize" in response.text


async def test_authorize_must_say_true_to_admit(source: FakeSource) -> None:
    """A hook that returns something truthy but not True (a user object, say) does not admit."""
    async with dashboard(source, authorize=lambda _: "yes") as client:
        assert (await client.get("/")).status_code == 403


# Actions and CSRF ----------------------------------------------------------------------------------------


async def test_an_action_with_the_page_token_is_done_and_redirects(source: FakeSource) -> None:
    """Requeue from the job page with its token: done once, then 303 to the job page saying so."""
    async with dashboard(source) as client:
        token = await get_token(client, "/job/failed-1")
        response = await client.post("/job/failed-1/requeue", data={"csrf_token": token})
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/job/failed-1?done=requeued"
        assert (
            "The job was requeued."
            in (await client.get(client.base_url.join(response.headers["location"]))).text
        )
    assert source.done == [("requeue", "failed-1")]


async def test_an_action_without_a_matching_token_is_refused(source: FakeSource) -> None:
    """No token, a wrong token, or a token without its cookie: 403 and nothing done."""
    async with dashboard(source) as client:
        assert (await client.post("/job/failed-1/requeue")).status_code == 403
        token = await get_token(client, "/job/failed-1")
        assert (
            await client.post("/job/failed-1/requeue", data={"csrf_token": token + "x"})
        ).status_code == 403
        client.cookies.clear()
        response = await client.post("/job/failed-1/requeue", data={"csrf_token": token})
        assert response.status_code == 403
        assert "security token" in response.text
    assert source.done == []


async def test_an_action_from_another_origin_is_refused(source: FakeSource) -> None:
    """A form posted from another site is refused by its Origin or Sec-Fetch-Site, even with the token."""
    async with dashboard(source) as client:
        token = await get_token(client, "/job/failed-1")
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            response = await client.post("/job/failed-1/requeue", data={"csrf_token": token}, headers=headers)
            assert response.status_code == 403, headers
        own = str(client.base_url).removesuffix("/dashboard")
        response = await client.post(
            "/job/failed-1/requeue", data={"csrf_token": token}, headers={"Origin": own}
        )
        assert response.status_code == 303
    assert source.done == [("requeue", "failed-1")]


async def test_actions_are_posts_only(source: FakeSource) -> None:
    """A GET of an action's URL does nothing (405)."""
    async with dashboard(source) as client:
        assert (await client.get("/job/failed-1/delete")).status_code == 405
    assert source.done == []


async def test_a_bulk_action_asks_to_confirm_first(source: FakeSource) -> None:
    """Bulk requeue of failed jobs in a queue: a page with the count, then the action on confirmation."""
    source.add(job("failed-2", JobState.FAILED), job("failed-3", JobState.FAILED, queue="emails"))
    async with dashboard(source) as client:
        token = await get_token(client, "/jobs/failed")
        asked = await client.post("/jobs/failed/requeue", data={"csrf_token": token, "queue": "default"})
        assert asked.status_code == 200
        assert "Requeue 2 failed jobs in queue <strong>default</strong>?" in asked.text
        assert source.done == []
        confirmed = await client.post(
            "/jobs/failed/requeue",
            data={"csrf_token": token_in(asked.text), "queue": "default", "confirm": "yes"},
        )
        assert confirmed.status_code == 303
        assert confirmed.headers["location"] == "/dashboard/jobs/failed?done=bulk&handled=2&queue=default"
        assert (
            "2 jobs were handled."
            in (await client.get(client.base_url.join(confirmed.headers["location"]))).text
        )
    assert source.done[0] == ("bulk", "requeue", "failed", "default")
    assert source.jobs_by_id["failed-3"].summary.state is JobState.FAILED


async def test_delete_and_abort_and_trigger(source: FakeSource) -> None:
    """Delete leads to its state's list, abort to the job page, trigger to the recurring page with the job."""
    async with dashboard(source) as client:
        token = await get_token(client, "/job/failed-1")
        deleted = await client.post("/job/done-1/delete", data={"csrf_token": token})
        assert deleted.headers["location"] == "/dashboard/jobs/succeeded?done=deleted"
        aborted = await client.post("/job/run-1/abort", data={"csrf_token": token})
        assert aborted.headers["location"] == "/dashboard/job/run-1?done=aborted"
        triggered = await client.post("/recurring/nightly/trigger", data={"csrf_token": token})
        assert triggered.headers["location"] == "/dashboard/recurring?done=triggered&job=nightly-now"
        page = await client.get(client.base_url.join(triggered.headers["location"]))
        assert 'href="/dashboard/job/nightly-now"' in page.text
    assert source.done == [("delete", "done-1"), ("abort", "run-1"), ("trigger", "nightly")]


async def test_an_action_the_state_does_not_allow_is_a_conflict(source: FakeSource) -> None:
    """Aborting a failed job or requeueing a running one answers 409; an unknown action 404."""
    async with dashboard(source) as client:
        token = await get_token(client, "/job/failed-1")
        assert (await client.post("/job/failed-1/abort", data={"csrf_token": token})).status_code == 409
        assert (await client.post("/job/run-1/requeue", data={"csrf_token": token})).status_code == 409
        assert (await client.post("/job/run-1/explode", data={"csrf_token": token})).status_code == 404
        assert (await client.post("/job/nope/requeue", data={"csrf_token": token})).status_code == 404
        assert (await client.post("/jobs/running/requeue", data={"csrf_token": token})).status_code == 400
        too_long = {"csrf_token": token, "queue": "q" * 300}
        assert (await client.post("/jobs/failed/requeue", data=too_long)).status_code == 400
        assert (await client.post("/recurring/nope/trigger", data={"csrf_token": token})).status_code == 404
    assert source.done == []


async def test_a_job_that_changed_meanwhile_is_a_conflict(source: FakeSource) -> None:
    """When the source says the action could not be done (the job moved on), the answer is 409."""
    async with dashboard(source) as client:
        token = await get_token(client, "/job/failed-1")
        source.jobs_by_id.pop("failed-1")
        source.add(job("failed-1", JobState.FAILED))

        async def refuse(job_id: str) -> bool:
            return False

        source.requeue = refuse  # type: ignore[method-assign]
        response = await client.post("/job/failed-1/requeue", data={"csrf_token": token})
        assert response.status_code == 409
        assert "changed state meanwhile" in response.text


# Read-only -----------------------------------------------------------------------------------------------


async def test_read_only_hides_and_refuses_actions(source: FakeSource) -> None:
    """A read-only dashboard shows no action form and answers 403 to a POST even with a valid token."""
    async with dashboard(source) as writable:
        token = await get_token(writable, "/job/failed-1")
    async with dashboard(source, read_only=True) as client:
        for path in PAGES:
            page = (await client.get(path)).text
            assert 'method="post"' not in page, path
            assert "Read-only" in page
        client.cookies.set("arqm_dashboard_csrf", token, path="/dashboard")
        response = await client.post("/job/failed-1/requeue", data={"csrf_token": token})
        assert response.status_code == 403
        assert "read-only" in response.text
        assert (
            await client.post("/recurring/nightly/trigger", data={"csrf_token": token})
        ).status_code == 403
    assert source.done == []


# Paging and bad input ------------------------------------------------------------------------------------


async def test_job_lists_are_paged_newest_first() -> None:
    """120 failed jobs: 50 on page 1 with a link to page 2, 20 on page 3, none past the end."""
    source = FakeSource()
    source.add(*(job(f"job-{number:03}", JobState.FAILED) for number in range(120)))
    async with dashboard(source) as client:
        first = (await client.get("/jobs/failed")).text
        assert first.count("data-job=") == 50
        assert "page 1 of 3" in first
        assert 'href="/dashboard/jobs/failed?page=2"' in first
        third = (await client.get("/jobs/failed", params={"page": "3"})).text
        assert third.count("data-job=") == 20
        assert "101\u2013120 shown" in third
        beyond = await client.get("/jobs/failed", params={"page": "9"})
        assert beyond.status_code == 200
        assert beyond.text.count("data-job=") == 0


async def test_filters_by_queue_and_type_and_keeps_them_in_page_links() -> None:
    """The queue and type filters narrow the list, and the pager's links carry them."""
    source = FakeSource()
    source.add(
        *(job(f"e-{n:03}", JobState.FAILED, queue="emails", request_type="demo.Send") for n in range(60))
    )
    source.add(job("d-1", JobState.FAILED, queue="default"))
    async with dashboard(source) as client:
        page = (await client.get("/jobs/failed", params={"queue": "emails", "type": "demo.Send"})).text
        assert page.count("data-job=") == 50
        assert 'href="/dashboard/jobs/failed?page=2&amp;queue=emails&amp;type=demo.Send"' in page
        other = (await client.get("/jobs/failed", params={"queue": "default"})).text
        assert other.count("data-job=") == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs/exploded", 404),
        ("/jobs/failed?page=0", 400),
        ("/jobs/failed?page=-1", 400),
        ("/jobs/failed?page=abc", 400),
        ("/jobs/failed?page=99999999999999999999", 400),
        ("/jobs/failed?queue=" + "q" * 300, 400),
        ("/jobs/failed?type=%00", 400),
        ("/job/unknown", 404),
        ("/job/" + "x" * 300, 404),
        ("/job/%0A", 404),
        ("/no-such-page", 404),
        ("/static/nothing.js", 404),
    ],
)
async def test_bad_input_gets_a_4xx_page_never_a_500(source: FakeSource, path: str, status: int) -> None:
    """Bad states, ids, pages and filters get a 404 or 400 HTML page that says what was wrong."""
    async with dashboard(source) as client:
        response = await client.get(path)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert f"<h1>{status}</h1>" in response.text


async def test_redis_down_gets_a_503_page(source: FakeSource) -> None:
    """A source whose Redis is unreachable makes the page answer 503 with Retry-After, not 500."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def unreachable() -> None:
        raise RedisConnectionError("Connection refused")

    source.counts = unreachable  # type: ignore[assignment,method-assign]
    async with dashboard(source) as client:
        response = await client.get("/")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "Redis is unavailable" in response.text


async def test_an_unexpected_failure_gets_a_500_page_and_is_logged(
    source: FakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the source answers a 500 page without the traceback, which goes to the log."""

    async def broken() -> None:
        raise RuntimeError("the store broke")

    source.workers = broken  # type: ignore[assignment,method-assign]
    async with dashboard(source) as client:
        response = await client.get("/workers")
    assert response.status_code == 500
    assert "the store broke" not in response.text
    assert any(record.exc_info and "the store broke" in str(record.exc_info[1]) for record in caplog.records)


# What pages show -----------------------------------------------------------------------------------------


async def test_the_job_page_escapes_the_payload_and_links_trace_and_parent(source: FakeSource) -> None:
    """Payload text is escaped; the trace id links to Jaeger when configured; the parent job is linked."""
    async with dashboard(source, jaeger_url="http://jaeger.local:16686/") as client:
        page = (await client.get("/job/failed-1")).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="http://jaeger.local:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"' in page
    assert 'href="/dashboard/job/parent-1"' in page
    assert "ValueError" in page
    assert "Traceback (most recent call last)" in page
    async with dashboard(source) as client:
        assert "jaeger" not in (await client.get("/job/failed-1")).text


async def test_assets_come_from_the_package_with_the_same_headers(source: FakeSource) -> None:
    """The script, stylesheet and icon are served by the dashboard itself."""
    async with dashboard(source) as client:
        page = (await client.get("/")).text
        for asset in ("/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"):
            assert f'"/dashboard{asset}"' in page
            response = await client.get(asset)
            assert response.status_code == 200
            assert "content-security-policy" in response.headers


# Embedding -----------------------------------------------------------------------------------------------


async def test_the_plugin_adds_the_dashboard_to_a_litestar_app(source: FakeSource) -> None:
    """``DashboardPlugin`` mounts the pages at its path and leaves the host's routes alone."""
    from litestar import get

    @get("/hello", sync_to_thread=False)
    def hello() -> str:
        return "hi"

    app = Litestar([hello], plugins=[DashboardPlugin(source, path="/ops/jobs")])
    async with serving(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/hello")).text == "hi"
        page = await client.get("/ops/jobs/")
        assert page.status_code == 200
        assert 'href="/ops/jobs/queues"' in page.text
        assert (await client.get("/ops/jobs/job/failed-1")).status_code == 200


@pytest.mark.parametrize("strips_prefix", [False, True])
async def test_the_app_works_mounted_under_another_asgi_app(source: FakeSource, strips_prefix: bool) -> None:
    """Mounted at /ops by a host that sets root_path (full path or stripped), it routes and links right."""
    inner = dashboard_app(source)

    async def host(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/ops/"):
            path = scope["path"].removeprefix("/ops") if strips_prefix else scope["path"]
            scope = {**scope, "root_path": "/ops", "path": path}
        await inner(scope, receive, send)

    async with serving(host) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        page = await client.get("/ops/queues")
        assert page.status_code == 200
        assert 'href="/ops/workers"' in page.text
        job_page = await client.get("/ops/job/failed-1")
        assert 'action="/ops/job/failed-1/requeue"' in job_page.text
        assert [cookie.path for cookie in client.cookies.jar] == ["/ops"]


def test_the_path_must_be_absolute(source: FakeSource) -> None:
    """A mount path without its leading slash is a clear error at build time."""
    with pytest.raises(ValueError, match="must start with '/'"):
        dashboard_app(source, path="dashboard")


async def test_given_a_mediator_the_app_opens_it_and_reads_its_redis(redis_url: str) -> None:
    """``dashboard_app(mediator)`` opens the mediator in its lifespan and shows what its Redis holds."""
    from arq_mediator import Mediator

    mediator = Mediator(redis=redis_url)
    async with (
        serving(dashboard_app(mediator)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        overview = await client.get("/")
        assert overview.status_code == 200
        assert "<h1>Overview</h1>" in overview.text
        assert (await client.get("/workers")).status_code == 200
        assert (await client.get("/job/no-such-job")).status_code == 404
