"""Memory probes: this process's RSS, its cgroup's limit and usage, and releasing freed memory."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

logger = logging.getLogger(__name__)

UNLIMITED_THRESHOLD_BYTES = 2**62
"""A cgroup limit at or above this is the kernel's "no limit" (v1 writes 2**63 - page size)."""

_STATM_PATH = "/proc/self/statm"
_STATM_READ_BYTES = 128
_PAGE_SIZE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# (pid that opened it, fd). Replaced as one tuple so a reader never pairs a new pid with an old fd.
_statm: tuple[int, int] | None = None
_statm_lock = threading.Lock()
_use_psutil = False
_psutil_process: tuple[int, psutil.Process] | None = None

_MISSING = object()
_malloc_trim: Callable[[int], int] | object | None = _MISSING
_malloc_trim_lock = threading.Lock()


def _open_statm() -> tuple[int, int] | None:
    """Open /proc/self/statm for the current pid, closing a descriptor inherited across fork."""
    global _statm, _use_psutil
    with _statm_lock:
        pid = os.getpid()
        current = _statm
        if current is not None and current[0] == pid:
            return current
        try:
            fd = os.open(_STATM_PATH, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            logger.info("cannot open %s; measuring RSS through psutil", _STATM_PATH)
            _use_psutil = True
            return None
        _statm = (pid, fd)
        if current is not None:
            # The parent's descriptor, copied by fork(): it still reads the parent's memory.
            with contextlib.suppress(OSError):
                os.close(current[1])
        return _statm


def _psutil_rss_bytes() -> int:
    """RSS through psutil, with one Process object per pid (a pre-fork one names the parent)."""
    global _psutil_process
    pid = os.getpid()
    cached = _psutil_process
    if cached is None or cached[0] != pid:
        cached = (pid, psutil.Process(pid))
        _psutil_process = cached
    return int(cached[1].memory_info().rss)


def process_rss_bytes() -> int:
    """Return this process's resident set size in bytes.

    On Linux this is one ``pread`` on a ``/proc/self/statm`` descriptor kept open per process
    (about 3 us; psutil reopens /proc on every call and costs about 22 us). The descriptor is
    reopened when ``os.getpid()`` changes, because one opened before ``fork()`` keeps reading
    the parent's memory. Where /proc is missing, psutil is used instead.
    """
    if _use_psutil:
        return _psutil_rss_bytes()
    state = _statm
    if state is None or state[0] != os.getpid():
        state = _open_statm()
        if state is None:
            return _psutil_rss_bytes()
    try:
        data = os.pread(state[1], _STATM_READ_BYTES, 0)
    except OSError:
        # Someone closed our descriptor (a daemonizer's closerange, say): open a fresh one.
        _forget_statm(state)
        state = _open_statm()
        if state is None:
            return _psutil_rss_bytes()
        data = os.pread(state[1], _STATM_READ_BYTES, 0)
    return int(data.split(None, 2)[1]) * _PAGE_SIZE_BYTES


def _forget_statm(state: tuple[int, int]) -> None:
    """Drop a descriptor that stopped working so the next read opens a new one."""
    global _statm
    with _statm_lock:
        if _statm == state:
            _statm = None


@dataclass(frozen=True)
class ContainerMemory:
    """The memory limit and usage of the cgroup this process runs in.

    ``limit_bytes`` is None when there is no effective limit (no cgroup, the "max" value, or a
    limit at or above 2**62 or the machine's physical RAM); ``usage_bytes`` is None when the
    cgroup does not report it. ``path`` is the cgroup directory the figures came from.

    Thread safety: immutable.
    """

    limit_bytes: int | None
    usage_bytes: int | None
    cgroup_version: int | None
    path: str | None


_NO_CGROUP = ContainerMemory(limit_bytes=None, usage_bytes=None, cgroup_version=None, path=None)


def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return int(psutil.virtual_memory().total)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # "max" (v2) and anything unparsable mean "no limit here"


def _as_limit(value: int | None, physical_bytes: int | None) -> int | None:
    if value is None or value <= 0 or value >= UNLIMITED_THRESHOLD_BYTES:
        return None
    if physical_bytes is not None and value >= physical_bytes:
        return None
    return value


def _parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """Return (v1 memory controller path, v2 unified path) from /proc/<pid>/cgroup text."""
    v1_path: str | None = None
    v2_path: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    return v1_path, v2_path


def _resolve_dir(mount: str, cgroup_path: str) -> str | None:
    """Find the directory of ``cgroup_path`` under ``mount``.

    Without a cgroup namespace, /proc/self/cgroup names the path on the host (``/docker/<id>``)
    while the container sees its own cgroup mounted at the root: drop leading components until
    the directory exists, ending at the mount itself.
    """
    parts = [p for p in cgroup_path.split("/") if p and p not in (".", "..")]
    for start in range(len(parts) + 1):
        candidate = os.path.join(mount, *parts[start:])
        if os.path.isdir(candidate):
            return candidate
    return None


def _cgroup_v1(mount: str, cgroup_path: str, physical_bytes: int | None) -> ContainerMemory | None:
    directory = _resolve_dir(mount, cgroup_path)
    if directory is None:
        return None
    limit_file = os.path.join(directory, "memory.limit_in_bytes")
    limits = [_as_limit(_read_int(limit_file), physical_bytes)]
    stat = _read_text(os.path.join(directory, "memory.stat")) or ""
    for line in stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "hierarchical_memory_limit":
            with contextlib.suppress(ValueError):
                limits.append(_as_limit(int(value), physical_bytes))
            break
    found = [limit for limit in limits if limit is not None]
    return ContainerMemory(
        limit_bytes=min(found) if found else None,
        usage_bytes=_read_int(os.path.join(directory, "memory.usage_in_bytes")),
        cgroup_version=1,
        path=directory,
    )


def _cgroup_v2(mount: str, cgroup_path: str, physical_bytes: int | None) -> ContainerMemory | None:
    directory = _resolve_dir(mount, cgroup_path)
    if directory is None:
        return None
    mount_real = os.path.realpath(mount)
    limit: int | None = None
    usage: int | None = None
    current = directory
    while True:
        # Every ancestor's memory.max applies; the tightest one is the effective limit.
        value = _as_limit(_read_int(os.path.join(current, "memory.max")), physical_bytes)
        if value is not None and (limit is None or value < limit):
            limit = value
        if usage is None:
            usage = _read_int(os.path.join(current, "memory.current"))
        if os.path.realpath(current) == mount_real:
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return ContainerMemory(limit_bytes=limit, usage_bytes=usage, cgroup_version=2, path=directory)


def container_memory(
    *,
    proc_root: str = "/proc",
    cgroup_root: str = "/sys/fs/cgroup",
    physical_bytes: int | None = None,
) -> ContainerMemory:
    """Return the memory limit and usage of this process's cgroup (v1 or v2).

    The cgroup is resolved through ``<proc_root>/self/cgroup``. With cgroup v1 (or a hybrid
    host whose memory controller is on v1) the limit is the smaller of ``memory.limit_in_bytes``
    and ``hierarchical_memory_limit`` from ``memory.stat``, and usage is
    ``memory.usage_in_bytes``. With cgroup v2 the limit is the tightest ``memory.max`` on the
    way up to the root and usage is ``memory.current``. ``physical_bytes`` (default: this
    machine's RAM) is the size at or above which a limit counts as none. Files that are missing
    or unreadable give None, never an exception.
    """
    physical = _physical_memory_bytes() if physical_bytes is None else physical_bytes
    text = _read_text(os.path.join(proc_root, "self", "cgroup"))
    if text is None:
        return _NO_CGROUP
    v1_path, v2_path = _parse_proc_cgroup(text)
    if v1_path is not None:
        result = _cgroup_v1(os.path.join(cgroup_root, "memory"), v1_path, physical)
        if result is not None:
            return result
    if v2_path is not None:
        # Pure v2 mounts the unified tree at cgroup_root; hybrid hosts mount it at .../unified.
        for mount in (cgroup_root, os.path.join(cgroup_root, "unified")):
            if os.path.exists(os.path.join(mount, "cgroup.controllers")):
                result = _cgroup_v2(mount, v2_path, physical)
                if result is not None:
                    return result
    return _NO_CGROUP


@dataclass(frozen=True)
class ReleaseResult:
    """What one release_memory() call did and how much RSS it gave back.

    ``freed_bytes`` is ``rss_before_bytes - rss_after_bytes`` clamped at zero: RSS is
    process-wide, so other threads allocating meanwhile can hide what was freed.
    ``collected`` is what ``gc.collect`` returned (0 when gc was skipped); ``trimmed`` is True
    when glibc ``malloc_trim(0)`` ran.

    Thread safety: immutable.
    """

    rss_before_bytes: int
    rss_after_bytes: int
    freed_bytes: int
    collected: int
    trimmed: bool
    seconds: float


def _load_malloc_trim() -> Callable[[int], int] | None:
    """Find glibc's malloc_trim once; None on musl, macOS, Windows (nothing to trim there)."""
    global _malloc_trim
    with _malloc_trim_lock:
        if _malloc_trim is _MISSING:
            func: Callable[[int], int] | None = None
            if sys.platform.startswith("linux"):
                try:
                    libc = ctypes.CDLL(None)
                    trim = libc.malloc_trim
                    trim.argtypes = [ctypes.c_size_t]
                    trim.restype = ctypes.c_int
                    func = trim
                except (OSError, AttributeError):
                    func = None
            _malloc_trim = func
        return _malloc_trim  # type: ignore[return-value]  # narrowed from the sentinel above


def release_memory(generation: int | None = 2, *, trim: bool = True) -> ReleaseResult:
    """Collect garbage, then hand freed heap pages back to the OS; return what it measured.

    ``generation`` is passed to ``gc.collect`` (0, 1 or 2; None skips gc). A full collection of
    a FastAPI process takes tens of milliseconds and holds the GIL. ``trim`` then calls glibc
    ``malloc_trim(0)``, which returns free pages inside the heap that ``gc.collect`` alone never
    does (a no-op where glibc is absent). Call release_memory_async from the event loop.

    Raises:
        ValueError: ``generation`` is not None, 0, 1 or 2.
    """
    if generation is not None and generation not in (0, 1, 2):
        msg = f"generation must be None, 0, 1 or 2, got {generation!r}"
        raise ValueError(msg)
    started = time.perf_counter()
    before = process_rss_bytes()
    collected = gc.collect(generation) if generation is not None else 0
    trimmed = False
    if trim:
        malloc_trim = _load_malloc_trim()
        if malloc_trim is not None:
            malloc_trim(0)
            trimmed = True
    after = process_rss_bytes()
    return ReleaseResult(
        rss_before_bytes=before,
        rss_after_bytes=after,
        freed_bytes=max(0, before - after),
        collected=collected,
        trimmed=trimmed,
        seconds=time.perf_counter() - started,
    )


async def release_memory_async(generation: int | None = 2, *, trim: bool = True) -> ReleaseResult:
    """Run release_memory in a worker thread so the event loop keeps serving.

    ``malloc_trim`` releases the GIL, so the loop runs during the trim; ``gc.collect`` holds the
    GIL, so a full collection still pauses the loop for its duration.
    """
    return await asyncio.to_thread(release_memory, generation, trim=trim)
