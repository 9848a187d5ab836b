#!/usr/bin/env python3
"""The project's one task runner; needs nothing but Python 3.11+.

    python3 tasks.py demo     run the demo: the API, three workers, Redis and SQLite here (Ctrl-C stops all)
    python3 tasks.py check    lint, type check, the docs build and the whole test suite
    python3 tasks.py docs     build the documentation into site/ (open site/index.html)
    python3 tasks.py compose ARGS  compose.yaml on Docker, stand-in images where none can be pulled
    python3 tasks.py lint | types | test | bench | format | setup

Every task first makes sure `.venv` exists and holds the project with its extras, reinstalling only when
pyproject.toml changed, so the same two commands work on a fresh machine and stay quick afterwards.
`check` and `test` also make sure a Docker daemon answers for the container tests (see `docker_daemon`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".installed-from"
EXTRAS = "dev,services,dashboard,docs,sqlalchemy,bench"
SITE = ROOT / "site"
# An attribute that makes a browser load or link something: in the built pages it must stay on-site.
OFF_SITE = re.compile(
    r"""(?:src|href|srcset|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.IGNORECASE
)

# The container tests' daemon, when none runs: its socket and state here, its images and build cache kept
# between runs (so a second run builds nothing), Debian's packages for it and for the stand-in images.
DOCKER_RUN = Path("/run/arq-mediator")
DOCKER_SOCKET = DOCKER_RUN / "docker.sock"
DOCKER_DATA = Path("/var/lib/arq-mediator/docker")
DOCKER_PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "docker-compose": "docker-compose"}
DOCKER_PACKAGES_FOR_STAND_INS = {"debootstrap": "debootstrap"}
# Read by tests/containers.py: why the container tests skip.
UNAVAILABLE = "ARQM_CONTAINERS_UNAVAILABLE"
# The dashboard's browser tests drive Debian's Chromium through its WebDriver (tests/dashboard/browser.py).
BROWSER_PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}
# Read by tests/dashboard/browser.py: why the browser tests skip.
NO_BROWSER = "ARQM_BROWSER_UNAVAILABLE"
DAEMON_START_TIMEOUT = 60.0
DAEMON_STOP_TIMEOUT = 30.0


def run(*command: str | Path) -> None:
    """Run *command* in the project's folder; stop with its exit code when it fails."""
    print("+", " ".join(str(part) for part in command), flush=True)
    completed = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def setup() -> None:
    """Create `.venv` and install the project into it when pyproject.toml changed since the last time.

    Also installs Chromium and its WebDriver for the browser tests when they are absent (see `browser`).
    """
    if sys.version_info < (3, 11):
        sys.exit(f"arq-mediator needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    browser()
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS}]")
    STAMP.write_text(wanted)


def browser() -> None:
    """Install Debian's chromium and chromium-driver when absent and this machine allows it.

    Where they cannot be installed, prints one loud line saying why and sets ARQM_BROWSER_UNAVAILABLE, so
    the browser tests skip with that reason.
    """
    missing = {package for command, package in BROWSER_PACKAGES.items() if shutil.which(command) is None}
    if not missing:
        return
    reason = None
    if sys.platform != "linux":
        reason = f"the browser tests use Debian's chromium, not available on {sys.platform}"
    elif shutil.which("apt-get") is None:
        reason = f"{', '.join(sorted(missing))} missing, and there is no apt-get to install them"
    elif os.geteuid() != 0:
        reason = f"{', '.join(sorted(missing))} missing, and only root may install them"
    if reason is None:
        install_debian_packages(missing)
        return
    print(f"!!! BROWSER TESTS WILL SKIP: {reason}", flush=True)
    os.environ[NO_BROWSER] = reason


def docker_answers(host: str | None = None) -> bool:
    """Tell whether the Docker daemon at *host* (default: the environment's) answers within 20 s."""
    if shutil.which("docker") is None:
        return False
    environment = os.environ | ({"DOCKER_HOST": host} if host else {})
    try:
        answer = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],  # noqa: S607
            env=environment,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return answer.returncode == 0


def install_debian_packages(packages: set[str]) -> None:
    """Install Debian's *packages* with apt-get, updating the package lists once if the first try fails."""
    command = ["apt-get", "install", "--yes", "--quiet", "--no-install-recommends", *sorted(packages)]
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    print("+", " ".join(command), flush=True)
    if subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, check=False).returncode == 0:  # noqa: S603
        return
    run("apt-get", "update", "--quiet")
    run(*command)


def missing_docker_reason() -> str | None:
    """Install what the container tests need where this machine allows it; else return why it cannot."""
    if sys.platform != "linux":
        return f"Docker is only set up on Linux here, not {sys.platform}"
    wanted = DOCKER_PACKAGES | DOCKER_PACKAGES_FOR_STAND_INS
    missing = {package for command, package in wanted.items() if shutil.which(command) is None}
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{', '.join(sorted(missing))} missing, and only root may install them"
    if shutil.which("apt-get") is None:
        return f"{', '.join(sorted(missing))} missing, and there is no apt-get to install them"
    install_debian_packages(missing)
    return None


