"""Make the README's two dashboard screenshots (docs/images/): the overview and a failed job's page.

Runs a worker on a private redis-server with stand-ins of the demo's handlers for about half a minute
(some fail), serves the dashboard and photographs it in headless Chromium. Run from the repository root:
``python -m tests.dashboard.readme_screenshots``. Not a test: the browser tests check the pages.

The failed job's page shows its traceback, file paths included. So that it shows no one's checkout, the
photographs are taken in a second process that runs the library and the handlers from copies under
`STAGE` (``site-packages/arq_mediator`` and ``app/handlers.py``), laid out as an installed package would be.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from services.demo.messages import Cleanup, GenerateReport, SendEmail

from arq_mediator import Mediator, Worker, WorkerSettings
from arq_mediator.dashboard import JobState, RedisDashboardSource, dashboard_app
from tests.benchmarks.private_redis import private_redis_server
from tests.dashboard.browser import ARTIFACTS, chromium
from tests.dashboard.serving import serving

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
STAGE = Path(tempfile.gettempdir()) / "arq-mediator-readme"
SECONDS = 30
STAGED = "--staged"


def stage() -> dict[str, str]:
    """Copy the library and the stand-in handlers under `STAGE`; return the environment that imports them."""
    shutil.rmtree(STAGE, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "src" / "arq_mediator", STAGE / "site-packages" / "arq_mediator", ignore=ignore)
    (STAGE / "app").mkdir()
    shutil.copy(Path(__file__).with_name("readme_handlers.py"), STAGE / "app" / "handlers.py")
    path = os.pathsep.join(
        [str(STAGE / "site-packages"), str(STAGE / "app"), os.environ.get("PYTHONPATH", "")]
    )
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), "PYTHONDONTWRITEBYTECODE": "1"}


async def photograph(url: str) -> None:
    """Run jobs for a while, then photograph the overview and a failed job's page."""
    import handlers  # type: ignore[import-not-found]  # the staged copy, on PYTHONPATH only in this process

    mediator = Mediator(redis=url)
    handlers.register(mediator)
    async with mediator:
        worker = Worker(mediator, WorkerSettings(queues=["emails", "reports", "cleanup"], name="Worker-1"))
        running = asyncio.create_task(worker.run())
        for second in range(SECONDS):
            for number in range(random.randint(3, 12)):
                recipient = f"user{second}-{number}@example.com"
                await mediator.enqueue(SendEmail(recipient=recipient, subject="Welcome"))
            if second % 3 == 0:
                await mediator.enqueue(GenerateReport())
            if second % 10 == 0:
                await mediator.enqueue(Cleanup(older_than_days=7))
            await asyncio.sleep(1)
        source = RedisDashboardSource(mediator)
        failed = (await source.jobs(JobState.FAILED, limit=1)).items[0].id
        detail = await source.job(failed)
        traceback = detail.traceback if detail is not None else None
        if traceback is None or str(ROOT) in traceback:
            raise SystemExit(
                f"the failed job's traceback is missing or names the checkout {ROOT}: {traceback}"
            )
        async with serving(dashboard_app(source)) as port:
            with chromium(f"http://127.0.0.1:{port}") as browser:
                await browser.run(browser.driver.set_window_size, 1280, 800)
                for name, path in (("dashboard-overview", "/"), ("dashboard-failed-job", f"/job/{failed}")):
                    await browser.open(path)
                    await browser.until(lambda _: browser.text("#connection") == "live")
                    shot = await browser.screenshot(name)
                    IMAGES.mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, IMAGES / shot.name)
                    print(f"saved {IMAGES / shot.name}")
        worker.stop()
        await running


def main() -> None:
    """Stage the copies and photograph in a process that runs them; in that process, do the photographing."""
    if STAGED not in sys.argv[1:]:
        command = [sys.executable, "-m", "tests.dashboard.readme_screenshots", STAGED]
        subprocess.run(command, cwd=ROOT, env=stage(), check=True)
        shutil.rmtree(STAGE, ignore_errors=True)
        return
    import arq_mediator

    if not Path(arq_mediator.__file__).is_relative_to(STAGE):
        raise SystemExit(f"arq_mediator was imported from {arq_mediator.__file__}, not from {STAGE}")
    with private_redis_server() as url:
        asyncio.run(photograph(url))
    print(f"(and in {ARTIFACTS})")


if __name__ == "__main__":
    main()
