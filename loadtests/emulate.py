"""Emulate a Render plan: run the server in a cgroup with the plan's CPU quota and memory limit.

Tried in order: cgroup v1 (memory + cpu hierarchies writable, as root), cgroup v2 (the current
cgroup delegates memory and cpu), `systemd-run --scope` (systemd is PID 1). Elsewhere it says why
and the server runs unconstrained. The cgroup is always removed afterwards: stragglers are
killed, then the directory is removed, even on Ctrl-C or failure.

`python -m loadtests.emulate --plan starter [--profile starter] [--port 8000]` serves the app
inside the plan until Ctrl-C (the `make emulate` target).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.cgroups import CgroupFiles, cgroup_of
from loadtests.launcher import GunicornServer, ServerStartError, exit_on_sigterm
from loadtests.thresholds import DEFAULT_THRESHOLDS_PATH, Plan, read_config, resolve_plan

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
SYSTEMD_MARKER = Path("/run/systemd/system")  # Ref: man sd_booted(3)
REMOVE_TIMEOUT_SECONDS = 5.0


class EmulationUnavailable(Exception):
    """This machine cannot confine a process to a plan; the message says why."""


@dataclass
class PlanCgroup:
    """A cgroup made for one run: its directories, and how to put a process into it.

    Thread safety: none needed; the runner creates, joins and removes it from one thread.
    """

    plan: Plan
    version: int
    dirs: tuple[Path, ...]  # v1: (memory dir, cpu dir); v2: (the cgroup dir,)
    is_removed: bool = False

    @property
    def memory_dir(self) -> Path:
        """The directory holding the memory controller's files."""
        return self.dirs[0]

    def memory_files(self) -> CgroupFiles:
        """The counters the guard reads; the cgroup holds only the server."""
        return CgroupFiles(self.version, self.memory_dir, is_dedicated=True)

    def add(self, pid: int) -> None:
        """Move pid (and its future children) into the cgroup."""
        for directory in self.dirs:
            (directory / "cgroup.procs").write_text(f"{pid}\n")

    def join_self(self) -> None:
        """Move the calling process in: a preexec_fn, run in the child between fork and exec."""
        self.add(os.getpid())

    def pids(self) -> list[int]:
        """Processes still in the cgroup."""
        found: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                text = (directory / "cgroup.procs").read_text()
                found.update(int(line) for line in text.split())
        return sorted(found)

    def remove(self, *, timeout_seconds: float = REMOVE_TIMEOUT_SECONDS) -> list[str]:
        """Kill what is left inside, then remove the directories; return problems (empty = clean).

        Idempotent: a second call does nothing.
        """
        if self.is_removed:
            return []
        problems: list[str] = []
        deadline = time.monotonic() + timeout_seconds
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        if left:
            problems.append(f"processes {left} still in {self.memory_dir} after SIGKILL")
        for directory in self.dirs:
            for _ in range(50):  # the kernel may need a moment after the last exit
                try:
                    _rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                problems.append(f"could not remove {directory}")
        self.is_removed = not problems
        return problems


def _rmdir(path: Path) -> None:
    path.rmdir()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _own_cgroups(proc_self_cgroup: Path) -> dict[str, str]:
    """controller -> path of the calling process ("" for the v2 unified line)."""
    owned: dict[str, str] = {}
    for line in proc_self_cgroup.read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            owned[controller] = rel
    return owned


def _v1_dir(root: Path, controller: str, rel: str) -> Path | None:
    for base in (root / controller, *sorted(root.glob(f"*{controller}*"))):
        candidate = base / rel.lstrip("/")
        if candidate.is_dir() and (candidate / "cgroup.procs").exists():
            return candidate
    return None


def create_plan_cgroup(
    plan: Plan,
    *,
    name: str | None = None,
    root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
) -> PlanCgroup:
    """Make a child cgroup of the caller's own with the plan's CPU quota and memory limit.

    Raises:
        EmulationUnavailable: not root, no writable v1 hierarchies or delegating v2 cgroup.
    """
    if os.geteuid() != 0:
        msg = f"creating cgroups needs root, running as uid {os.geteuid()}"
        raise EmulationUnavailable(msg)
    name = name or f"loadtest-{plan.name}-{os.getpid()}"
    try:
        owned = _own_cgroups(proc_self_cgroup)
    except OSError as exc:
        msg = f"cannot read {proc_self_cgroup}: {exc}"
        raise EmulationUnavailable(msg) from None
    memory = _v1_dir(root, "memory", owned["memory"]) if "memory" in owned else None
    cpu = _v1_dir(root, "cpu", owned["cpu"]) if "cpu" in owned else None
    if memory is not None and cpu is not None:
        return _create_v1(plan, name, memory, cpu)
    if "" in owned:
        return _create_v2(plan, name, root, owned[""])
    msg = f"no cgroup v1 memory+cpu hierarchy nor cgroup v2 under {root}"
    raise EmulationUnavailable(msg)


def _create_v1(plan: Plan, name: str, memory_parent: Path, cpu_parent: Path) -> PlanCgroup:
    group = PlanCgroup(plan, 1, (memory_parent / name, cpu_parent / name))
    try:
        for directory in group.dirs:
            directory.mkdir()
        cpu_dir = group.dirs[1]
        _write(cpu_dir / "cpu.cfs_period_us", str(plan.cpu_period_us))
        _write(cpu_dir / "cpu.cfs_quota_us", str(plan.cpu_quota_us))
        _write(group.memory_dir / "memory.limit_in_bytes", str(plan.memory_limit_bytes))
        with contextlib.suppress(OSError):  # no swap on Render: memsw = limit (absent w/o swap)
            _write(group.memory_dir / "memory.memsw.limit_in_bytes", str(plan.memory_limit_bytes))
    except OSError as exc:
        group.remove()
        msg = f"cgroup v1 under {memory_parent} and {cpu_parent} is not writable: {exc}"
        raise EmulationUnavailable(msg) from None
    return group


