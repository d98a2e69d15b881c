"""`python -m loadtests.calibrate` (`make loadtest-calibrate`): how often is the verdict right?

Runs `python -m loadtests.run` again and again, as a user would, and counts the verdicts:

- healthy template at each DURATION (false FAIL rate; PASS and INCONCLUSIVE counts);
- `loadtests.leaky_app` at 64 KiB/request (detection rate of a fast leak);
- a slow, time-driven leak of the whole tree (LEAKY_APP_BYTES_PER_SECOND) under a plan;
- the minimum detectable leak rate per duration, from the healthy runs' slope intervals;
- the hot-set and cold-scan cache hit rates of every run (X-Cache answers per scenario).

Each run keeps its own report directory under the calibration directory; runs.jsonl lists
them. `--judge DIR` re-reads a finished calibration and prints the figures again with the
current verdict code (the raw samples in memory.csv are what is judged, not the old verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from loadtests.launcher import REPO_ROOT

LEAKY_APP = "loadtests.leaky_app:app"
# The fast leak must be seen by the guard, not bounded first by the safety nets (as in
# tests/loadtests/test_e2e_guard.py): no RSS recycling, no request-count restarts, no prefill.
NO_RECYCLING = (
    "APP_SERVER__MAX_WORKER_RSS_MB=65536",
    "APP_MEMORY__RECYCLE_LIMIT_MB=65000",
    "APP_SERVER__MAX_REQUESTS=0",
)
MIB = 1024 * 1024


def _case_commands(args: argparse.Namespace) -> list[tuple[str, float, list[str]]]:
    """(case name, duration, extra loadtests.run arguments) in the order they run."""
    cases: list[tuple[str, float, list[str]]] = []
    for duration in args.healthy_durations:
        cases += [(f"healthy-{duration:g}s", duration, [])] * args.repeats
    if args.leaky_repeats:
        leak = ["--app", LEAKY_APP, "--no-prefill", "--server-env", "LEAKY_APP_KIB_PER_REQUEST=64"]
        for item in NO_RECYCLING:
            leak += ["--server-env", item]
        cases += [(f"leaky-64KiB-{args.leaky_duration:g}s", args.leaky_duration, leak)] * (
            args.leaky_repeats
        )
    for rate in args.slow_leak_mb_per_min:
        per_worker = round(rate * MIB / 60 / args.workers)
        slow = [
            "--app", LEAKY_APP,
            "--server-env", "LEAKY_APP_KIB_PER_REQUEST=0",
            "--server-env", f"LEAKY_APP_BYTES_PER_SECOND={per_worker}",
        ]  # fmt: skip
        if args.slow_leak_plan:
            slow += ["--plan", args.slow_leak_plan]
        cases += [(f"slow-leak-{rate:g}MBmin-{args.slow_leak_duration:g}s",
                   args.slow_leak_duration, slow)] * args.slow_leak_repeats  # fmt: skip
    order = {name: i for i, name in enumerate(args.order)}
    cases.sort(key=lambda c: order.get(c[0].split("-")[0], len(order)))
    return cases


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_all(args: argparse.Namespace) -> Path:
    """Run every case in turn; append one JSON line per run to <out>/runs.jsonl."""
    out = args.out or Path("reports") / f"calibrate-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    cases = _case_commands(args)
    budget = sum(d + 25 for _, d, _ in cases)
    print(f"calibrate: {len(cases)} runs, ~{budget / 60:.0f} min -> {out}", flush=True)
    for index, (case, duration, extra) in enumerate(cases, 1):
        case_dir = out / case
        case_dir.mkdir(exist_ok=True)
        before = {p.name for p in case_dir.iterdir()}
        command = [
            sys.executable, "-m", "loadtests.run", "--profile", args.profile,
            "--duration", f"{duration:g}", "--reports-dir", str(case_dir.resolve()), "--no-chart",
            *extra,
        ]  # fmt: skip
        load_before, started = _loadavg(), time.monotonic()
        with (case_dir / "runs.log").open("a") as log:
            code = subprocess.call(
                command,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=duration * 3 + 300,
            )
        wall = time.monotonic() - started
        new = sorted(p.name for p in case_dir.iterdir() if p.name not in before and p.is_dir())
        record = {
            "case": case, "duration": duration, "exit_code": code, "wall_seconds": round(wall, 1),
            "run_dir": str(case_dir / new[-1]) if new else None, "loadavg_before": load_before,
            "loadavg_after": _loadavg(), "argv": command[3:],
        }  # fmt: skip
        with (out / "runs.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"calibrate: [{index}/{len(cases)}] {case} exit {code} in {wall:.0f} s, "
              f"load {record['loadavg_after']}", flush=True)  # fmt: skip
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.calibrate", description=__doc__)
    add = parser.add_argument
    add("--profile", default="starter")
    add("--healthy-durations", type=float, nargs="*", default=[30.0, 60.0, 120.0])
    add("--repeats", type=int, default=10, help="runs per healthy duration")
    add("--leaky-repeats", type=int, default=10, help="runs of the 64 KiB/request leak")
    add("--leaky-duration", type=float, default=60.0)
    add("--slow-leak-mb-per-min", type=float, nargs="*", default=[2.0], help="whole-tree rates")
    add("--slow-leak-duration", type=float, default=600.0)
    add("--slow-leak-repeats", type=int, default=1)
    add("--slow-leak-plan", default="starter", help="plan for the slow leak ('' for none)")
    add("--workers", type=int, default=2, help="server workers, to split a tree leak rate")
    add("--order", nargs="*", default=["healthy", "leaky", "slow"], help="case kinds in order")
    add("--out", type=Path, default=None, help="calibration directory (default reports/...)")
    add("--judge", type=Path, default=None, help="only judge a finished calibration directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.chdir(REPO_ROOT)
    out = args.judge if args.judge is not None else run_all(args)
    from loadtests.calibration_figures import print_figures

    return print_figures(out)


if __name__ == "__main__":
    sys.exit(main())
