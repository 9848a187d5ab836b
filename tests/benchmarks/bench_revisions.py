"""Benchmark: this checkout's job engine against an earlier revision's, rounds interleaved in one run.

Each round runs ``bench_jobs.py --quick`` once for the baseline revision (checked out into a temporary git
worktree, imported ahead of this checkout's installed copy) and once for this checkout, alternating which
goes first; the medians over rounds of each summary figure are printed with the ratio new/baseline.

Run from the repository root: python tests/benchmarks/bench_revisions.py --baseline <rev> [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Summary rows of bench_jobs.py worth comparing: label -> (row prefix, which column, higher is better).
FIGURES = {
    "enqueue one at a time, jobs/s": ("1. enqueue one at a time", 1, True),
    "enqueue_many, jobs/s": ("2. enqueue_many", 1, True),
    "drain, jobs/s": ("3. drain 1,000", 1, True),
    "drain, worker CPU us/job": ("   drain, worker CPU per job", 1, False),
    "enqueue -> start p50, ms": ("4. enqueue -> start p50", 1, False),
    "enqueue -> start p99, ms": ("   enqueue -> start p99", 1, False),
    "finished -> result() p50, ms": ("5. finished -> result() p50", 1, False),
}
_NUMBER = re.compile(r"[\d,]+(?:\.\d+)?")


def run_bench(tree: Path) -> str:
    """Run bench_jobs.py --quick from *tree*, importing that tree's library; return its output."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    script = tree / "tests" / "benchmarks" / "bench_jobs.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


def figures_of(output: str) -> dict[str, float]:
    """Return the arq-mediator column of each compared summary row of one bench_jobs.py output."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        for label, (prefix, _, _) in FIGURES.items():
            if line.startswith(prefix):
                numbers = _NUMBER.findall(line[len(prefix) :].split("  ", 1)[1])
                # The row holds: raw arq, arq-mediator, ratio, target: the second number is ours.
                found[label] = float(numbers[1].replace(",", ""))
    return found


def main() -> None:
    """Check out the baseline, run the rounds, print medians and ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as scratch:
        baseline = Path(scratch) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(baseline), options.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            samples: dict[str, dict[str, list[float]]] = {"baseline": {}, "new": {}}
            for round_number in range(options.rounds):
                order = [("baseline", baseline), ("new", ROOT)]
                for name, tree in order if round_number % 2 == 0 else reversed(order):
                    for label, value in figures_of(run_bench(tree)).items():
                        samples[name].setdefault(label, []).append(value)
                print(f"round {round_number + 1}/{options.rounds} done", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline)],
                cwd=ROOT,
                check=False,
            )
    print(f"\nmedians over {options.rounds} interleaved rounds; baseline {options.baseline}")
    print(f"{'figure':34} {'baseline':>10} {'new':>10} {'new is':>14}")
    for label, (_, _, higher_is_better) in FIGURES.items():
        old = statistics.median(samples["baseline"].get(label, [float("nan")]))
        new = statistics.median(samples["new"].get(label, [float("nan")]))
        change = new / old if higher_is_better else old / new
        print(f"{label:34} {old:>10.2f} {new:>10.2f} {change:>8.2f}x as good")


if __name__ == "__main__":
    main()
