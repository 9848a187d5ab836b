"""The dashboard in real headless Chromium, on jobs a real worker ran through real Redis.

Each test starts the dashboard on a socket of its own (uvicorn, in the test's event loop, beside the
worker) and drives Chromium from a thread. They check what a person sees: every page with real data, no
request to another origin, no console error, live changes without a reload, requeue from a job's page,
and a read-only dashboard. Screenshots of every page land in tests/artifacts/dashboard/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from arq_mediator import Context, JobHandle, Mediator, Request, Worker
from arq_mediator.dashboard import JobState, RedisDashboardSource, dashboard_app
from tests.dashboard.browser import Browser, chromium
from tests.dashboard.serving import serving
from tests.dashboard.states import in_state
from tests.jobs.conftest import running_worker
from tests.jobs.worker_processes import wait_until
from tests.processes import free_port

WORKER = "browser-test-worker"


class Ping(Request[str]):
    """A job that logs, reports progress and succeeds."""

    text: str


class Explode(Request[str]):
    """A job that fails while the probe says so, and succeeds once it does not."""

    reason: str


class Hold(Request[str]):
    """A job that runs until the test releases it."""


class Fan(Request[str]):
    """A job whose handler enqueues a Ping: the Ping's page links back to it."""


class Nightly(Request[str]):
    """The recurring job."""


@dataclass
class Probe:
    """What the handlers read and report."""

    fail: bool = True
    explosions: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def register(mediator: Mediator, probe: Probe) -> None:
    """Register the handlers on *mediator*, reporting to *probe*."""

    @mediator.handler
    async def ping(request: Ping, ctx: Context) -> str:
        ctx.logger.info("pinging with %s", request.text)
        ctx.progress(1.0)
        return f"pong {request.text}"

    @mediator.handler(queue="emails")
    async def explode(request: Explode, ctx: Context) -> str:
        probe.explosions += 1
        if probe.fail:
            ctx.logger.warning("about to fail: %s", request.reason)
            raise ValueError(request.reason)
        return "survived"

    @mediator.handler
    async def hold(request: Hold, ctx: Context) -> str:
        ctx.progress(0.25)
        probe.held.set()
        await probe.release.wait()
        return "released"

    @mediator.handler
    async def fan(request: Fan, ctx: Context) -> str:
        child = await ctx.mediator.enqueue(Ping(text="from fan"))
        return child.id

    @mediator.handler(queue="cleanup")
    async def nightly(request: Nightly, ctx: Context) -> str:
        return "clean"

    mediator.recurring(Nightly(), cron="0 2 * * *", name="nightly-cleanup")


@dataclass
class Scene:
    """A mediator with jobs in every state a worker can leave them in, and the dashboard serving them."""

    mediator: Mediator
    source: RedisDashboardSource
    probe: Probe
    worker: Worker
    port: int
    failed: JobHandle[str]
    succeeded: JobHandle[str]
    held: JobHandle[str]
    fan: JobHandle[str]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def state_of(self, job_id: str) -> JobState | None:
        detail = await self.source.job(job_id)
        return None if detail is None else detail.summary.state


@pytest.fixture
async def scene(redis_url: str) -> AsyncIterator[Scene]:
    """Run a worker on the test's Redis database, fill it with jobs, and serve the dashboard on loopback."""
    probe = Probe()
    mediator = Mediator(redis=redis_url)
    register(mediator, probe)
    async with (
        mediator,
        running_worker(
            mediator, queues=["default", "emails", "cleanup"], name=WORKER, heartbeat=0.5
        ) as worker,
    ):
        source = RedisDashboardSource(mediator)
        succeeded = await mediator.enqueue(Ping(text="hello"))
        for number in range(5):
            await mediator.enqueue(Ping(text=f"batch {number}"))
        failed = await mediator.enqueue(Explode(reason="the disk is full"))
        fan = await mediator.enqueue(Fan())
        await mediator.defer(Ping(text="later"), by=timedelta(hours=1))
        held = await mediator.enqueue(Hold())
        async with asyncio.timeout(30):
            await succeeded.result()
            await fan.result()
            await probe.held.wait()
        await wait_until(lambda: in_state(source, failed.id, JobState.FAILED), "the failed job's history")
        async with serving(dashboard_app(source)) as port:
            yield Scene(mediator, source, probe, worker, port, failed, succeeded, held, fan)
            probe.release.set()


