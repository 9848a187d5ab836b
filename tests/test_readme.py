"""The README's library example is examples/quickstart.py, verbatim, and that script runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_databases import FlushedRedis

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICKSTART = ROOT / "examples" / "quickstart.py"
SECTION = "Library example"

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(\S*)")


def python_blocks_under(markdown: str, heading_text: str) -> list[str]:
    """Return the ```python blocks in the section(s) whose heading contains *heading_text*, in order.

    A section runs from its heading to the next heading of the same or a higher level; `#` lines inside
    fenced blocks are code, not headings. Each block is returned with a newline ending every line.
    """
    blocks: list[str] = []
    section_level: int | None = None
    fence: str | None = None
    block: list[str] | None = None
    for line in markdown.splitlines():
        if fence is not None:
            if line.strip() == fence:
                if block is not None:
                    blocks.append("".join(f"{code}\n" for code in block))
                fence, block = None, None
            elif block is not None:
                block.append(line)
            continue
        opening = FENCE.match(line)
        if opening:
            fence = opening.group(1)
            if section_level is not None and opening.group(2).lower() == "python":
                block = []
            continue
        heading = HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            if heading_text.lower() in heading.group(2).lower():
                section_level = level
            elif section_level is not None and level <= section_level:
                section_level = None
    return blocks


def test_block_parser_reads_only_the_named_section() -> None:
    """The extraction takes python blocks under the named heading only, treating `#` in code as code."""
    markdown = (
        "# Project\n"
        "```python\nbefore = 1\n```\n"
        "## Library example\n"
        "Some prose.\n"
        "```python\n# a comment, not a heading\nx = 1\n```\n"
        "```console\n$ run\n```\n"
        "### Detail\n"
        "```python\ny = 2\n```\n"
        "## Next section\n"
        "```python\nafter = 3\n```\n"
    )
    assert python_blocks_under(markdown, "Library example") == [
        "# a comment, not a heading\nx = 1\n",
        "y = 2\n",
    ]


def test_readme_library_example_is_the_quickstart_verbatim() -> None:
    """The python block(s) under the README's "Library example" heading equal examples/quickstart.py."""
    blocks = python_blocks_under(README.read_text(encoding="utf-8"), SECTION)
    assert blocks, f'README.md has no ```python block under a heading containing "{SECTION}"'
    assert "".join(blocks) == QUICKSTART.read_text(encoding="utf-8")


def test_quickstart_runs() -> None:
    """examples/quickstart.py exits 0 (warnings as errors) and prints the created user."""
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(QUICKSTART)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert "created user 1 <ada@example.com>; welcomed: [1]" in lines
    assert any(line.startswith("CreateUser took ") for line in lines)


def test_readme_background_example_is_the_script_verbatim() -> None:
    """The python block under "Background jobs example" equals examples/background.py."""
    blocks = python_blocks_under(README.read_text(encoding="utf-8"), "Background jobs example")
    assert "".join(blocks) == (ROOT / "examples" / "background.py").read_text(encoding="utf-8")


def run_example(script: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    """Run examples/*script* as a user would, warnings as errors, with REDIS_URL set to *redis_url*."""
    return subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=os.environ | {"REDIS_URL": redis_url},
    )


@pytest.fixture
async def readme_redis(flushed_redis: FlushedRedis) -> str:
    """Return the URL of a database of the README examples' own, emptied before and after the test."""
    return await flushed_redis("readme")


def test_background_example_runs_against_redis(readme_redis: str) -> None:
    """examples/background.py runs a job, a deferred job and a failing job through the Redis at REDIS_URL."""
    completed = run_example("background.py", readme_redis)
    assert completed.returncode == 0, completed.stderr
    assert "title='usage' rows=3" in completed.stdout
    assert "deferred job is deferred; then title='later' rows=1" in completed.stdout
    assert "job failed remotely with builtins.ValueError: disk full" in completed.stdout


def test_readme_testing_example_is_the_script_verbatim() -> None:
    """The python block under "Testing your handlers" equals examples/testing.py."""
    blocks = python_blocks_under(README.read_text(encoding="utf-8"), "Testing your handlers")
    assert "".join(blocks) == (ROOT / "examples" / "testing.py").read_text(encoding="utf-8")


def test_testing_example_runs_without_redis() -> None:
    """examples/testing.py retries one charge, fails the other for good, and prints both, with no Redis."""
    completed = run_example("testing.py", "redis://127.0.0.1:1")  # nothing listens there
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "refused: builtins.ValueError: cannot charge 0 cents",
        "charged after 2 tries: order_id=7 cents=1250",
    ]


def test_readme_outbox_example_is_the_script_verbatim() -> None:
    """The python block under "Transactional outbox example" equals examples/outbox.py."""
    blocks = python_blocks_under(README.read_text(encoding="utf-8"), "Transactional outbox example")
    assert "".join(blocks) == (ROOT / "examples" / "outbox.py").read_text(encoding="utf-8")


def test_outbox_example_runs_against_redis(readme_redis: str) -> None:
    """examples/outbox.py commits one sign-up with its job, rolls the duplicate back, and the job runs."""
    completed = run_example("outbox.py", readme_redis)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "second sign-up rolled back (IntegrityError): no user, no job",
        "welcomed ada@example.com",
    ]
