"""Tests of SingletonMeta, AgentSingleton and singleton_stats."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from memsafe import singleton
from memsafe.singleton import AgentSingleton, SingletonMeta, singleton_stats
from tests.memsafe.fakes import CountingLock

ALLOCATION_BYTES = 8 * 1024 * 1024


class Counted(AgentSingleton):
    setups = 0

    def _setup(self) -> None:
        type(self).setups += 1
        self.table = {"ready": True}


@pytest.fixture(autouse=True)
def _zero_counts() -> None:
    Counted.setups = 0


def test_setup_runs_once_and_every_call_returns_the_same_instance() -> None:
    first = Counted()
    assert Counted() is first
    assert Counted() is first
    assert Counted.setups == 1
    assert first.table == {"ready": True}


def test_default_setup_does_nothing() -> None:
    class Plain(AgentSingleton):
        pass

    assert Plain() is Plain()


def test_plain_metaclass_use_ignores_later_arguments() -> None:
    class Config(metaclass=SingletonMeta):
        def __init__(self, value: int) -> None:
            self.value = value

    assert Config(1).value == 1
    assert Config(2).value == 1


def test_subclass_gets_its_own_instance() -> None:
    built: list[type] = []

    class Parent(AgentSingleton):
        def _setup(self) -> None:
            built.append(type(self))

    class Child(Parent):
        pass

    parent, child = Parent(), Child()
    assert parent is not child
    assert type(child) is Child
    assert Child() is child
    assert Parent() is parent
    assert built == [Parent, Child]


def test_built_instance_is_returned_without_taking_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = CountingLock()
    monkeypatch.setattr(SingletonMeta, "_lock", lock)
    Counted()
    assert lock.enters == 1
    for _ in range(10):
        Counted()
    assert lock.enters == 1


def test_failed_construction_is_not_registered_and_can_be_retried() -> None:
    class Flaky(AgentSingleton):
        attempts = 0

        def _setup(self) -> None:
            type(self).attempts += 1
            if type(self).attempts == 1:
                msg = "first attempt fails"
                raise OSError(msg)

    with pytest.raises(OSError, match="first attempt fails"):
        Flaky()
    assert "test_failed_construction_is_not_registered_and_can_be_retried" not in str(
        singleton_stats()
    )
    instance = Flaky()
    assert Flaky() is instance
    assert Flaky.attempts == 2


def test_constructing_itself_during_setup_raises_instead_of_recursing() -> None:
    class Recursive(AgentSingleton):
        is_recursing = True

        def _setup(self) -> None:
            if type(self).is_recursing:
                Recursive()

    with pytest.raises(RuntimeError, match=r"Recursive was constructed again while its __init__"):
        Recursive()
    Recursive.is_recursing = False
    assert Recursive() is Recursive()


def test_singleton_may_build_another_singleton_in_setup() -> None:
    class Inner(AgentSingleton):
        pass

    class Outer(AgentSingleton):
        def _setup(self) -> None:
            self.inner = Inner()

    assert Outer().inner is Inner()


def test_stats_record_time_memory_and_process_of_setup() -> None:
    class Heavy(AgentSingleton):
        def _setup(self) -> None:
            self.blob = bytearray(b"\x01") * ALLOCATION_BYTES  # touched, so resident
            time.sleep(0.01)

    before = time.time()
    Heavy()
    stats = singleton_stats()
    key = Heavy.__qualname__
    assert list(stats) == [key]
    entry = stats[key]
    assert before <= entry["created_at"] <= time.time()
    assert entry["setup_seconds"] >= 0.01
    assert entry["setup_rss_delta_bytes"] >= ALLOCATION_BYTES // 2
    assert entry["pid"] == os.getpid()


def test_stats_are_a_copy() -> None:
    Counted()
    stats = singleton_stats()
    stats[Counted.__qualname__]["pid"] = -1
    assert singleton_stats()[Counted.__qualname__]["pid"] == os.getpid()


def test_reset_for_tests_forgets_everything() -> None:
    first = Counted()
    SingletonMeta._reset_for_tests()
    assert singleton_stats() == {}
    assert Counted() is not first
    assert Counted.setups == 2


def test_reset_for_tests_can_target_one_class() -> None:
    class Other(AgentSingleton):
        pass

    counted, other = Counted(), Other()
    SingletonMeta._reset_for_tests(Counted)
    assert list(singleton_stats()) == [Other.__qualname__]
    assert Other() is other
    assert Counted() is not counted


def test_rss_reader_matches_psutil() -> None:
    rss = singleton._rss_bytes()
    assert rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)


def test_rss_reader_falls_back_to_psutil_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(singleton, "_STATM_PATH", "/nonexistent/statm")
    rss = singleton._rss_bytes()
    assert rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)


def test_after_fork_hook_replaces_a_lock_that_may_be_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = threading.RLock()
    monkeypatch.setattr(SingletonMeta, "_lock", held)
    monkeypatch.setattr(SingletonMeta, "_constructing", {Counted})
    SingletonMeta._after_fork_in_child()
    assert SingletonMeta._lock is not held
    assert SingletonMeta._constructing == set()


@pytest.mark.slow
def test_32_racing_threads_get_one_instance_and_setup_runs_once() -> None:
    class Slow(AgentSingleton):
        setups = 0

        def _setup(self) -> None:
            type(self).setups += 1
            time.sleep(0.02)  # widen the race window

    barrier = threading.Barrier(32)
    results: list[Slow] = []
    results_lock = threading.Lock()

    def construct() -> None:
        barrier.wait()
        instance = Slow()
        with results_lock:
            results.append(instance)

    threads = [threading.Thread(target=construct) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 32
    assert len({id(instance) for instance in results}) == 1
    assert Slow.setups == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_inherits_the_instance_and_can_still_construct() -> None:
    parent_instance = Counted()
    ready = threading.Event()
    release = threading.Event()

    class Blocking(AgentSingleton):
        def _setup(self) -> None:
            ready.set()
            release.wait(5)

    # Fork while another thread holds the construction lock: without the at-fork hook the
    # child could never take it.
    holder = threading.Thread(target=Blocking)
    holder.start()
    assert ready.wait(5)
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        signal.alarm(5)  # a deadlocked child dies instead of hanging the suite
        code = 0
        try:
            if Counted() is not parent_instance:
                code = 3
            if singleton_stats()[Counted.__qualname__]["pid"] == os.getpid():
                code = 4

            class Fresh(AgentSingleton):
                pass

            Fresh()
        except BaseException:
            code = 5
        os._exit(code)
    release.set()
    holder.join(5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
