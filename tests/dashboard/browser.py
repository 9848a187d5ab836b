"""Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, for the browser tests.

Every call that talks to the browser blocks, so the async tests run it in a thread while their event
loop keeps serving the dashboard and running the worker. Screenshots go to tests/artifacts/dashboard/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
# Set by `python3 tasks.py setup` where Chromium cannot be installed.
NO_BROWSER = "ARQM_BROWSER_UNAVAILABLE"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
WAIT = 30.0


def unavailable_reason() -> str | None:
    """Return why no browser test can run here, or None when Chromium, its driver and Selenium are there."""
    if reason := os.environ.get(NO_BROWSER):
        return reason
    missing = [command for command in ("chromium", "chromedriver") if shutil.which(command) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not on PATH: run `python3 tasks.py setup` (installs Debian's chromium)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: run `python3 tasks.py setup`"
    return None


class Browser:
    """One Chromium with a fresh profile; records every request it makes and what its console says."""

    def __init__(self, driver: Any, origin: str) -> None:
        self.driver = driver
        self.origin = origin
        self.requests: dict[str, str] = {}
        self.blocked: list[str] = []
        self.console: list[dict[str, Any]] = []

    async def run(self, action: Callable[..., T], *args: Any) -> T:
        """Run the blocking *action* in a thread."""
        return await asyncio.to_thread(action, *args)

    async def open(self, path: str) -> None:
        """Load *path* of the dashboard's origin and wait for the page to be complete."""
        await self.run(self.driver.get, self.origin + path)
        await self.until(lambda driver: driver.execute_script("return document.readyState") == "complete")
        self.collect()

    async def until(self, condition: Callable[[Any], Any], timeout: float = WAIT) -> Any:
        """Wait until *condition(driver)* is truthy (checked by the browser's own polling), and return it."""
        from selenium.webdriver.support.ui import WebDriverWait

        return await self.run(WebDriverWait(self.driver, timeout, poll_frequency=0.1).until, condition)

    def script(self, code: str, *args: Any) -> Any:
        """Run *code* in the page (blocking)."""
        return self.driver.execute_script(code, *args)

    def text(self, css: str) -> str:
        """Return the visible text of the first element matching *css*, or "" when there is none."""
        # Read in one script: live updates replace elements, so a found element may be gone a moment later.
        found = self.driver.execute_script(
            "const element = document.querySelector(arguments[0]); return element ? element.innerText : ''",
            css,
        )
        return str(found).strip()

    def collect(self) -> None:
        """Move the browser's network and console logs into `requests`, `blocked` and `console`.

        A request the page's Content-Security-Policy stopped never left the browser: it is listed in
        `blocked`, not in `requests`.
        """
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message["params"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests[params["requestId"]] = params["request"]["url"]
            elif message["method"] == "Network.loadingFailed" and params.get("blockedReason") == "csp":
                self.blocked.append(self.requests.pop(params["requestId"], "?"))
        self.console.extend(self.driver.get_log("browser"))

    def off_origin(self) -> list[str]:
        """Return every request made so far to anywhere but the dashboard's origin."""
        self.collect()
        own = urlsplit(self.origin)
        return [
            url
            for url in self.requests.values()
            if urlsplit(url).scheme not in {"data", "about", "blob"}
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]

    def errors(self) -> list[dict[str, Any]]:
        """Return what the JavaScript console reported as errors so far."""
        self.collect()
        return [entry for entry in self.console if entry["level"] == "SEVERE"]

    async def screenshot(self, name: str) -> Path:
        """Save the whole page, not only the window's part, as tests/artifacts/dashboard/*name*.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"

        def shoot() -> None:
            width, height = self.driver.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            clip = {"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1}
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
            path.write_bytes(base64.b64decode(shot["data"]))

        await self.run(shoot)
        return path


@contextmanager
def chromium(origin: str) -> Iterator[Browser]:
    """Start headless Chromium with a fresh profile for the block; skip the test loudly where none runs."""
    if (reason := unavailable_reason()) is not None:
        pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="arqm-chromium-") as profile:
        options = Options()
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.binary_location = str(shutil.which("chromium"))
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        driver: Any = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
        try:
            # What Chromium loads for its own start page is not the dashboard's doing: leave it out.
            driver.get("about:blank")
            driver.get_log("performance")
            driver.get_log("browser")
            yield Browser(driver, origin)
        finally:
            driver.quit()
