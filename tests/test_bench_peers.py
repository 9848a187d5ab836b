"""The peer benchmark (tests/benchmarks/bench_peers.py): its report's arithmetic, and a smoke run of it.

The smoke run needs the ``bench`` extra (saq, taskiq, taskiq-redis, streaq) and a redis-server binary; it
skips, saying which is missing, without them. It asserts only that every measure came out, never timings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.peers.report import CEILING, MEASURES, SUBJECT, Run, markdown, ratios, render

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "benchmarks" / "bench_peers.py"
SMOKE_TIMEOUT = 240.0


def test_ratios_say_better_as_above_one_both_for_rates_and_for_times() -> None:
    """A higher rate and a lower latency of arq-mediator both give a ratio above 1, per run."""
    runs: list[Run] = [
        {SUBJECT: {"drain": 3000, "pickup_p50": 0.001}, "peer": {"drain": 1500, "pickup_p50": 0.004}},
        {SUBJECT: {"drain": 1000, "pickup_p50": 0.002}, "peer": {"drain": 2000, "pickup_p50": 0.001}},
    ]
    drain, pickup = MEASURES[0], next(found for found in MEASURES if found.key == "pickup_p50")
    assert ratios(runs, "peer", drain) == [2.0, 0.5]
    assert ratios(runs, "peer", pickup) == [4.0, 0.5]


def test_the_report_gives_medians_ranges_and_the_share_of_the_ceiling() -> None:
    """Each measure is a median with its range over the runs; the drain a share of the body-only ceiling."""
    runs: list[Run] = [
        {CEILING: {"drain": 10000, "sleep_ideal": 2000}, SUBJECT: {"drain": 2000, "drain_sleep": 1800}},
        {CEILING: {"drain": 10000, "sleep_ideal": 2000}, SUBJECT: {"drain": 3000, "drain_sleep": 1600}},
        {CEILING: {"drain": 10000, "sleep_ideal": 2000}, SUBJECT: {"drain": 4000, "drain_sleep": 1700}},
    ]
    text = render(runs, [CEILING, SUBJECT])
    assert "3,000 (2,000-4,000)" in text
    assert "30% (20%-40%) of the body-only ceiling" in text
    assert "85% (80%-90%) of the ideal" in text


def test_the_markdown_table_compares_with_the_best_peer_of_each_measure() -> None:
    """The best peer is the fastest for rates and the quickest for latencies, each with its ratio."""
    runs: list[Run] = [
        {
            SUBJECT: {"drain": 2000, "pickup_p50": 0.002},
            "slow": {"drain": 500, "pickup_p50": 0.001},
            "fast": {"drain": 1000, "pickup_p50": 0.004},
        }
    ]
    table = markdown(runs)
    assert "| one worker drain, round-trip body, jobs/s | 2,000 | fast 1,000 | 2.00x |" in table
    assert "| idle pickup p50 (enqueue -> start), ms | 2.00 | slow 1.00 | 0.50x |" in table


def missing_for_smoke() -> str | None:
    """Return why the smoke run cannot run here, or None."""
    absent = [
        name for name in ("saq", "taskiq", "taskiq_redis", "streaq") if importlib.util.find_spec(name) is None
    ]
    if absent:
        return f"the bench extra is not installed (no {', '.join(absent)}): pip install -e '.[bench]'"
    if shutil.which("redis-server") is None and not os.environ.get("BENCH_REDIS_SERVER"):
        return "no redis-server binary on PATH for the benchmark's private servers"
    return None


def test_a_quick_run_measures_everything_for_arq_mediator_and_a_peer(tmp_path: Path) -> None:
    """`--quick` with 100 jobs runs every measure for arq-mediator and saq and reports their ratios."""
    reason = missing_for_smoke()
    if reason:
        pytest.skip(reason)
    results = tmp_path / "peers.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--jobs", "100", "--only", "arq-mediator,saq"]
    process = subprocess.Popen(
        [*command, "--json", str(results)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers and redis-servers too, should it have to be stopped
    )
    try:
        output, _ = process.communicate(timeout=SMOKE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(
            f"the quick peer benchmark took over {SMOKE_TIMEOUT} s:\n{output.decode(errors='replace')}"
        )
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    [run] = json.loads(results.read_text())["runs"]
    for name in (SUBJECT, "saq"):
        assert {found.key for found in MEASURES} <= set(run[name]), (name, run[name])
        # Redis's CPU time moves in kernel ticks: over 100 jobs it may not have moved at all.
        assert all(value > 0 for key, value in run[name].items() if key != "redis_cpu_per_job"), run[name]
        assert run[name]["redis_cpu_per_job"] >= 0
    assert run[CEILING]["drain"] > 0
    assert "arq-mediator vs it" in text
    assert "of the body-only ceiling" in text
