"""The peer benchmark's report: medians and ranges over runs, and arq-mediator's ratio to each peer."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SUBJECT = "arq-mediator"
CEILING = "body only"


@dataclass(frozen=True)
class Measure:
    """One measure: its key in a run's results, how to print it, and which way is better."""

    key: str
    label: str
    scale: float  # multiply the stored value (jobs/s, seconds, bytes) by this to print it
    unit: str
    higher_is_better: bool


MEASURES = [
    Measure("drain", "one worker drain, round-trip body", 1, "jobs/s", True),
    Measure("drain_two", "two workers drain, round-trip body", 1, "jobs/s", True),
    Measure("drain_noop", "one worker drain, no-op body", 1, "jobs/s", True),
    Measure("drain_sleep", "one worker drain, sleep 10 ms body", 1, "jobs/s", True),
    Measure("pickup_p50", "idle pickup p50 (enqueue -> start)", 1000, "ms", False),
    Measure("result_p50", "enqueue -> result returned p50", 1000, "ms", False),
    Measure("result_p99", "enqueue -> result returned p99", 1000, "ms", False),
    Measure("steady_p50", "steady 500 jobs/s, 2 workers: enqueue -> start p50", 1000, "ms", False),
    Measure("steady_p99", "steady 500 jobs/s, 2 workers: enqueue -> start p99", 1000, "ms", False),
    Measure("memory_per_job", "Redis memory per queued job", 1, "B", False),
    Measure("cpu_per_job", "worker CPU per job (round-trip drain)", 1e6, "us", False),
    Measure("redis_cpu_per_job", "Redis CPU per job (round-trip drain)", 1e6, "us", False),
    Measure("redis_cpu_two", "Redis CPU per job (two workers drain)", 1e6, "us", False),
]

# One run: variant name -> measure key -> value.
Run = dict[str, dict[str, float]]


def number(value: float) -> str:
    """Spell a value with about three significant digits."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summary(values: Sequence[float], text: Callable[[float], str] = number) -> str:
    """Spell the median and, over several runs, the range."""
    if len(values) == 1:
        return text(values[0])
    return f"{text(statistics.median(values))} ({text(min(values))}-{text(max(values))})"


def values(runs: Sequence[Run], name: str, measure: Measure) -> list[float]:
    """Return *measure* of variant *name* in each run that has it, scaled for printing."""
    return [run[name][measure.key] * measure.scale for run in runs if measure.key in run.get(name, {})]


def ratios(runs: Sequence[Run], peer: str, measure: Measure) -> list[float]:
    """Return arq-mediator's ratio to *peer* in each run (> 1: arq-mediator is better)."""
    found = []
    for run in runs:
        ours, theirs = run.get(SUBJECT, {}).get(measure.key), run.get(peer, {}).get(measure.key)
        if ours and theirs:
            found.append(ours / theirs if measure.higher_is_better else theirs / ours)
    return found


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Lay out *rows* under *header*: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render(runs: Sequence[Run], names: Sequence[str]) -> str:
    """Return the report: one table per measure, every variant a row, with ratios to arq-mediator."""
    parts = []
    for measure in MEASURES:
        rows = []
        for name in names:
            found = values(runs, name, measure)
            if not found:
                continue
            compared = [] if name in (SUBJECT, CEILING) else ratios(runs, name, measure)
            ratio = summary(compared, "{:.2f}x".format) if compared else ""
            rows.append([name, summary(found), ratio])
        if rows:
            header = [f"{measure.label} ({measure.unit})", "median (range)", "arq-mediator vs it"]
            parts.append(table(header, rows))
    parts.append(_ceiling(runs))
    return "\n\n".join(part for part in parts if part)


def _ceiling(runs: Sequence[Run]) -> str:
    """Spell arq-mediator's drains as shares of the body-only ceiling and of the sleep body's ideal."""
    drains, sleeps = [], []
    for run in runs:
        ours, ceiling = run.get(SUBJECT, {}), run.get(CEILING, {})
        if "drain" in ours and "drain" in ceiling:
            drains.append(100 * ours["drain"] / ceiling["drain"])
        if "drain_sleep" in ours and "sleep_ideal" in ceiling:
            sleeps.append(100 * ours["drain_sleep"] / ceiling["sleep_ideal"])
    if not drains:
        return ""
    percent = "{:.0f}%".format
    return (
        f"arq-mediator's one-worker drain is {summary(drains, percent)} of the body-only ceiling; "
        f"its sleep-body drain {summary(sleeps, percent)} of the ideal "
        f"({number(runs[0][CEILING]['sleep_ideal'])} jobs/s: 20 slots / 10 ms)."
    )


def markdown(runs: Sequence[Run]) -> str:
    """Return a Markdown table: per measure, arq-mediator, the best peer variant, and their ratio by run."""
    peers = sorted({name for run in runs for name in run} - {SUBJECT, CEILING})
    lines = [
        "| measure | arq-mediator | best peer (median of runs) | arq-mediator vs it |",
        "|---|---|---|---|",
    ]
    for measure in MEASURES:
        ours = values(runs, SUBJECT, measure)
        medians = {peer: statistics.median(found) for peer in peers if (found := values(runs, peer, measure))}
        if not ours or not medians:
            continue
        pick = max if measure.higher_is_better else min
        best = pick(medians, key=lambda peer: medians[peer])
        label = f"{measure.label}, {measure.unit}"
        compared = summary(ratios(runs, best, measure), "{:.2f}x".format)
        lines.append(
            f"| {label} | {summary(ours)} | {best} {summary(values(runs, best, measure))} | {compared} |"
        )
    return "\n".join(lines)
