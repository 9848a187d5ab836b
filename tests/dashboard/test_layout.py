"""The dashboard's pages never scroll sideways, whatever the length of the names and ids they show.

Real jobs with long idempotency keys, type names, queue names and a long worker name, run by a real worker
through real Redis; every page is loaded in headless Chromium at a 1280 px and an 800 px window and its
document must be no wider than the window: a wide table wraps its long cells or scrolls in its own box.
Screenshots land in tests/artifacts/dashboard/layout-*.png.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from arq_mediator import Backoff, Context, Mediator, Request
from arq_mediator.dashboard import JobState, RedisDashboardSource, dashboard_app
from tests.dashboard.browser import Browser, chromium
from tests.dashboard.serving import serving
from tests.dashboard.states import in_state
from tests.jobs.conftest import running_worker
from tests.jobs.worker_processes import wait_until

WIDTHS = (1280, 800)
# Unbroken runs, as real ones are (a tenant's idempotency key, a fully qualified type, a pod's name):
# no space or hyphen lets a browser wrap them by default.
QUEUE = "tenant_0042_invoicing_reconciliation_high_priority_eu_west_1"
IDLE_QUEUE = "tenant_0042_invoicing_reconciliation_backfill_no_worker_serves_it"
WORKER = "invoicing_reconciliation_worker_deployment_7f9c8d6b5a_eu_west_1a_replica_0003"


def long_id(kind: str) -> str:
    """Return an idempotency key of about ninety characters for a job of *kind*."""
    return f"tenant_0042:invoice_reconciliation:{kind}:2026_12_03T06_00_00Z:5f0c2b7e9a4d4c1b8e3f6a2d9c7b1e40"


class Reconcile(Request[str]):
    """A job that succeeds, fails, retries or runs until released, as its *mode* says."""

    message_name: ClassVar[str] = (
        "billing.invoicing.reconciliation.ReconcileOutstandingInvoicesAcrossAllRegionsForQuarterlyClose"
    )
    mode: str


class Retry(Request[str]):
    """A job that fails once and waits an hour for its second try."""

    message_name: ClassVar[str] = (
        "billing.invoicing.reconciliation.RetryFailedPaymentProviderWebhookDeliveriesWithBackoff"
    )


class Nightly(Request[str]):
    """The recurring job."""

    message_name: ClassVar[str] = (
        "billing.invoicing.reconciliation.NightlyLedgerConsistencyCheckForEveryTenantAndCurrency"
    )


@dataclass
class Probe:
    """What the handlers report and wait for."""

    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def register(mediator: Mediator, probe: Probe) -> None:
    """Register the handlers on *mediator*, reporting to *probe*."""

    @mediator.handler(queue=QUEUE)
    async def reconcile(request: Reconcile, ctx: Context) -> str:
        ctx.logger.info("reconciling %s for %s", request.mode, long_id("log_line"))
        if request.mode == "fail":
            raise ValueError(f"ledger mismatch in {long_id('ledger')}")
        if request.mode == "hold":
            ctx.progress(0.25)
            probe.held.set()
            await probe.release.wait()
        return request.mode

    @mediator.handler(queue=QUEUE, max_tries=2, backoff=Backoff(initial=3600, jitter=0))
    async def retry(request: Retry, ctx: Context) -> str:
        raise ConnectionError("the payment provider did not answer")

    @mediator.handler(queue=QUEUE)
    async def nightly(request: Nightly, ctx: Context) -> str:
        return "checked"

    mediator.recurring(
        Nightly(), cron="0 2 * * *", name="nightly_ledger_consistency_check_for_every_tenant_and_currency"
    )


@dataclass
class Scene:
    """The dashboard's origin and the pages to measure, each filled with long values."""

    origin: str
    pages: dict[str, str]


@pytest.fixture
async def scene(redis_url: str) -> AsyncIterator[Scene]:
    """Leave a job with long values in every state, and serve the dashboard on loopback."""
    probe = Probe()
    mediator = Mediator(redis=redis_url)
    register(mediator, probe)
    async with mediator, running_worker(mediator, queues=[QUEUE], name=WORKER, heartbeat=0.5):
        source = RedisDashboardSource(mediator)
        succeeded = await mediator.enqueue(Reconcile(mode="succeed"), job_id=long_id("succeeded"))
        failed = await mediator.enqueue(Reconcile(mode="fail"), job_id=long_id("failed"))
        retrying = await mediator.enqueue(Retry(), job_id=long_id("retrying"))
        await mediator.defer(Reconcile(mode="later"), by=timedelta(hours=1), job_id=long_id("scheduled"))
        await mediator.enqueue(Reconcile(mode="waits"), queue=IDLE_QUEUE, job_id=long_id("enqueued"))
        aborted = await mediator.enqueue(Reconcile(mode="stop"), queue=IDLE_QUEUE, job_id=long_id("aborted"))
        assert await source.abort(aborted.id)
        held = await mediator.enqueue(Reconcile(mode="hold"), job_id=long_id("running"))
        async with asyncio.timeout(30):
            await succeeded.result()
            await probe.held.wait()
        await wait_until(lambda: in_state(source, failed.id, JobState.FAILED), "the failed job")
        await wait_until(lambda: in_state(source, retrying.id, JobState.RETRYING), "the retrying job")
        pages = {f"jobs-{state.value}": f"/jobs/{state.value}" for state in JobState}
        pages |= {
            "overview": "/",
            "queues": "/queues",
            "recurring": "/recurring",
            "workers": "/workers",
            "job-running": f"/job/{held.id}",
            "job-failed": f"/job/{failed.id}",
        }
        async with serving(dashboard_app(source)) as port:
            yield Scene(f"http://127.0.0.1:{port}", pages)
            probe.release.set()


async def test_no_page_scrolls_sideways_with_long_names(scene: Scene) -> None:
    """At 1280 and 800 px every page's document is as wide as the window at most, with all values shown."""
    too_wide: list[dict[str, Any]] = []
    with chromium(scene.origin) as browser:
        for width in WIDTHS:
            await browser.run(browser.driver.set_window_size, width, 900)
            for name, path in scene.pages.items():
                await browser.open(path)
                await browser.until(lambda _: browser.text("#connection") == "live")
                # Every page but the overview shows some of the long values it is meant to fit.
                assert name == "overview" or "tenant_0042" in browser.text("main"), name
                measured = await browser.run(_widths, browser)
                await browser.screenshot(f"layout-{name}-{width}")
                if measured["document"] > measured["window"]:
                    too_wide.append({"page": name, "width": width, **measured})
    listed = "\n".join(str(page) for page in too_wide)
    assert not too_wide, f"pages wider than the window (they scroll sideways):\n{listed}"


def _widths(browser: Browser) -> dict[str, Any]:
    """Return the document's width, the room it has, and the first elements that reach past that room."""
    measured: dict[str, Any] = browser.script(
        """
        const page = document.scrollingElement;
        // innerWidth counts a vertical scroll bar; the width beside it (clientWidth) is the stricter bound.
        const room = Math.min(window.innerWidth, page.clientWidth);
        const reaches = (element) => element.getBoundingClientRect().right > room + 0.5;
        // The outermost ones only: what sticks out first, not everything inside it.
        const past = [...document.querySelectorAll("body *")]
          .filter((element) => reaches(element) && !reaches(element.parentElement))
          .map((element) => [element.tagName.toLowerCase(), element.className].filter(Boolean).join("."));
        return {document: page.scrollWidth, window: room, past: [...new Set(past)].slice(0, 8)};
        """
    )
    return measured
