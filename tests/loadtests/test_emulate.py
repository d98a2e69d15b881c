"""Plan emulation: cgroup files for v1 and v2, fallbacks, and a real cgroup made and removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadtests.emulate as emulate_mod
from loadtests.emulate import EmulationUnavailable, PlanCgroup, create_plan_cgroup, emulate
from loadtests.guard import TreeSampler
from loadtests.thresholds import Plan

STARTER = Plan("starter", cpu_quota_us=50_000, cpu_period_us=100_000, memory_limit_mb=512)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(emulate_mod, "_rmdir", shutil.rmtree)  # fake dirs hold plain files


def _fake_v1(tmp_path: Path) -> tuple[Path, Path]:
    root, proc = tmp_path / "cg", tmp_path / "self-cgroup"
    for controller, rel in (("memory", "box/me"), ("cpu", "")):
        directory = root / controller / rel
        directory.mkdir(parents=True)
        (directory / "cgroup.procs").write_text("")
    proc.write_text("4:memory:/box/me\n2:cpu,cpuacct:/\n0::/\n")
    return root, proc


def test_v1_gets_the_plan_quota_and_limit(tmp_path: Path, as_root: None) -> None:
    root, proc = _fake_v1(tmp_path)
    group = create_plan_cgroup(STARTER, name="lt", root=root, proc_self_cgroup=proc)
    memory, cpu = root / "memory" / "box" / "me" / "lt", root / "cpu" / "lt"
    assert (group.version, group.dirs) == (1, (memory, cpu))
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (memory / "memory.limit_in_bytes").read_text() == str(512 * 1024 * 1024)
    assert group.memory_files().is_dedicated
    group.add(4242)
    assert group.pids() == [4242]
    (memory / "cgroup.procs").write_text("")
    (cpu / "cgroup.procs").write_text("")
    assert group.remove() == []
    assert not memory.exists()
    assert not cpu.exists()
    assert group.remove() == []  # idempotent


def test_v2_enables_controllers_and_writes_cpu_max(tmp_path: Path, as_root: None) -> None:
    root = tmp_path / "cg"
    parent = root / "svc"
    parent.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory io\n")
    (parent / "cgroup.controllers").write_text("cpu memory io\n")
    (parent / "cgroup.subtree_control").write_text("\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/svc\n")
    group = create_plan_cgroup(STARTER, name="lt", root=root, proc_self_cgroup=proc)
    assert (group.version, group.dirs) == (2, (parent / "lt",))
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (parent / "lt" / "cpu.max").read_text() == "50000 100000"
    assert (parent / "lt" / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert group.remove() == []


def test_v2_without_delegated_controllers_is_unavailable(tmp_path: Path, as_root: None) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("io\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/\n")
    with pytest.raises(EmulationUnavailable, match="does not delegate"):
        create_plan_cgroup(STARTER, root=root, proc_self_cgroup=proc)


def test_unwritable_v1_is_unavailable_and_leaves_nothing(tmp_path: Path, as_root: None) -> None:
    root, proc = _fake_v1(tmp_path)
    (root / "cpu" / "lt").mkdir()  # a clash: mkdir fails
    with pytest.raises(EmulationUnavailable, match="not writable"):
        create_plan_cgroup(STARTER, name="lt", root=root, proc_self_cgroup=proc)
    assert not (root / "memory" / "box" / "me" / "lt").exists()


def test_non_root_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EmulationUnavailable, match="needs root"):
        create_plan_cgroup(STARTER)


def test_without_a_cgroup_or_systemd_it_says_why_and_runs_unconstrained(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def unavailable(plan: Plan) -> PlanCgroup:
        raise EmulationUnavailable("no cgroups here")

    monkeypatch.setattr(emulate_mod, "create_plan_cgroup", unavailable)
    monkeypatch.setattr(emulate_mod, "SYSTEMD_MARKER", tmp_path / "absent")
    said: list[str] = []
    with emulate(STARTER, log=said.append) as emulation:
        assert emulation.plan is None
        assert emulation.preexec is None
        assert emulation.command_prefix == []
    assert any("no cgroups here" in line and "unconstrained" in line for line in said)


def test_systemd_run_scope_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def unavailable(plan: Plan) -> PlanCgroup:
        raise EmulationUnavailable("no cgroups here")

    monkeypatch.setattr(emulate_mod, "create_plan_cgroup", unavailable)
    monkeypatch.setattr(emulate_mod, "SYSTEMD_MARKER", tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    with emulate(STARTER, log=lambda line: None) as emulation:
        assert emulation.plan == STARTER
        assert emulation.command_prefix[:2] == ["systemd-run", "--scope"]
        assert "CPUQuota=50%" in emulation.command_prefix
        assert f"MemoryMax={512 * 1024 * 1024}" in emulation.command_prefix


def test_no_plan_means_no_emulation() -> None:
    with emulate(None) as emulation:
        assert emulation.plan is None
        assert emulation.memory_files(os.getpid()) is None or not emulation.command_prefix


# -- real cgroups (root with cgroup v1 or v2 writable) -----------------------------------------
@pytest.fixture
def real_group() -> Iterator[PlanCgroup]:
    small = Plan("tiny", cpu_quota_us=50_000, cpu_period_us=100_000, memory_limit_mb=48)
    try:
        group = create_plan_cgroup(small, name=f"lt-test-{os.getpid()}-{time.monotonic_ns()}")
    except EmulationUnavailable as exc:
        pytest.skip(f"cannot create cgroups here: {exc}")
    try:
        yield group
    finally:
        group.remove()


@pytest.mark.slow
def test_a_real_cgroup_confines_a_process_and_is_removed(real_group: PlanCgroup) -> None:
    child = subprocess.Popen(["sleep", "60"], preexec_fn=real_group.join_self)
    try:
        assert real_group.pids() == [child.pid]
        assert Path(f"/proc/{child.pid}/cgroup").read_text().count(real_group.dirs[0].name) >= 1
        limit_file = "memory.limit_in_bytes" if real_group.version == 1 else "memory.max"
        assert int((real_group.memory_dir / limit_file).read_text()) == 48 * 1024 * 1024
        assert real_group.remove() == []  # kills the straggler, then removes the directories
        assert child.wait(timeout=5) == -9
        assert not any(d.exists() for d in real_group.dirs)
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()


@pytest.mark.slow
def test_an_oom_kill_in_the_plan_is_seen_by_the_guard(real_group: PlanCgroup) -> None:
    # A parent that lives on, and a child that allocates past the 48 MB limit.
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1); "
        'data = [b"x" * (1 << 20) for _ in range(200)]; time.sleep(60)\'])\n'
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], preexec_fn=real_group.join_self)
    try:
        sampler = TreeSampler(parent.pid, cgroup=real_group.memory_files())
        deadline = time.monotonic() + 20
        while sampler.fatal_reason is None and time.monotonic() < deadline:
            sampler.sample()
            time.sleep(0.2)
        assert sampler.fatal_reason is not None
        assert "OOM kill" in sampler.fatal_reason
        assert sampler.oom_kills >= 1
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.slow
def test_the_cgroup_is_removed_even_when_the_run_fails() -> None:
    small = Plan("tiny", cpu_quota_us=50_000, cpu_period_us=100_000, memory_limit_mb=64)
    made: list[Path] = []
    started: list[subprocess.Popen[bytes]] = []
    with pytest.raises(RuntimeError, match="boom"), emulate(small, log=lambda _: None) as emu:
        if emu.cgroup is None:
            pytest.skip(f"cannot create cgroups here: {emu.description}")
        made.extend(emu.cgroup.dirs)
        started.append(subprocess.Popen(["sleep", "60"], preexec_fn=emu.preexec))
        raise RuntimeError("boom")
    assert made
    assert not any(d.exists() for d in made)
    assert started[0].wait(timeout=5) == -9  # the straggler was killed by the cleanup
