"""`make loadtest SMOKE=1` (CI, <= 45 s): what a short run can prove, and nothing more.

Two short runs through `python -m loadtests.run --smoke`, side by side on their own ports:

- the real server: it starts, serves, passes every hard criterion (errors, p95, health checks,
  no OOM kill, peak RSS), writes every report, and its exit code matches its verdict. It must not
  FAIL; PASS or INCONCLUSIVE are both right (15 s cannot prove a server bounded, and says so);
- `loadtests.leaky_app` at 64 KiB/request, no recycling: it must FAIL (exit 1) on the RSS slope.

Exit 0 when every check holds, 1 otherwise; each check prints one line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.launcher import REPO_ROOT
from loadtests.verdict import EXIT_CODES, EXIT_FAIL, SLOPE_CRITERION

BUDGET_SECONDS = 45.0
REPORTS_LINE = re.compile(r"^loadtest: reports in (.+) \(\d+ s\)$", re.MULTILINE)
RUN_TIMEOUT_SECONDS = 120.0
REPORT_FILES = ("summary.json", "memory.csv", "memory.png", "locust_stats.csv", "locust.html",
                "server.log")  # fmt: skip
HARD_CRITERIA = (
    "server alive, no OOM kill", "peak total RSS", "error ratio", "p95 latency",
    "health poller failures", "slowest health check", "Locust exit code",
)  # fmt: skip
LEAKY = (
    "--app", "loadtests.leaky_app:app", "--no-prefill", "--duration", "12",
    "--warmup-fraction", "0.25", "--no-chart",
    "--server-env", "LEAKY_APP_KIB_PER_REQUEST=64",
    "--server-env", "APP_SERVER__MAX_WORKER_RSS_MB=65536",
    "--server-env", "APP_MEMORY__RECYCLE_LIMIT_MB=65000",
    "--server-env", "APP_SERVER__MAX_REQUESTS=0",
)  # fmt: skip


def _start(name: str, work: Path, reports: Path, extra: Sequence[str]) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "loadtests.run", "--smoke",
        "--profile", os.environ.get("PROFILE") or "starter", "--reports-dir", str(reports),
        "--server-env", f"APP_STORE__PATH={work / name}.sqlite3", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _summary(output: str) -> tuple[dict[str, Any] | None, Path | None]:
    """The run's summary.json, found through its last line: `loadtest: reports in DIR (N s)`."""
    match = REPORTS_LINE.search(output)
    if match is None or not (Path(match[1]) / "summary.json").is_file():
        return None, None
    report_dir = Path(match[1])
    return json.loads((report_dir / "summary.json").read_text()), report_dir


def _check(checks: list[tuple[str, bool]], label: str, ok: bool) -> None:
    checks.append((label, ok))
    print(f"smoke: {'ok  ' if ok else 'FAIL'}  {label}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both smoke runs and check what they prove; 0 when every check holds."""
    del argv
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loadtest-smoke-") as tmp:
        work = Path(tmp)
        real = _start("real", work, REPO_ROOT / "reports", ())
        leaky = _start("leaky", work, work, LEAKY)
        real_out, _ = real.communicate(timeout=RUN_TIMEOUT_SECONDS)
        leaky_out, _ = leaky.communicate(timeout=RUN_TIMEOUT_SECONDS)
        elapsed = time.monotonic() - started
        print(real_out, end="")
        print("--- leaky server (must FAIL) ---")
        print(leaky_out, end="")
        checks: list[tuple[str, bool]] = []
        summary, report_dir = _summary(real_out)
        _check_real(checks, real.returncode, summary, report_dir, real_out)
        leaky_summary, _ = _summary(leaky_out)
        _check_leaky(checks, leaky.returncode, leaky_summary)
        # Reported, not judged: a slow shared CI machine must not turn into a flaky failure.
        over = "" if elapsed <= BUDGET_SECONDS else " WARNING: over budget (slow machine?)"
        print(f"smoke: both runs took {elapsed:.0f} s (budget {BUDGET_SECONDS:.0f} s){over}")
    failed = [label for label, ok in checks if not ok]
    print(f"smoke: {'PASS' if not failed else 'FAIL'} ({len(checks) - len(failed)}/{len(checks)})")
    return 0 if not failed else 1


def _check_real(
    checks: list[tuple[str, bool]],
    code: int,
    summary: dict[str, Any] | None,
    report_dir: Path | None,
    output: str,
) -> None:
    _check(checks, "real server: summary.json written", summary is not None)
    if summary is None or report_dir is None:
        return
    result = str(summary.get("result"))
    _check(checks, f"real server: not FAIL (got {result}, exit {code})", result != "FAIL")
    _check(checks, f"real server: exit code {code} means {result}", EXIT_CODES.get(result) == code)
    hard = {c["name"]: c["result"] for c in summary["criteria"] if c["name"] in HARD_CRITERIA}
    broken = [name for name, res in hard.items() if res != "PASS"]
    _check(checks, f"real server: hard criteria hold ({', '.join(broken) or 'all'})",
           not broken and len(hard) == len(HARD_CRITERIA))  # fmt: skip
    _check(checks, "real server: served requests", (summary["reported"].get("requests") or 0) > 0)
    missing = [n for n in REPORT_FILES if not _non_empty(report_dir / n)]
    label = f"missing: {', '.join(missing)}" if missing else ", ".join(REPORT_FILES)
    _check(checks, f"real server: reports written ({label})", not missing)
    _check(checks, "real server: progress lines printed", "req/s" in output and "slope" in output)
    if result == "INCONCLUSIVE":
        _check(checks, "real server: INCONCLUSIVE says how long to run", "DURATION=" in output)


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _check_leaky(checks: list[tuple[str, bool]], code: int, summary: dict[str, Any] | None) -> None:
    _check(checks, f"leaky server: exit code {code} is FAIL's ({EXIT_FAIL})", code == EXIT_FAIL)
    results = {c["name"]: c["result"] for c in (summary or {}).get("criteria", [])}
    _check(checks, f"leaky server: the RSS slope FAILs ({results.get(SLOPE_CRITERION)})",
           results.get(SLOPE_CRITERION) == "FAIL")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