def _create_v2(plan: Plan, name: str, root: Path, rel: str) -> PlanCgroup:
    mount = root if (root / "cgroup.controllers").exists() else root / "unified"
    parent = mount / rel.lstrip("/")
    try:
        available = (parent / "cgroup.controllers").read_text().split()
    except OSError as exc:
        msg = f"cgroup v2 at {parent} is unreadable: {exc}"
        raise EmulationUnavailable(msg) from None
    missing = {"memory", "cpu"} - set(available)
    if missing:
        msg = f"cgroup v2 at {parent} does not delegate {sorted(missing)} (has {available})"
        raise EmulationUnavailable(msg)
    group = PlanCgroup(plan, 2, (parent / name,))
    try:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        if not {"memory", "cpu"} <= set(enabled):
            # Fails with EBUSY when the parent holds processes (the no-internal-process rule).
            _write(parent / "cgroup.subtree_control", "+memory +cpu")
        group.memory_dir.mkdir()
        _write(group.memory_dir / "cpu.max", f"{plan.cpu_quota_us} {plan.cpu_period_us}")
        _write(group.memory_dir / "memory.max", str(plan.memory_limit_bytes))
        with contextlib.suppress(OSError):
            _write(group.memory_dir / "memory.swap.max", "0")
    except OSError as exc:
        group.remove()
        msg = f"cgroup v2 at {parent} is not writable for memory+cpu: {exc}"
        raise EmulationUnavailable(msg) from None
    return group


@dataclass
class Emulation:
    """How to start the server under a plan: a command prefix, a preexec hook, the cgroup made."""

    plan: Plan | None
    description: str
    command_prefix: list[str] = field(default_factory=list)
    cgroup: PlanCgroup | None = None

    @property
    def preexec(self) -> Callable[[], None] | None:
        """The preexec_fn that moves the server into the cgroup before exec (None without one)."""
        return self.cgroup.join_self if self.cgroup else None

    def memory_files(self, server_pid: int) -> CgroupFiles | None:
        """The server's cgroup counters: its own cgroup when confined, else the one it is in."""
        if self.cgroup is not None:
            return self.cgroup.memory_files()
        found = cgroup_of(server_pid)
        if found is not None and self.command_prefix:  # a systemd scope holds only the server
            return CgroupFiles(found.version, found.path, is_dedicated=True)
        return found


def _systemd_prefix(plan: Plan) -> list[str] | None:
    if not SYSTEMD_MARKER.is_dir() or shutil.which("systemd-run") is None:
        return None
    # Ref: https://www.freedesktop.org/software/systemd/man/latest/systemd.resource-control.html
    return [
        "systemd-run", "--scope", "--quiet", "--collect",
        "-p", f"CPUQuota={plan.cpus * 100:g}%",
        "-p", f"MemoryMax={plan.memory_limit_bytes}",
        "-p", "MemorySwapMax=0",
        "--",
    ]  # fmt: skip


@contextlib.contextmanager
def emulate(plan: Plan | None, *, log: Callable[[str], None] = print) -> Iterator[Emulation]:
    """Yield how to start the server under plan; remove any cgroup made on the way out."""
    if plan is None:
        yield Emulation(None, "no plan: the server runs unconstrained")
        return
    shape = f"{plan.name}: {plan.cpus:g} CPU, {plan.memory_limit_mb} MB"
    emulation: Emulation
    try:
        group = create_plan_cgroup(plan)
        emulation = Emulation(plan, f"plan {shape} (cgroup v{group.version})", cgroup=group)
    except EmulationUnavailable as exc:
        prefix = _systemd_prefix(plan)
        if prefix is not None:
            emulation = Emulation(plan, f"plan {shape} (systemd-run --scope)", prefix)
        else:
            log(f"plan emulation unavailable ({exc}); no systemd either: running unconstrained")
            emulation = Emulation(None, f"plan {plan.name} NOT emulated: {exc}")
    log(f"emulation: {emulation.description}")
    try:
        yield emulation
    finally:
        if emulation.cgroup is not None:
            for problem in emulation.cgroup.remove():
                log(f"emulation cleanup: {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the app inside a plan's cgroup until Ctrl-C, then remove the cgroup."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.emulate", description=__doc__)
    parser.add_argument("--plan", default=os.environ.get("PLAN") or "starter")
    parser.add_argument("--profile", default=os.environ.get("PROFILE") or "starter")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--config", type=Path, default=DEFAULT_THRESHOLDS_PATH)
    args = parser.parse_args(argv)
    plan = resolve_plan(read_config(args.config), args.plan, source=str(args.config))
    exit_on_sigterm()  # SIGTERM unwinds the `with` blocks: the server stops, the cgroup goes
    env = {**os.environ, "APP_CONFIG": f"config/{args.profile}.yaml"}
    with emulate(plan) as emulation:
        server = GunicornServer(
            env=env,
            port=args.port,
            host=os.environ.get("HOST") or "0.0.0.0",  # config/gunicorn.conf.py's default
            command_prefix=emulation.command_prefix,
            preexec_fn=emulation.preexec,
        )
        try:
            with server:
                print(f"emulate: serving {server.url}; Ctrl-C stops it", flush=True)
                return server.process.wait()
        except ServerStartError as exc:
            print(f"emulate: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
