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


def test_recycler_without_an_rss_cap_checks_nothing_but_serves_the_cleaner(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _load(monkeypatch, str(write_profile({"server": {"max_worker_rss_mb": None}})))
    assert conf["_recycler"].max_rss_bytes is None
    assert conf["child_exit"] == conf["_recycler"].child_exit


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
        (
            {"ADMIN_TOKEN": "short-token\n"},
            "'admin.token' is invalid; allowed: a token of at least",
        ),
        ({"METRICS_TOKEN": "x"}, "env METRICS_TOKEN: key 'metrics.token' is invalid"),
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


def test_conf_binds_every_interface_unless_host_says_otherwise(
    write_profile: ProfileWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOST", raising=False)
    assert _load(monkeypatch, str(write_profile()))["bind"] == ["0.0.0.0:8000"]
    loopback = _load(monkeypatch, str(write_profile()), HOST="127.0.0.1", PORT="8124")
    assert loopback["bind"] == ["127.0.0.1:8124"]


def test_conf_refuses_a_host_that_is_not_an_address(
    write_profile: ProfileWriter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        _load(monkeypatch, str(write_profile()), HOST="my-laptop")
    assert info.value.code == 2
    assert "env HOST='my-laptop' is not an IPv4 address" in capsys.readouterr().err


def test_make_run_binds_loopback() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nHOST := 127.0.0.1\n" in makefile
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "HOST=$(HOST)" in run


def test_on_starting_stops_on_a_corrupt_store_with_one_line(
    write_profile: ProfileWriter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conf = _load(monkeypatch, str(write_profile()))
    path = conf["_settings"].store.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database" * 1000)
    with pytest.raises(SystemExit) as info:
        conf["on_starting"](None)
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("gunicorn: cannot start: store ")
    assert "file is not a database" in err
    assert err.count("\n") == 1
