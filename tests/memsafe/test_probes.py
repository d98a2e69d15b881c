"""Tests for memsafe.probes: statm RSS, cgroup v1/v2 limits and release_memory."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import pathlib
import subprocess
import sys
import time

import psutil
import pytest

from memsafe import probes
from memsafe.probes import (
    ContainerMemory,
    ReleaseResult,
    container_memory,
    process_rss_bytes,
    release_memory,
    release_memory_async,
)

MIB = 2**20
GIB = 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CGROUP_V1_MEMORY = pathlib.Path("/sys/fs/cgroup/memory")
linux_only = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="needs Linux /proc/self/statm"
)


@pytest.fixture
def fresh_statm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start from no open statm descriptor and restore the module state afterwards."""
    monkeypatch.setattr(probes, "_statm", None)
    monkeypatch.setattr(probes, "_use_psutil", False)
    monkeypatch.setattr(probes, "_psutil_process", None)


# --- process_rss_bytes -------------------------------------------------------------------


@linux_only
def test_statm_rss_matches_psutil_within_a_few_pages() -> None:
    ours = process_rss_bytes()
    theirs = psutil.Process().memory_info().rss
    assert abs(ours - theirs) <= 16 * PAGE


@linux_only
def test_rss_follows_a_large_allocation() -> None:
    before = process_rss_bytes()
    block = bytearray(64 * MIB)  # zero-filled, so every page is touched
    during = process_rss_bytes()
    del block
    assert during - before >= 48 * MIB


@linux_only
def test_descriptor_is_kept_open_between_calls(fresh_statm: None) -> None:
    process_rss_bytes()
    first = probes._statm
    process_rss_bytes()
    assert probes._statm is first


