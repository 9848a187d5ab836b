"""The worker command line: finding the mediator by import path, and refusing bad settings clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arq_mediator import Mediator
from arq_mediator._cli import load_mediator, main, parse

mediator = Mediator()
not_a_mediator = 42


def test_load_mediator_finds_the_attribute() -> None:
    """`package.module:attribute` names the Mediator a worker serves."""
    assert load_mediator(f"{__name__}:mediator") is mediator


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon", "expected package.module:attribute"),
        (":mediator", "expected package.module:attribute"),
        ("tests.no_such_module:mediator", "cannot load"),
        (f"{__name__}:missing", "cannot load"),
        (f"{__name__}:not_a_mediator", "is a int, not an arq_mediator.Mediator"),
    ],
)
def test_load_mediator_explains_what_is_wrong(path: str, message: str) -> None:
    """A malformed path, a missing module or attribute, or a non-mediator each exit with the reason."""
    with pytest.raises(SystemExit, match=message):
        load_mediator(path)


def test_parse_reads_the_worker_options() -> None:
    """Queues, cap, name and timings come from the command line, with defaults for the rest."""
    options = parse(
        ["worker", "app:mediator", "--queues", "critical,default", "--max-jobs", "7", "--name", "w"]
    )
    assert (options.mediator, options.queues, options.max_jobs, options.name) == (
        "app:mediator",
        "critical,default",
        7,
        "w",
    )
    assert (options.lease, options.heartbeat, options.grace) == (10.0, 2.0, 25.0)


@pytest.mark.parametrize(
    "arguments",
    [
        ["--queues", ",", "--max-jobs", "1"],
        ["--queues", "a,a"],
        ["--queues", "a", "--max-jobs", "0"],
        ["--queues", "a", "--heartbeat", "20"],
    ],
)
def test_main_refuses_invalid_worker_settings(arguments: list[str]) -> None:
    """Empty or repeated queues, a zero cap or a heartbeat longer than the lease exit before connecting."""
    with pytest.raises(SystemExit, match="invalid worker settings"):
        main(["worker", f"{__name__}:mediator", *arguments])


def test_main_refuses_a_mediator_with_no_handlers() -> None:
    """A worker for a mediator that registered nothing (its handler modules unimported) does not start."""
    with pytest.raises(SystemExit, match="has no handlers: a worker would fail every job it takes"):
        main(["worker", f"{__name__}:mediator", "--queues", "default"])


def test_module_entry_point_shows_usage() -> None:
    """`python -m arq_mediator --help` describes the worker command."""
    completed = subprocess.run(
        [sys.executable, "-m", "arq_mediator", "worker", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0
    assert "--queues" in completed.stdout
