"""The CI smoke's checks: what a short run proves, and the exit codes meaning what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtests.smoke import HARD_CRITERIA, REPORT_FILES, _check_leaky, _check_real, _summary
from loadtests.verdict import GROWTH_CRITERION, SLOPE_CRITERION


def _summary_of(result: str, *, slope: str = "INCONCLUSIVE", broken: str = "") -> dict[str, Any]:
    criteria = [{"name": n, "result": "FAIL" if n == broken else "PASS"} for n in HARD_CRITERIA]
    criteria += [{"name": SLOPE_CRITERION, "result": slope},
                 {"name": GROWTH_CRITERION, "result": "INCONCLUSIVE"}]  # fmt: skip
    return {"result": result, "criteria": criteria, "reported": {"requests": 500}}


def _reports(tmp_path: Path) -> Path:
    for name in REPORT_FILES:
        (tmp_path / name).write_text("x")
    return tmp_path


OUT = "loadtest:    5/15 s  40.0 req/s ... slope +0.10 MB/min\nnext: make loadtest DURATION=2m\n"


@pytest.mark.parametrize(("result", "code"), [("INCONCLUSIVE", 3), ("PASS", 0)])
def test_a_healthy_short_run_may_pass_or_be_inconclusive(
    tmp_path: Path, result: str, code: int
) -> None:
    checks: list[tuple[str, bool]] = []
    _check_real(checks, code, _summary_of(result), _reports(tmp_path), OUT)
    assert all(ok for _, ok in checks), checks


@pytest.mark.parametrize(
    ("result", "code", "broken"),
    [
        ("FAIL", 1, ""),  # a healthy server must never FAIL
        ("INCONCLUSIVE", 0, ""),  # exit code and verdict disagree
        ("PASS", 3, ""),
        ("PASS", 0, "p95 latency"),  # a hard criterion broke
    ],
)
def test_wrong_verdicts_or_exit_codes_fail_the_smoke(
    tmp_path: Path, result: str, code: int, broken: str
) -> None:
    checks: list[tuple[str, bool]] = []
    _check_real(checks, code, _summary_of(result, broken=broken), _reports(tmp_path), OUT)
    assert not all(ok for _, ok in checks)


def test_missing_reports_fail_the_smoke(tmp_path: Path) -> None:
    checks: list[tuple[str, bool]] = []
    _check_real(checks, 3, _summary_of("INCONCLUSIVE"), tmp_path, OUT)
    assert [label for label, ok in checks if not ok] == [
        "real server: reports written (missing: " + ", ".join(REPORT_FILES) + ")"
    ]


@pytest.mark.parametrize(
    ("code", "slope", "is_ok"), [(1, "FAIL", True), (3, "INCONCLUSIVE", False), (0, "PASS", False)]
)
def test_the_leaky_run_must_fail_on_its_slope(code: int, slope: str, is_ok: bool) -> None:
    checks: list[tuple[str, bool]] = []
    _check_leaky(checks, code, _summary_of("FAIL" if code == 1 else "PASS", slope=slope))
    assert all(ok for _, ok in checks) is is_ok


def test_the_summary_is_found_through_the_last_line(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"result": "PASS"}')
    found, where = _summary(f"...\nloadtest: reports in {tmp_path} (31 s)\n")
    assert (found, where) == ({"result": "PASS"}, tmp_path)
    assert _summary("no such line") == (None, None)
