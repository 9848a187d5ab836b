"""The demo API's job dashboard: at /dashboard (and the original's /hangfire), with real jobs, and offline
OpenAPI UIs (Swagger, Scalar, ReDoc) in a real browser."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from services.api.app import create_app
from services.settings import Settings

from tests.dashboard.browser import chromium
from tests.dashboard.serving import serving
from tests.jobs.worker_processes import wait_until
from tests.services.api_harness import api_client, running_worker

DEMO = "/api/distributeddemo"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Return an HTTP client of the API app (a loopback peer), whose lifespan is open for the test."""
    async with api_client(settings) as client:
        yield client


async def test_hangfire_leads_to_the_dashboard(client: httpx.AsyncClient) -> None:
    """/hangfire, the original's dashboard path, redirects to /dashboard/, which answers with the overview."""
    response = await client.get("/hangfire")
    assert response.status_code == 302
    assert response.headers["location"] == "/dashboard/"
    page = await client.get("/hangfire", follow_redirects=True)
    assert page.status_code == 200
    assert "<h1>Overview</h1>" in page.text


async def test_the_dashboard_lists_the_jobs_a_worker_ran(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Jobs queued through the stress test and run by a worker show on the dashboard's succeeded list."""
    async with running_worker(settings):
        answer = (await client.post(f"{DEMO}/stress-test", params={"jobCount": 4})).json()

        async def listed() -> bool:
            page = (await client.get("/dashboard/jobs/succeeded")).text
            return all(job_id in page for job_id in answer["jobs"])

        await wait_until(listed, "the stress test's jobs on the dashboard", timeout=30)
    workers = (await client.get("/dashboard/queues")).text
    assert "cleanup" in workers


async def test_the_dashboard_is_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    """The dashboard's pages and actions stay out of the OpenAPI document."""
    document = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith(("/dashboard", "/hangfire"))]


@pytest.mark.parametrize(("peer", "status"), [("172.18.0.1", 200), ("203.0.113.9", 403), ("127.0.0.1", 200)])
async def test_dashboard_allow_admits_the_listed_networks(settings: Settings, peer: str, status: int) -> None:
    """With DASHBOARD_ALLOW, peers of those networks and loopback get the dashboard; others a 403."""
    allowing = dataclasses.replace(settings, dashboard_networks=("172.16.0.0/12",))
    async with api_client(allowing, peer=(peer, 50000)) as client:
        response = await client.get("/dashboard/workers", headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == status


async def test_a_read_only_dashboard_has_no_actions(settings: Settings) -> None:
    """DASHBOARD_READ_ONLY hides the actions."""
    async with api_client(dataclasses.replace(settings, dashboard_read_only=True)) as client:
        page = await client.get("/dashboard/recurring")
    assert "Read-only" in page.text
    assert "Trigger now" not in page.text


def test_settings_read_the_dashboard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """DASHBOARD_ALLOW, DASHBOARD_READ_ONLY and JAEGER_UI_URL come from the environment; bad flags stop."""
    monkeypatch.setenv("DASHBOARD_ALLOW", " 10.0.0.0/8, ,172.16.0.0/12")
    monkeypatch.setenv("DASHBOARD_READ_ONLY", "yes")
    monkeypatch.setenv("JAEGER_UI_URL", "http://127.0.0.1:16686")
    settings = Settings.from_env()
    assert settings.dashboard_networks == ("10.0.0.0/8", "172.16.0.0/12")
    assert settings.dashboard_read_only is True
    assert settings.jaeger_url == "http://127.0.0.1:16686"
    monkeypatch.setenv("DASHBOARD_READ_ONLY", "perhaps")
    with pytest.raises(SystemExit, match="DASHBOARD_READ_ONLY must be"):
        Settings.from_env()


async def test_the_openapi_uis_render_offline_in_a_browser(settings: Settings) -> None:
    """Swagger UI, Scalar and ReDoc each show the API's title in Chromium, loading nothing from elsewhere."""
    async with serving(create_app(settings)) as port, running_worker(settings):
        with chromium(f"http://127.0.0.1:{port}") as browser:
            for ui in ("swagger", "scalar", "redoc"):
                await browser.open(f"/schema/{ui}")
                await browser.until(lambda _: "distributed demo API" in browser.text("body"))
                await browser.screenshot(f"openapi-{ui}")
            assert browser.off_origin() == []
            # ReDoc's maker's logo, which its page's policy keeps the browser from fetching.
            logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
            assert set(browser.blocked) <= {logo}
            # The browser asks this origin for /favicon.ico, which the API does not have.
            expected = (logo, "/favicon.ico - Failed to load resource")
            unexpected = [
                entry for entry in browser.errors() if not any(e in entry["message"] for e in expected)
            ]
            assert unexpected == []
