"""Benchmark targets: each printed PASS or FAIL, and any FAIL turns into a non-zero exit code.

`make bench` (and every bench target with targets) exits 1 when a target it prints as FAIL
is missed, so a script or CI step can rely on the exit code instead of reading the table.
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_ALL_MET = 0
EXIT_MISSED = 1


def report_targets(checks: Iterable[tuple[str, float, bool]], *, width: int = 34) -> int:
    """Print one `PASS|FAIL  label  measured value` line per target; the exit code to use."""
    missed: list[str] = []
    for label, value, is_met in checks:
        print(f"  {'PASS' if is_met else 'FAIL'}  {label:<{width}} measured {value:.2f}")
        if not is_met:
            missed.append(label)
    if missed:
        print(f"targets missed: {len(missed)} ({'; '.join(missed)}): exit {EXIT_MISSED}")
        return EXIT_MISSED
    print(f"targets: all met: exit {EXIT_ALL_MET}")
    return EXIT_ALL_MET