@contextmanager
def docker_daemon() -> Iterator[None]:
    """Make a Docker daemon answer for the block, and stop it afterwards if this started it.

    Uses the daemon at DOCKER_HOST or the system socket when one answers. Otherwise installs Debian's
    docker.io and docker-compose when absent and starts `dockerd` on a private socket, with its data kept
    between runs. Where no daemon can run, prints one loud line saying why and sets
    ARQM_CONTAINERS_UNAVAILABLE, so the container tests skip with that reason; where one should run but
    does not start, stops the task.
    """
    if docker_answers():
        yield
        return
    if (reason := missing_docker_reason()) is None and os.geteuid() != 0:
        reason = "no Docker daemon answers, and only root may start one"
    if reason is not None:
        print(f"!!! CONTAINER TESTS WILL SKIP: {reason}", flush=True)
        os.environ[UNAVAILABLE] = reason
        yield
        return
    host = f"unix://{DOCKER_SOCKET}"
    os.environ["DOCKER_HOST"] = host
    if docker_answers(host):  # another run's daemon: use it, and leave it to the run that started it
        yield
        return
    DOCKER_RUN.mkdir(parents=True, exist_ok=True)
    DOCKER_DATA.mkdir(parents=True, exist_ok=True)
    log_path = DOCKER_RUN / "dockerd.log"
    command = [
        "dockerd",
        f"--host={host}",
        f"--data-root={DOCKER_DATA}",
        f"--exec-root={DOCKER_RUN / 'exec'}",
        f"--pidfile={DOCKER_RUN / 'dockerd.pid'}",
    ]
    print("+", " ".join(command), f"> {log_path}", flush=True)
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
    try:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while not docker_answers(host):
            if daemon.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"dockerd did not start (see {log_path}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=DAEMON_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def lint() -> None:
    """Check style and formatting without changing files."""
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")


def format_code() -> None:
    """Fix what ruff can fix and format every file."""
    run(BIN / "ruff", "check", "--fix", ".")
    run(BIN / "ruff", "format", ".")


def types() -> None:
    """Type-check `src` and `tests` under mypy --strict."""
    run(BIN / "mypy")


def test(*pytest_args: str) -> None:
    """Run the test suite with branch coverage of the library."""
    run(PYTHON, "-m", "pytest", "--cov", "--cov-report=term", *pytest_args)


def docs() -> None:
    """Build the documentation into site/ with `mkdocs build --strict`: any warning fails the build.

    Then check that no built page loads or links anything off-site, so the pages read the same offline.
    """
    # Not --quiet: it also keeps the warnings from being counted, and --strict then passes them.
    run(BIN / "mkdocs", "build", "--strict", "--site-dir", SITE)
    off_site = [
        f"{page.relative_to(ROOT)}: {match.group(0)}"
        for page in sorted(SITE.rglob("*.html"))
        for match in OFF_SITE.finditer(page.read_text(encoding="utf-8"))
    ]
    if off_site:
        sys.exit("the built docs refer to other sites:\n  " + "\n  ".join(off_site))
    print(f"docs built in {SITE.relative_to(ROOT)}/; open {SITE.relative_to(ROOT)}/index.html", flush=True)


def check() -> None:
    """Run everything CI runs: lint, types, the docs build, tests."""
    lint()
    types()
    docs()
    with docker_daemon():
        test()


def bench() -> None:
    """Run every benchmark script; each prints its ratios against the baseline it names."""
    for script in sorted((ROOT / "tests" / "benchmarks").glob("bench_*.py")):
        run(PYTHON, script)


def supervise(*command: str | Path) -> int:
    """Run *command* in a session of its own, forwarding each stop signal to it; return its exit code.

    A terminal's Ctrl-C reaches only this process, and `kill`/`timeout` aimed at it reach the child too,
    each exactly once: the child then stops what it started in its own way (drains, takes containers down).
    """
    print("+", " ".join(str(part) for part in command), flush=True)
    child = subprocess.Popen([str(part) for part in command], cwd=ROOT, start_new_session=True)  # noqa: S603

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    return child.wait()


def demo(*stack_args: str) -> None:
    """Run the local stack of the distributed demo until Ctrl-C or SIGTERM: `python -m services.stack`.

    Arguments go to the stack: `python3 tasks.py demo --api-port 8010` (see `demo --help`).
    """
    sys.exit(supervise(PYTHON, "-m", "services.stack", *stack_args))


def compose(*arguments: str) -> None:
    """Run compose on compose.yaml (project arq-mediator) on a Docker daemon made to answer, with stand-in
    images for those that cannot be pulled: `python3 tasks.py compose up --build`."""
    with docker_daemon():
        if UNAVAILABLE in os.environ:
            sys.exit(f"no Docker daemon: {os.environ[UNAVAILABLE]}")
        code = supervise(PYTHON, "-m", "tests.containers", *arguments)
    sys.exit(code)


TASKS = {
    "bench": bench,
    "check": check,
    "compose": compose,
    "demo": demo,
    "docs": docs,
    "format": format_code,
    "lint": lint,
    "setup": setup,
    "test": test,
    "types": types,
}


def main() -> None:
    """Run the task named on the command line.

    Extra arguments go to pytest for `test`, to the stack for `demo`, to compose for `compose`.
    """
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(TASKS)}}} [args]")
    name, extra = sys.argv[1], sys.argv[2:]
    setup()
    if name == "test":
        with docker_daemon():
            test(*extra)
    elif name == "compose":
        compose(*extra)
    elif name == "demo":
        demo(*extra)
    else:
        TASKS[name]()


if __name__ == "__main__":
    main()
