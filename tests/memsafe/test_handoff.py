"""The 1-worker recycle overlap: ask the master for a replacement, drain once it serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from memsafe import _handoff, _worker
from memsafe.recycle import RSSRecycler

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("memsafe._handoff.tempfile.gettempdir", lambda: str(tmp_path))


class Master:
    """What the hooks read of gunicorn's arbiter: pid, num_workers and cfg."""

    def __init__(self, recycler: RSSRecycler, workers: int = 1, pid: int = 4242) -> None:
        self.pid = pid
        self.num_workers = workers
        self.cfg = type("Cfg", (), {"workers": workers, "child_exit": recycler.child_exit})()


class Worker:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.alive = True


Worker.__module__ = "gunicorn.workers.fake"


def test_a_lone_worker_asks_for_its_replacement_and_drains_once_it_is_ready() -> None:
    reasons: list[str] = []
    kills: list[tuple[int, int]] = []
    recycler = RSSRecycler(64, None, rss_probe=lambda: 10 * MIB, exit_request=reasons.append)
    master = Master(recycler, pid=os.getpid())  # the marker dir is keyed by the master pid
    recycler.post_fork(master, Worker(os.getpid()))
    assert recycler._is_overlapping
    drained = threading.Event()

    def drain() -> None:
        reasons.append("drain")
        drained.set()

    started = _handoff.start_replacement(
        master.pid,
        drain,
        timeout_seconds=10,
        kill=lambda pid, sig: kills.append((pid, sig)),
    )
    assert started
    assert kills == [(master.pid, signal.SIGTTIN)]
    directory = _handoff.handoff_dir(master.pid)
    assert (directory / f"handoff-{os.getpid()}").exists()
    assert not drained.wait(0.1)  # no replacement yet: keeps serving
    # The replacement (another process) reports ready once its app serves.
    code = "import sys; from memsafe import _handoff; _handoff.mark_ready(int(sys.argv[1]))"
    env = {**os.environ, "TMPDIR": str(directory.parent)}
    subprocess.run([sys.executable, "-c", code, str(master.pid)], check=True, env=env)
    assert drained.wait(5)
    assert reasons == ["drain"]
    # The master reaps the old worker: the extra slot goes back, the markers go away.
    master.num_workers = 2
    recycler.child_exit(master, Worker(os.getpid()))
    assert master.num_workers == 1
    assert not (directory / f"handoff-{os.getpid()}").exists()
    recycler.on_exit(master)
    assert not directory.exists()


def test_a_replacement_that_never_comes_still_drains_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drained = threading.Event()
    with caplog.at_level("WARNING", logger="memsafe.recycle"):
        assert _handoff.start_replacement(
            os.getpid(), drained.set, timeout_seconds=0.05, kill=lambda pid, sig: None
        )
        assert drained.wait(5)
    assert "no replacement ready after" in caplog.text


def test_a_failed_signal_means_no_overlap_and_no_marker() -> None:
    def refuse(pid: int, sig: int) -> None:
        raise ProcessLookupError(pid)

    assert not _handoff.start_replacement(os.getpid(), lambda: None, timeout_seconds=1, kill=refuse)
    assert list(_handoff.handoff_dir(os.getpid()).iterdir()) == []


def test_an_unsafe_marker_directory_means_no_overlap(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    _handoff.handoff_dir(99).symlink_to(target)
    assert not _handoff.start_replacement(99, lambda: None, timeout_seconds=1)
    loose = _handoff.handoff_dir(98)
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert not _handoff.start_replacement(98, lambda: None, timeout_seconds=1)


def test_a_worker_boot_marks_ready_only_while_a_handoff_waits() -> None:
    directory = _handoff.handoff_dir(os.getpid())
    _handoff.mark_ready(os.getpid())  # no directory, nothing waits: nothing written
    assert not directory.exists()
    directory.mkdir(mode=0o700)
    _handoff.mark_ready(os.getpid())
    assert list(directory.iterdir()) == []
    (directory / "handoff-1").touch()
    _handoff.mark_ready(os.getpid())
    assert (directory / f"ready-{os.getpid()}").exists()


def test_two_waiting_workers_never_take_the_same_replacement(tmp_path: Path) -> None:
    directory = _handoff.handoff_dir(1)
    directory.mkdir(mode=0o700)
    (directory / "ready-10").touch()
    (directory / "ready-11").touch()
    ready = {"ready-10", "ready-11"}
    assert _handoff._claim(directory, ready)
    assert _handoff._claim(directory, ready)
    assert not _handoff._claim(directory, ready)  # both taken
    assert sorted(p.name for p in directory.iterdir()) == ["claimed-10", "claimed-11"]


def test_a_worker_that_never_asked_gives_nothing_back() -> None:
    recycler = RSSRecycler(64, None)
    master = Master(recycler, workers=3)
    recycler.child_exit(master, Worker(12345))
    assert master.num_workers == 3


@pytest.mark.parametrize(
    ("workers", "overlap_max_workers", "is_child_exit_installed", "expected"),
    [
        (1, 1, True, True),
        (2, 1, True, False),
        (2, 2, True, True),
        (1, 0, True, False),
        (1, 1, False, False),
    ],
)
def test_overlap_needs_few_workers_and_the_master_hook(
    workers: int, overlap_max_workers: int, is_child_exit_installed: bool, expected: bool
) -> None:
    recycler = RSSRecycler(64, None, overlap_max_workers=overlap_max_workers)
    master: Any = Master(recycler, workers=workers)
    if not is_child_exit_installed:
        master.cfg.child_exit = lambda server, worker: None
    recycler.post_fork(master, Worker(os.getpid()))
    assert recycler._is_overlapping is expected


def test_recycle_under_overlap_falls_back_to_draining_when_the_signal_fails() -> None:
    reasons: list[str] = []
    recycler = RSSRecycler(64, None, rss_probe=lambda: 100 * MIB, exit_request=reasons.append)
    # Above Linux's largest pid (2**22): SIGTTIN to it fails with ProcessLookupError.
    recycler.post_fork(Master(recycler, pid=2**22 + 7), Worker(os.getpid()))
    assert recycler._is_overlapping
    assert recycler.check() is True
    assert reasons and "rss 100.0 MiB" in reasons[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_fresh_recycle_state() -> None:
    _worker.record_worker(Worker(1))
    _worker.request_worker_exit("parent", kill=lambda pid, sig: None)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        fresh = _worker.current_worker() is None and not _worker.is_exit_requested()
        os.write(write, b"1" if fresh else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert _worker.is_exit_requested()  # the parent keeps its own state
