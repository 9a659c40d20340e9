"""sd_notify client against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vipd import sdnotify


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket at a short path (sun_path is 108 bytes) as $NOTIFY_SOCKET."""
    with tempfile.TemporaryDirectory(prefix="sdn-") as tmp:
        path = str(Path(tmp) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield sock
        finally:
            sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_stopping_watchdog_status(manager: socket.socket) -> None:
    assert sdnotify.ready()
    assert received(manager) == "READY=1"
    assert sdnotify.stopping()
    assert received(manager) == "STOPPING=1"
    assert sdnotify.watchdog()
    assert received(manager) == "WATCHDOG=1"
    assert sdnotify.status("vip: MASTER\nsecond line")
    assert received(manager) == "STATUS=vip: MASTER second line"


def test_reloading_carries_monotonic_usec(manager: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = received(manager).split("\n")
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "vipd-test-" + secrets.token_hex(6)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1\nSTATUS=up")
        assert received(sock) == "READY=1\nSTATUS=up"


def test_without_notify_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.ready()
    assert not sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "vsock:2:1234"})


def test_unreachable_socket_returns_false_not_raises(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}
    assert not sdnotify.notify("READY=1", env=env)


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": pid}) == 2.5
    # Inherited from a watched parent: not ours to ping.
    other = str(os.getpid() + 1)
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": other}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_watchdog_loop_pings_at_half_the_interval(manager: socket.socket) -> None:
    healthy = [True, False, True]

    def health() -> bool:
        return healthy.pop(0) if healthy else True

    async def run() -> None:
        task = asyncio.create_task(sdnotify.watchdog_loop(0.4, health))
        await asyncio.sleep(0.5)  # pings at 0.0 and 0.4 (the one at 0.2 was unhealthy)
        task.cancel()

    asyncio.run(run())
    manager.settimeout(0.1)
    pings = []
    while True:
        try:
            pings.append(received(manager))
        except TimeoutError:
            break
    assert pings == ["WATCHDOG=1", "WATCHDOG=1"]


def test_watchdog_loop_without_watchdog_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(), 1.0))
