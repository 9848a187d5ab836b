#!/usr/bin/env python3
"""The project's one task runner; needs nothing but Python 3.11+.

    python3 tasks.py demo     run the demo: the API, three workers, Redis and SQLite here (Ctrl-C stops all)
    python3 tasks.py check    lint, type check, the docs build and the whole test suite
    python3 tasks.py docs     build the documentation into site/ (open site/index.html)
    python3 tasks.py lint | types | test | bench | format | setup

Every task first makes sure `.venv` exists and holds the project with its extras, reinstalling only when
pyproject.toml changed, so the same two commands work on a fresh machine and stay quick afterwards.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".installed-from"
EXTRAS = "dev,services,docs"
SITE = ROOT / "site"
# An attribute that makes a browser load or link something: in the built pages it must stay on-site.
OFF_SITE = re.compile(
    r"""(?:src|href|srcset|action)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.IGNORECASE
)


def run(*command: str | Path) -> None:
    """Run *command* in the project's folder; stop with its exit code when it fails."""
    print("+", " ".join(str(part) for part in command), flush=True)
    completed = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def setup() -> None:
    """Create `.venv` and install the project into it when pyproject.toml changed since the last time."""
    if sys.version_info < (3, 11):
        sys.exit(f"arq-mediator needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS}]")
    STAMP.write_text(wanted)


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
    test()


def bench() -> None:
    """Run every benchmark script; each prints its ratios against the baseline it names."""
    for script in sorted((ROOT / "tests" / "benchmarks").glob("bench_*.py")):
        run(PYTHON, script)


def demo() -> None:
    """Run the local stack of the distributed demo until Ctrl-C or SIGTERM: `python -m services.stack`."""
    import signal

    # The stack runs in a session of its own and this process forwards each stop signal to it exactly
    # once: a terminal's Ctrl-C reaches only this process, and `kill`/`timeout` aimed at it reach the stack
    # too. The stack then drains its workers and stops every process it started.
    print("+", PYTHON, "-m services.stack", flush=True)
    stack = subprocess.Popen([str(PYTHON), "-m", "services.stack"], cwd=ROOT, start_new_session=True)  # noqa: S603

    def forward(signum: int, frame: object) -> None:
        stack.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    sys.exit(stack.wait())


TASKS = {
    "bench": bench,
    "check": check,
    "demo": demo,
    "docs": docs,
    "format": format_code,
    "lint": lint,
    "setup": setup,
    "test": test,
    "types": types,
}


def main() -> None:
    """Run the task named on the command line (extra arguments go to pytest for `test`)."""
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(TASKS)}}} [args]")
    name, extra = sys.argv[1], sys.argv[2:]
    setup()
    if name == "test":
        test(*extra)
    else:
        TASKS[name]()


if __name__ == "__main__":
    main()
