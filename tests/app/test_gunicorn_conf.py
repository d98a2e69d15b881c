"""config/gunicorn.conf.py: the same settings as the app, and one clear line when they are bad."""

from __future__ import annotations

import gc
import runpy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.app.conftest import ROOT, ProfileWriter

CONF = str(ROOT / "config" / "gunicorn.conf.py")


@pytest.fixture(autouse=True)
def _gc_enabled() -> Iterator[None]:
    """The config disables gc while a preloading master imports the app; undo that here."""
    yield
    gc.enable()


def _load(monkeypatch: pytest.MonkeyPatch, profile: str, **env: str) -> dict[str, Any]:
    monkeypatch.setenv("APP_CONFIG", profile)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(CONF)


def test_conf_reads_the_profile(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_profile(
        {"server": {"workers": 3, "max_requests": 1000, "max_requests_jitter": 100}}
    )
    conf = _load(monkeypatch, str(path), PORT="8123")
    assert conf["bind"] == ["0.0.0.0:8123"]
    assert conf["workers"] == 3
    assert conf["worker_class"] == "app.server.worker.GuardedASGIWorker"
    assert conf["worker_connections"] == 768
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (1000, 100)
    assert conf["timeout"] == 30
    assert conf["graceful_timeout"] == 20
    assert conf["keepalive"] == 5
    assert conf["preload_app"] is True
    assert conf["forwarded_allow_ips"] == "127.0.0.1"
    assert conf["worker_tmp_dir"] == "/dev/shm"
    assert conf["control_socket_disable"] is True
    for hook in ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init"):
        assert callable(conf[hook])
    assert "post_request" not in conf


def test_conf_default_port_is_8000(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _load(monkeypatch, str(write_profile()))["bind"] == ["0.0.0.0:8000"]


def test_conf_honours_web_concurrency(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _load(monkeypatch, str(write_profile()), WEB_CONCURRENCY="1")
    assert conf["workers"] == 1


def test_conf_selects_the_uvicorn_worker(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_profile({"server": {"worker_class": "uvicorn"}})
    assert _load(monkeypatch, str(path))["worker_class"] == "uvicorn_worker.UvicornWorker"


def test_render_profiles_trust_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _load(monkeypatch, str(ROOT / "config" / "starter.yaml"))
    assert conf["forwarded_allow_ips"] == "*"
    assert conf["max_requests"] > 0


def test_no_recycler_without_an_rss_cap(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _load(monkeypatch, str(write_profile({"server": {"max_worker_rss_mb": None}})))
    assert conf["_recycler"] is None


def test_when_ready_freezes_the_master_heap(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _load(monkeypatch, str(write_profile()))
    try:
        conf["when_ready"](None)
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_on_starting_seeds_the_store(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _load(monkeypatch, str(write_profile()))
    conf["on_starting"](None)
    assert conf["_settings"].store.path.exists()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"APP_SERVER__WORKERS": "0"}, "server.workers"),
        ({"PORT": "eighty"}, "env PORT='eighty' is not a port"),
    ],
)
def test_bad_settings_stop_with_one_line(
    write_profile: ProfileWriter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str,
) -> None:
    with pytest.raises(SystemExit) as info:
        _load(monkeypatch, str(write_profile()), **env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gunicorn: invalid configuration: ")
    assert expected in err
    assert err.count("\n") == 1


def test_missing_profile_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _load(monkeypatch, "config/does-not-exist.yaml")
    assert "config/does-not-exist.yaml' (from APP_CONFIG) not found" in capsys.readouterr().err