def _assert_clean(browser: Browser) -> None:
    assert browser.off_origin() == [], "the dashboard made requests to another origin"
    assert browser.errors() == [], "the JavaScript console reported errors"


async def test_every_page_renders_real_jobs(scene: Scene) -> None:
    """Each page shows what the worker did, loads nothing from elsewhere and logs no console error."""
    with chromium(scene.origin) as browser:
        await browser.open("/")
        await browser.until(lambda _: browser.text("#connection") == "live")
        tiles = {name: browser.text(f".tile.{name} .number") for name in ("succeeded", "failed", "running")}
        assert int(tiles["succeeded"]) >= 8  # hello, five batch pings, fan and its child
        assert tiles["failed"] == "1"
        assert tiles["running"] == "1"
        await browser.screenshot("overview")

        await browser.open("/queues")
        assert "emails" in browser.text("#queues")
        assert WORKER in browser.text("#queues")
        await browser.screenshot("queues")

        for state in JobState:
            await browser.open(f"/jobs/{state.value}")
            await browser.screenshot(f"jobs-{state.value}")
        await browser.open("/jobs/failed")
        assert scene.failed.id in browser.text("#job-list")
        await browser.open("/jobs/running")
        assert scene.held.id in browser.text("#job-list")

        await browser.open(f"/job/{scene.failed.id}")
        page = browser.text("main")
        assert "ValueError: the disk is full" in page
        assert "Traceback" in page
        assert "about to fail: the disk is full" in page  # the handler's log line
        assert '"reason": "the disk is full"' in page
        await browser.screenshot("job-failed")

        child = await scene.fan.result()
        await browser.open(f"/job/{child}")
        assert scene.fan.id in browser.text("#job-head")  # "Enqueued by" the parent
        assert "pinging with from fan" in browser.text("#job-logs")
        await browser.screenshot("job-succeeded")

        await browser.open(f"/job/{scene.held.id}")
        assert "25%" in browser.text("#job-head")
        await browser.screenshot("job-running")

        await browser.open("/recurring")
        assert "nightly-cleanup" in browser.text("#recurring")
        await browser.screenshot("recurring")

        await browser.open("/workers")
        assert WORKER in browser.text("#workers")
        await browser.screenshot("workers")

        _assert_clean(browser)
        await browser.open("/jobs/exploded")  # last: the 404 it is meant to get shows in the console too
        assert "404" in browser.text("h1")
        await browser.screenshot("not-found")


async def test_pages_change_when_jobs_finish_without_a_reload(scene: Scene) -> None:
    """The running list drops the held job and the overview's counter grows, both with no page load."""
    with chromium(scene.origin) as browser:
        await browser.open("/jobs/running")
        await browser.until(lambda _: browser.text("#connection") == "live")
        assert scene.held.id in browser.text("#job-list")
        await browser.run(browser.script, "window.notReloaded = true")
        scene.probe.release.set()
        await browser.until(lambda _: scene.held.id not in browser.text("#job-list"))
        assert await browser.run(browser.script, "return window.notReloaded") is True

        await browser.open("/")
        await browser.until(lambda _: browser.text("#connection") == "live")
        before = int(browser.text(".tile.succeeded .number"))
        await browser.run(browser.script, "window.notReloaded = true")
        await (await scene.mediator.enqueue(Ping(text="live"))).result(timeout=30)
        await browser.until(lambda _: int(browser.text(".tile.succeeded .number")) == before + 1)
        assert await browser.run(browser.script, "return window.notReloaded") is True
        await browser.screenshot("overview-live")
        _assert_clean(browser)


async def test_requeue_from_a_failed_jobs_page_runs_it_again(scene: Scene) -> None:
    """Requeue on the failed job's page runs the job again; the page then shows it succeeded."""
    from selenium.webdriver.common.by import By

    scene.probe.fail = False
    with chromium(scene.origin) as browser:
        await browser.open(f"/job/{scene.failed.id}")
        await browser.until(lambda _: browser.text("#connection") == "live")
        button = await browser.run(browser.driver.find_element, By.CSS_SELECTOR, "button.action.requeue")
        await browser.run(button.click)
        await browser.until(lambda _: "The job was requeued." in browser.text(".notice"))
        await browser.until(lambda _: browser.text("#job-state") == "succeeded")
        assert scene.probe.explosions == 2
        assert "started" in browser.text("#job-steps")
        await browser.screenshot("job-requeued")
        _assert_clean(browser)
    assert await scene.state_of(scene.failed.id) is JobState.SUCCEEDED


