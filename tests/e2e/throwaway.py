"""Throwaway Redis and PostgreSQL servers a test may stop and restart without disturbing others."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT_RANGE = os.environ.get("TEST_PORT_RANGE", "25000-25999")


def range_port() -> int:
    """A free loopback port from TEST_PORT_RANGE (default 25000-25999)."""
    low, high = (int(part) for part in PORT_RANGE.split("-"))
    for port in random.sample(range(low, high + 1), high - low + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    msg = f"no free port in TEST_PORT_RANGE={PORT_RANGE!r}"
    raise RuntimeError(msg)


def _wait_port(port: int, up: bool, timeout_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    msg = f"port {port} not {'up' if up else 'down'} after {timeout_seconds}s"
    raise AssertionError(msg)


@dataclass
class ThrowawayRedis:
    """redis-server on its own port, no persistence."""

    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                "--pidfile",
                str(self.workdir / "redis.pid"),
            ],
            check=True,
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            check=False,
        )
        _wait_port(self.port, up=False)


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def postgres_available() -> bool:
    return (PG_BIN / "initdb").is_file() and shutil.which("runuser") is not None


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL 15 cluster under a temporary directory, owned by the postgres user."""

    port: int
    datadir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, check: bool = True) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True)

    def init(self) -> None:
        self.datadir.mkdir(parents=True)
        shutil.chown(self.datadir, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.datadir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            opts,
            "-l",
            str(self.datadir / "log"),
            "-w",
            "start",
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """Fast shutdown; a cluster that is already down is fine (a test may fail mid-outage)."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False
        )