@linux_only
def test_pid_change_reopens_the_descriptor(
    fresh_statm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    process_rss_bytes()
    old = probes._statm
    assert old is not None
    monkeypatch.setattr(os, "getpid", lambda: old[0] + 1)
    assert process_rss_bytes() > 0
    new = probes._statm
    assert new is not None
    assert new[0] == old[0] + 1
    # The inherited descriptor is closed: a child must not keep reading its parent.
    with pytest.raises(OSError):
        os.fstat(old[1])
    monkeypatch.undo()
    process_rss_bytes()
    assert probes._statm is not None and probes._statm[0] == os.getpid()


@linux_only
def test_closed_descriptor_is_replaced(fresh_statm: None) -> None:
    process_rss_bytes()
    state = probes._statm
    assert state is not None
    os.close(state[1])
    assert process_rss_bytes() > 0
    assert probes._statm is not None and probes._statm is not state


def test_falls_back_to_psutil_without_proc(
    fresh_statm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(probes, "_STATM_PATH", str(tmp_path / "no-statm"))
    rss = process_rss_bytes()
    assert probes._use_psutil is True
    assert abs(rss - psutil.Process().memory_info().rss) <= 16 * MIB
    assert process_rss_bytes() > 0  # later calls go straight to psutil


def test_psutil_fallback_uses_a_process_for_the_current_pid(
    fresh_statm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "_use_psutil", True)
    process_rss_bytes()
    cached = probes._psutil_process
    assert cached is not None and cached[0] == os.getpid()
    process_rss_bytes()
    assert probes._psutil_process is cached


@linux_only
def test_reopen_failure_after_close_falls_back_to_psutil(
    fresh_statm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    process_rss_bytes()
    state = probes._statm
    assert state is not None
    os.close(state[1])
    monkeypatch.setattr(probes, "_STATM_PATH", str(tmp_path / "gone"))
    assert process_rss_bytes() > 0
    assert probes._use_psutil is True


@linux_only
def test_open_statm_returns_the_state_another_thread_opened(fresh_statm: None) -> None:
    opened = probes._open_statm()
    assert probes._open_statm() is opened


@pytest.mark.slow
@linux_only
def test_forked_child_reads_its_own_memory() -> None:
    parent_rss = process_rss_bytes()  # opens the descriptor before fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which coverage does not follow
        code = 1
        try:
            os.close(read_end)
            # The child's own baseline: fork does not copy page tables of file-backed
            # mappings, so a child starts below its parent's RSS.
            child_before = process_rss_bytes()
            block = bytearray(96 * MIB)
            me = psutil.Process()
            me.memory_info()  # psutil's first call allocates: keep that out of the comparison
            ours = process_rss_bytes()
            theirs = me.memory_info().rss
            os.write(write_end, json.dumps([child_before, ours, theirs, len(block)]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_before, ours, theirs, _ = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    figures = {"child_before": child_before, "child_statm": ours, "child_psutil": theirs}
    # 1 MiB of slack for allocations between the two reads: the signal tested is 96 MiB.
    assert abs(ours - theirs) <= MIB, figures
    # A descriptor still reading the parent's statm would show no growth here.
    assert ours - child_before >= 64 * MIB, figures
    parent_now = process_rss_bytes()
    assert abs(parent_now - parent_rss) < 64 * MIB, {**figures, "parent": (parent_rss, parent_now)}


# --- container_memory: fixture trees --------------------------------------------------------


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path: pathlib.Path, cgroup_text: str) -> str:
    _write(tmp_path / "proc" / "self" / "cgroup", cgroup_text)
    return str(tmp_path / "proc")


def _v2_root(tmp_path: pathlib.Path, sub: str = "") -> pathlib.Path:
    root = tmp_path / "cgroup" / sub if sub else tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory pids\n")
    return root


def _container(tmp_path: pathlib.Path, physical_bytes: int = 64 * GIB) -> ContainerMemory:
    return container_memory(
        proc_root=str(tmp_path / "proc"),
        cgroup_root=str(tmp_path / "cgroup"),
        physical_bytes=physical_bytes,
    )


def test_v2_reads_limit_and_usage_of_own_cgroup(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/app.slice/web\n")
    root = _v2_root(tmp_path)
    _write(root / "app.slice" / "web" / "memory.max", "536870912\n")
    _write(root / "app.slice" / "web" / "memory.current", "12345\n")
    assert _container(tmp_path) == ContainerMemory(
        limit_bytes=512 * MIB,
        usage_bytes=12345,
        cgroup_version=2,
        path=str(root / "app.slice" / "web"),
    )


def test_v2_walks_up_to_the_tightest_parent_limit(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/a/b/c\n")
    root = _v2_root(tmp_path)
    _write(root / "a" / "memory.max", str(256 * MIB))
    _write(root / "a" / "b" / "memory.max", str(1 * GIB))
    _write(root / "a" / "b" / "c" / "memory.max", "max\n")
    _write(root / "a" / "b" / "c" / "memory.current", "777\n")
    result = _container(tmp_path)
    assert result.limit_bytes == 256 * MIB
    assert result.usage_bytes == 777
    assert result.path == str(root / "a" / "b" / "c")


def test_v2_child_limit_tighter_than_parent_wins(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/a/b\n")
    root = _v2_root(tmp_path)
    _write(root / "a" / "memory.max", str(2 * GIB))
    _write(root / "a" / "b" / "memory.max", str(300 * MIB))
    assert _container(tmp_path).limit_bytes == 300 * MIB


def test_v2_max_everywhere_means_unlimited(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/a\n")
    root = _v2_root(tmp_path)
    _write(root / "a" / "memory.max", "max\n")
    _write(root / "a" / "memory.current", "100\n")
    result = _container(tmp_path)
    assert result.limit_bytes is None
    assert result.usage_bytes == 100
    assert result.cgroup_version == 2


def test_v2_missing_files_give_none_not_an_error(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/a\n")
    root = _v2_root(tmp_path)
    (root / "a").mkdir()
    result = _container(tmp_path)
    assert result == ContainerMemory(None, None, 2, str(root / "a"))


def test_v2_usage_comes_from_nearest_ancestor_that_reports_it(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/a/b\n")
    root = _v2_root(tmp_path)
    (root / "a" / "b").mkdir(parents=True)
    _write(root / "a" / "memory.current", "4096\n")
    assert _container(tmp_path).usage_bytes == 4096


@pytest.mark.parametrize(
    "value",
    [str(2**62), str(2**63 - 4096), str(64 * GIB), "0", "garbage"],
    ids=["2**62", "v1-unlimited", "physical-ram", "zero", "garbage"],
)
def test_v2_huge_or_invalid_limit_means_unlimited(tmp_path: pathlib.Path, value: str) -> None:
    _proc(tmp_path, "0::/a\n")
    root = _v2_root(tmp_path)
    _write(root / "a" / "memory.max", value)
    assert _container(tmp_path, physical_bytes=64 * GIB).limit_bytes is None


def test_v2_namespaced_path_falls_back_to_the_mount_root(tmp_path: pathlib.Path) -> None:
    # Without a cgroup namespace /proc names the host path; the container sees its own root.
    _proc(tmp_path, "0::/kubepods/pod1/abc\n")
    root = _v2_root(tmp_path)
    _write(root / "memory.max", str(512 * MIB))
    result = _container(tmp_path)
    assert result.limit_bytes == 512 * MIB
    assert result.path == str(root)


def test_v2_on_a_hybrid_host_is_found_under_unified(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "1:name=systemd:/\n0::/svc\n")
    unified = _v2_root(tmp_path, "unified")
    _write(unified / "svc" / "memory.max", str(128 * MIB))
    result = _container(tmp_path)
    assert result.limit_bytes == 128 * MIB
    assert result.cgroup_version == 2


def test_v1_reads_limit_stat_and_usage(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "5:cpu,cpuacct:/x\n4:memory:/x/y\n0::/\n")
    mem = tmp_path / "cgroup" / "memory" / "x" / "y"
    _write(mem / "memory.limit_in_bytes", str(2**63 - 4096))
    _write(mem / "memory.stat", "cache 0\nhierarchical_memory_limit 536870912\nrss 1\n")
    _write(mem / "memory.usage_in_bytes", "999\n")
    assert _container(tmp_path) == ContainerMemory(512 * MIB, 999, 1, str(mem))


def test_v1_own_limit_tighter_than_hierarchical(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "4:cpu,memory:/x\n")
    mem = tmp_path / "cgroup" / "memory" / "x"
    _write(mem / "memory.limit_in_bytes", str(100 * MIB))
    _write(mem / "memory.stat", f"hierarchical_memory_limit {GIB}\n")
    assert _container(tmp_path).limit_bytes == 100 * MIB


def test_v1_unlimited_and_unparsable_stat(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "4:memory:/\n")
    mem = tmp_path / "cgroup" / "memory"
    _write(mem / "memory.limit_in_bytes", str(2**63 - 4096))
    _write(mem / "memory.stat", "hierarchical_memory_limit lots\n")
    result = _container(tmp_path)
    assert result.limit_bytes is None
    assert result.usage_bytes is None
    assert result.cgroup_version == 1


def test_v1_without_mount_falls_back_to_v2(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "4:memory:/x\n0::/y\n")
    root = _v2_root(tmp_path)
    _write(root / "y" / "memory.max", str(64 * MIB))
    assert _container(tmp_path).cgroup_version == 2


def test_no_cgroup_information_gives_all_none(tmp_path: pathlib.Path) -> None:
    assert _container(tmp_path) == ContainerMemory(None, None, None, None)
    _proc(tmp_path, "garbage line\n\n")
    assert _container(tmp_path) == ContainerMemory(None, None, None, None)
    _proc(tmp_path, "0::/a\n")  # v2 named but no unified mount
    assert _container(tmp_path) == ContainerMemory(None, None, None, None)


def test_v2_path_missing_under_mount_is_skipped(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _proc(tmp_path, "0::/a\n")
    _v2_root(tmp_path)
    monkeypatch.setattr(probes, "_resolve_dir", lambda mount, path: None)
    assert _container(tmp_path).cgroup_version is None


def test_unreadable_file_counts_as_missing(tmp_path: pathlib.Path) -> None:
    _proc(tmp_path, "0::/a\n")
    root = _v2_root(tmp_path)
    _write(root / "a" / "memory.max", "\xff\xfe")
    (root / "a" / "memory.current").mkdir()  # reading a directory raises OSError
    assert _container(tmp_path) == ContainerMemory(None, None, 2, str(root / "a"))


def test_default_physical_memory_is_this_machine() -> None:
    physical = probes._physical_memory_bytes()
    assert physical is not None
    assert abs(physical - psutil.virtual_memory().total) < GIB


def test_physical_memory_falls_back_to_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert probes._physical_memory_bytes() == psutil.virtual_memory().total


def test_this_machine_reports_a_cgroup_without_raising() -> None:
    result = container_memory()
    assert result.cgroup_version in (None, 1, 2)
    assert result.limit_bytes is None or result.limit_bytes > 0


_CHILD_SCRIPT = """
import dataclasses, json, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
from memsafe.probes import container_memory
print(json.dumps(dataclasses.asdict(container_memory())))
"""


def _remove_cgroup(path: pathlib.Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)  # the child's exit is still being accounted
    path.rmdir()


@pytest.mark.slow
def test_real_cgroup_v1_child_with_512_mib_limit() -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    if not (CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
        pytest.skip(f"no cgroup v1 memory controller mounted at {CGROUP_V1_MEMORY}")
    if not os.access(CGROUP_V1_MEMORY, os.W_OK):
        pytest.skip(f"{CGROUP_V1_MEMORY} is not writable")
    cgroup = CGROUP_V1_MEMORY / f"memsafe-test-{os.getpid()}"
    try:
        cgroup.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create {cgroup}: {exc}")
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(512 * MIB))
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_SCRIPT, str(cgroup)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result = ContainerMemory(**json.loads(proc.stdout))
        assert result.limit_bytes == 512 * MIB
        assert result.cgroup_version == 1
        assert result.path == str(cgroup)
        assert result.usage_bytes is not None and 0 < result.usage_bytes <= 512 * MIB
    finally:
        _remove_cgroup(cgroup)
    assert not cgroup.exists()


# --- release_memory -------------------------------------------------------------------------


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_release_memory_reports_what_it_did() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # so no automatic collection takes the cycles before release_memory does
    try:
        for _ in range(10):
            _Cycle()
        started = time.perf_counter()
        result = release_memory()
        elapsed = time.perf_counter() - started
    finally:
        if was_enabled:
            gc.enable()
    assert isinstance(result, ReleaseResult)
    assert result.freed_bytes == max(0, result.rss_before_bytes - result.rss_after_bytes)
    assert result.collected >= 10
    assert isinstance(result.seconds, float)
    assert 0 < result.seconds <= elapsed  # timed inside the call, so within the caller's timing
    assert result.trimmed is (probes._load_malloc_trim() is not None)


def test_release_memory_can_skip_gc_and_trim() -> None:
    result = release_memory(None, trim=False)
    assert result.collected == 0
    assert result.trimmed is False


def test_release_memory_collects_the_requested_generation() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    for _ in range(10):
        Cycle()
    assert release_memory(2, trim=False).collected >= 10


@pytest.mark.parametrize("generation", [-1, 3, 1.5, "2"])
def test_release_memory_rejects_bad_generation(generation: object) -> None:
    with pytest.raises(ValueError, match="generation must be None, 0, 1 or 2"):
        release_memory(generation)  # type: ignore[arg-type]  # invalid on purpose


def test_malloc_trim_is_a_no_op_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "_malloc_trim", probes._MISSING)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert release_memory(None).trimmed is False


def test_malloc_trim_missing_from_libc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(name: object) -> object:
        raise OSError("no libc here")

    monkeypatch.setattr(probes, "_malloc_trim", probes._MISSING)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert release_memory(None).trimmed is False


def test_malloc_trim_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "_malloc_trim", probes._MISSING)
    first = probes._load_malloc_trim()
    assert probes._load_malloc_trim() is first


def test_release_memory_async_runs_off_the_loop_thread() -> None:
    import threading

    loop_thread = threading.get_ident()
    seen: list[int] = []
    returned: list[ReleaseResult] = []
    real = probes.release_memory

    def spy(generation: int | None = 2, *, trim: bool = True) -> ReleaseResult:
        seen.append(threading.get_ident())
        returned.append(real(generation, trim=trim))
        return returned[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probes, "release_memory", spy)
        result = asyncio.run(release_memory_async(0, trim=False))
    assert len(returned) == 1
    assert result is returned[0]  # the worker thread's result, passed through unchanged
    assert seen and seen[0] != loop_thread


_FRAGMENT_SCRIPT = """
import dataclasses, json
from memsafe.probes import process_rss_bytes, release_memory
blocks = [bytes(2048) for _ in range(60_000)]  # ~120 MiB of mid-size heap chunks
keep = blocks[::64] + [bytes(2048)]            # survivors pin the heap and its top
del blocks
fragmented = process_rss_bytes()
result = release_memory(None, trim=True)
print(json.dumps({"fragmented": fragmented, "keep": len(keep), **dataclasses.asdict(result)}))
"""


@pytest.mark.slow
@linux_only
def test_trim_returns_a_fragmented_heap_to_the_os() -> None:
    if probes._load_malloc_trim() is None:
        pytest.skip("needs glibc malloc_trim")
    proc = subprocess.run(
        [sys.executable, "-c", _FRAGMENT_SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["trimmed"] is True
    assert report["freed_bytes"] >= 50 * MIB, report