async def test_trigger_now_runs_a_recurring_job(scene: Scene) -> None:
    """ "Trigger now" on the recurring page enqueues the job at once; the worker runs it to success."""
    from selenium.webdriver.common.by import By

    with chromium(scene.origin) as browser:
        await browser.open("/recurring")
        button = await browser.run(browser.driver.find_element, By.CSS_SELECTOR, "button.action.trigger")
        await browser.run(button.click)
        await browser.until(lambda _: "Enqueued as job" in browser.text("main"))
        job_id = browser.text(".notice code")
        assert job_id
        await wait_until(lambda: in_state(scene.source, job_id, JobState.SUCCEEDED), "the triggered job")
        await browser.screenshot("recurring-triggered")
        _assert_clean(browser)


async def test_read_only_hides_actions_and_refuses_a_forged_one(scene: Scene) -> None:
    """A read-only dashboard shows no buttons, and a POST made by hand in the page gets a 403 page."""
    async with serving(dashboard_app(scene.source, read_only=True)) as port:
        with chromium(f"http://127.0.0.1:{port}") as browser:
            await browser.open(f"/job/{scene.failed.id}")
            assert "Read-only" in browser.text("main")
            assert (
                await browser.run(
                    browser.script, "return document.querySelectorAll('form[method=post]').length"
                )
                == 0
            )
            await browser.screenshot("read-only-job")
            await browser.run(
                browser.script,
                """
                const form = document.createElement('form');
                form.method = 'post';
                form.action = arguments[0];
                document.body.append(form);
                form.submit();
                """,
                f"/job/{scene.failed.id}/requeue",
            )
            await browser.until(lambda _: browser.text("h1") == "403")
            assert "read-only" in browser.text("main")
            assert browser.off_origin() == []
    assert scene.probe.explosions == 1


async def test_the_page_says_when_its_stream_drops_and_recovers(scene: Scene) -> None:
    """With the server gone the page shows "disconnected, reconnecting"; once it is back, "live" again."""
    app = dashboard_app(scene.source)
    port = free_port()
    with chromium(f"http://127.0.0.1:{port}") as browser:
        async with serving(app, port=port):
            await browser.open("/")
            await browser.until(lambda _: browser.text("#connection") == "live")
        await browser.until(lambda _: browser.text("#connection") == "disconnected, reconnecting\u2026")
        await browser.screenshot("disconnected")
        for width, rows in ((1280, 1), (800, 2)):
            layout = await _header_layout(browser, width)
            await browser.screenshot(f"disconnected-{width}")
            # One line when wide, two aligned rows when narrow; every link in view; the badge beside them.
            assert layout == {
                "navigation_rows": rows,
                "row_starts": 1,
                "overflows": False,
                "clipped": False,
                "badge_overlaps": False,
                "badge_below": False,
            }
        async with serving(app, port=port):
            await browser.until(lambda _: browser.text("#connection") == "live")
        # While the server was gone, the page's requests were refused; nothing else went wrong.
        refused = ("ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE", "ERR_CONNECTION_RESET", "ERR_INCOMPLETE")
        other = [entry for entry in browser.errors() if not any(kind in entry["message"] for kind in refused)]
        assert other == []


async def _header_layout(browser: Browser, width: int) -> dict[str, Any]:
    """Resize the window to *width* and return where the header put its navigation links and its badge."""
    await browser.run(browser.driver.set_window_size, width, 800)
    layout: dict[str, Any] = browser.script(
        """
        const header = document.querySelector("header.top"), nav = header.querySelector("nav");
        const links = [...nav.querySelectorAll("a")].map((link) => link.getBoundingClientRect());
        const badge = document.getElementById("connection").getBoundingClientRect();
        const tops = new Set(links.map((box) => Math.round(box.top)));
        const rowOf = (top) => links.filter((box) => Math.round(box.top) === top);
        const starts = [...tops].map((top) => Math.min(...rowOf(top).map((box) => box.left)));
        const meets = (box) => box.right > badge.left && box.left < badge.right
          && box.bottom > badge.top && box.top < badge.bottom;
        return {
          navigation_rows: tops.size,
          row_starts: new Set(starts.map(Math.round)).size,
          overflows: header.scrollWidth > header.clientWidth,
          clipped: nav.scrollWidth > nav.clientWidth,
          badge_overlaps: links.some(meets),
          badge_below: badge.top >= Math.max(...links.map((box) => box.bottom)),
        };
        """
    )
    return layout
