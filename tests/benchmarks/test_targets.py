"""Benchmark targets map to the exit code: any target printed as FAIL exits 1."""

from __future__ import annotations

import pytest

from benchmarks.targets import EXIT_ALL_MET, EXIT_MISSED, report_targets


def test_all_targets_met_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code = report_targets([("get-hit speed >= 0.95x baseline", 1.02, True)])
    out = capsys.readouterr().out
    assert code == EXIT_ALL_MET == 0
    assert "PASS  get-hit speed >= 0.95x baseline" in out
    assert "FAIL" not in out


def test_a_missed_target_prints_fail_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = report_targets([("a", 5.0, True), ("bytes/entry <= 190", 201.0, False)])
    out = capsys.readouterr().out
    assert code == EXIT_MISSED == 1
    assert "FAIL  bytes/entry <= 190" in out
    assert "targets missed: 1 (bytes/entry <= 190): exit 1" in out
