"""TreeSampler against a real process tree: a parent that keeps two memory-holding children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from loadtests.guard import MIB, TreeSampler

pytestmark = pytest.mark.slow

CHILD_MB = 24
PARENT = f"""
import subprocess, sys, time
CHILD = "import time; data = b'x' * ({CHILD_MB} << 20); time.sleep(600)"
def spawn():
    return subprocess.Popen([sys.executable, "-c", CHILD])
children = [spawn(), spawn()]
while True:  # respawn a child that exits, like a gunicorn master
    for i, child in enumerate(children):
        if child.poll() is not None:
            children[i] = spawn()
    time.sleep(0.05)
"""


def _wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout} s")


def _children_ready(root: psutil.Process) -> bool:
    try:
        kids = root.children()
        return len(kids) == 2 and all(k.memory_info().rss > CHILD_MB * MIB for k in kids)
    except psutil.Error:
        return False


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], start_new_session=True)
    root = psutil.Process(parent.pid)
    _wait_for(lambda: _children_ready(root))
    yield parent
    with contextlib.suppress(ProcessLookupError):
        os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()


def test_sample_sums_the_master_and_every_worker(tree: subprocess.Popen[bytes]) -> None:
    sampler = TreeSampler(tree.pid, is_alive=lambda: tree.poll() is None)
    sample = sampler.sample()
    assert sample is not None
    assert sample.workers == 2
    assert all(rss > CHILD_MB * MIB for rss in sample.worker_rss_bytes.values())
    assert sample.total_rss_bytes == sample.master_rss_bytes + sum(sample.worker_rss_bytes.values())
    assert sample.total_uss_bytes is not None
    assert sample.total_uss_bytes > 2 * CHILD_MB * MIB
    assert sample.cgroup_usage_bytes is None  # no dedicated cgroup
    assert sampler.samples == [sample]


def test_a_replaced_worker_counts_as_one_recycle(tree: subprocess.Popen[bytes]) -> None:
    sampler = TreeSampler(tree.pid, is_alive=lambda: tree.poll() is None)
    first = sampler.sample()
    assert first is not None
    victim = min(first.worker_rss_bytes)
    os.kill(victim, signal.SIGTERM)
    root = psutil.Process(tree.pid)
    _wait_for(lambda: victim not in {c.pid for c in root.children()} and _children_ready(root))
    second = sampler.sample()
    assert second is not None
    assert second.recycles == 1
    assert sampler.recycles == 1
    assert victim not in second.worker_rss_bytes
    assert sampler.fatal_reason is None


def test_master_death_is_fatal_at_once(tree: subprocess.Popen[bytes]) -> None:
    reasons: list[str] = []
    sampler = TreeSampler(tree.pid, is_alive=lambda: tree.poll() is None, on_fatal=reasons.append)
    assert sampler.sample() is not None
    os.killpg(tree.pid, signal.SIGKILL)
    tree.wait()
    assert sampler.sample() is None
    assert sampler.fatal_reason is not None
    assert "server died" in sampler.fatal_reason
    assert reasons == [sampler.fatal_reason]
    assert sampler.sample() is None  # stays failed


def test_background_thread_samples_on_its_interval(tree: subprocess.Popen[bytes]) -> None:
    sampler = TreeSampler(tree.pid, interval_seconds=0.1, is_uss_enabled=False)
    sampler.start()
    try:
        _wait_for(lambda: len(sampler.samples) >= 5, timeout=10)
    finally:
        sampler.stop()
    times = [s.t_seconds for s in sampler.samples]
    assert times == sorted(times)
    assert all(s.total_uss_bytes is None for s in sampler.samples)
    count = len(sampler.samples)
    time.sleep(0.3)
    assert len(sampler.samples) == count  # stopped means stopped
