"""SharedSnapshots: one file per worker in a private directory, read by its siblings."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.shared_snapshots import SharedSnapshots, UnsafeDirectoryError


def _snap(pid: int, count: int = 1) -> dict[str, object]:
    return {"pid": pid, "requests": [["GET", "/x", "200", count]], "latency": [], "rss_bytes": 1}


def test_shared_snapshots_report_other_live_workers(tmp_path: Path) -> None:
    shared = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    shared.publish(_snap(os.getpid()))
    shared.publish(_snap(os.getppid(), 5))  # a live process standing in for a sibling
    others = shared.others(os.getpid())
    assert [snap["pid"] for snap in others] == [os.getppid()]


def test_shared_snapshots_of_dead_or_stale_workers_are_removed(tmp_path: Path) -> None:
    shared = SharedSnapshots(tmp_path, max_age_seconds=60)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shared.publish(_snap(dead.pid))
    shared.publish(_snap(os.getppid()))
    stale = tmp_path / f"worker-{os.getppid()}.json"
    old = time.time() - 120
    os.utime(stale, (old, old))
    assert shared.others(os.getpid()) == []
    assert list(tmp_path.iterdir()) == []


def test_shared_snapshots_skip_garbage(tmp_path: Path) -> None:
    shared = SharedSnapshots(tmp_path, max_age_seconds=60)
    (tmp_path / "worker-abc.json").write_text("{}")
    (tmp_path / f"worker-{os.getppid()}.json").write_text("{half")
    assert shared.others(os.getpid()) == []
    assert SharedSnapshots(tmp_path / "missing", max_age_seconds=1).others(1) == []


def test_shared_snapshot_remove_and_directory_cleanup(tmp_path: Path) -> None:
    shared = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    shared.publish(_snap(123))
    shared.remove(123)
    shared.remove(123)
    assert list((tmp_path / "m").iterdir()) == []


def test_shared_directory_is_created_private(tmp_path: Path) -> None:
    shared = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    shared.ensure_directory()
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o700


def test_symlinked_shared_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.mkdir(mode=0o700)
    (tmp_path / "m").symlink_to(target)
    shared = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    with pytest.raises(UnsafeDirectoryError, match="symlink"):
        shared.ensure_directory()
    with pytest.raises(UnsafeDirectoryError, match="symlink"):
        shared.publish(_snap(os.getpid()))
    (target / f"worker-{os.getppid()}.json").write_text(json.dumps(_snap(os.getppid())))
    assert shared.others(os.getpid()) == []  # never reads through the link
    assert [path.name for path in target.iterdir()] == [f"worker-{os.getppid()}.json"]


def test_shared_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m").mkdir(mode=0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)
    shared = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    with pytest.raises(UnsafeDirectoryError, match="owned by uid"):
        shared.publish(_snap(os.getpid()))


def test_writable_by_others_shared_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m").chmod(0o777)
    shared = SharedSnapshots(tmp_path / "m", max_age_seconds=60)
    with pytest.raises(UnsafeDirectoryError, match="writable"):
        shared.publish(_snap(os.getpid()))
