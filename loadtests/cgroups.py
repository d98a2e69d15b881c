"""Reading a cgroup's memory counters (v1 and v2) and finding the cgroup a process is in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CgroupFiles:
    """Where to read a cgroup's memory counters (v1: the memory controller dir; v2: the cgroup)."""

    version: int
    path: Path
    is_dedicated: bool = False  # only the server runs in it: its usage is the server's

    def usage_bytes(self) -> int | None:
        """Current charged memory, or None when unreadable."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return _read_int(self.path / name)

    def oom_kills(self) -> int | None:
        """Processes the OOM killer killed in this cgroup so far (v1 oom_control, v2 events)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return read_key(self.path / name, "oom_kill")

    def limit_hits(self) -> int | None:
        """Times usage hit the limit (v1 memory.failcnt, v2 memory.events max)."""
        if self.version == 1:
            return _read_int(self.path / "memory.failcnt")
        return read_key(self.path / "memory.events", "max")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_key(path: Path, key: str) -> int | None:
    """The integer after `key` in a flat-keyed file (memory.events, /proc/vmstat), or None."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None


def cgroup_of(
    pid: int, *, proc_root: Path = Path("/proc"), root: Path = Path("/sys/fs/cgroup")
) -> CgroupFiles | None:
    """The memory cgroup pid lives in (v1 memory controller, else v2), or None if not found."""
    try:
        lines = (proc_root / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    unified: str | None = None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            path = root / "memory" / rel.lstrip("/")
            if (path / "memory.usage_in_bytes").exists():
                return CgroupFiles(1, path)
        if controllers == "":
            unified = rel
    if unified is not None:
        for base in (root, root / "unified"):
            path = base / unified.lstrip("/")
            if (path / "memory.current").exists():
                return CgroupFiles(2, path)
    return None
