"""The daemon's neighbour flush after an announcement (each one dumps the host's whole neighbour
table while the loop waits): one per pair of interfaces for all the instances that asked in one
pass of the loop, and at most one pass of flushes per NEIGHBOUR_FLUSH_SPACING. On a fake loop
and clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from vipd import daemon as daemon_module
from vipd.config import parse_config
from vipd.daemon import NEIGHBOUR_FLUSH_SPACING, Daemon

CONFIG = """
[daemon]
node_name = "n1"

[[instance]]
name = "vi1"
interface = "eth0"
vrid = 1
priority = 100
vips = ["192.0.2.100/24"]
"""


class RecordingAddrs:
    def __init__(self, clock: FakeLoop, flushed: int = 0, error: Exception | None = None) -> None:
        self.clock = clock
        self.calls: list[tuple[float, tuple[str, ...]]] = []
        self.flushed, self.error = flushed, error

    def flush_unresolved_neighbours(self, ifnames: Iterable[str], min_age: float = 0.1) -> int:
        self.calls.append((self.clock.now, tuple(ifnames)))
        if self.error is not None:
            raise self.error
        return self.flushed

    def close(self) -> None:
        pass


class FakeHandle:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at, self.callback, self.cancelled = at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_soon runs at the end of the current pass (run_pass); call_later when the clock
    gets there (advance)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[FakeHandle] = []

    def call_soon(self, callback: Callable[[], None]) -> FakeHandle:
        return self.call_later(0.0, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(self.now + delay, callback)
        self.handles.append(handle)
        return handle

    def advance(self, seconds: float = 0.0) -> None:
        end = self.now + seconds
        while due := [h for h in self.handles if not h.cancelled and h.at <= end]:
            handle = min(due, key=lambda h: h.at)
            handle.cancelled = True
            self.now = max(self.now, handle.at)
            handle.callback()
        self.now = end


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> FakeLoop:
    fake = FakeLoop()
    monkeypatch.setattr(daemon_module, "boottime", lambda: fake.now)
    return fake


def instance(name: str, interface: str, vip_ifname: str | None = None) -> Any:
    return SimpleNamespace(
        cfg=SimpleNamespace(name=name, interface=interface),
        vip_ifname=vip_ifname or interface,
        counters=Counter(),
    )


def daemon(addrs: RecordingAddrs, loop: FakeLoop | None) -> Daemon:
    d = Daemon(parse_config(CONFIG), addrs=addrs)  # type: ignore[arg-type]
    d._loop = loop  # type: ignore[assignment]
    return d


def test_the_instances_asking_in_one_pass_share_one_flush_per_interface_pair(
    loop: FakeLoop,
) -> None:
    addrs = RecordingAddrs(loop, flushed=2)
    d = daemon(addrs, loop)
    first, second, third = instance("a", "eth0"), instance("b", "eth0"), instance("c", "eth1")
    vmac = instance("d", "eth0", vip_ifname="vrrp.7")
    for inst in (first, second, third, vmac):
        d._flush_unresolved_neighbours(inst)
    assert addrs.calls == []  # not before the pass's callbacks have run
    loop.advance()
    assert addrs.calls == [
        (100.0, ("eth0", "eth0")),
        (100.0, ("eth1", "eth1")),
        (100.0, ("vrrp.7", "eth0")),
    ]
    # What a flush removed counts against the instance that asked for it first.
    assert [i.counters["neighbours_flushed"] for i in (first, second, third, vmac)] == [2, 0, 2, 2]


def test_asks_within_the_spacing_wait_for_one_later_flush(loop: FakeLoop) -> None:
    addrs = RecordingAddrs(loop)
    d = daemon(addrs, loop)
    a, b = instance("a", "eth0"), instance("b", "eth0")
    d._flush_unresolved_neighbours(a)
    loop.advance(0.02)
    d._flush_unresolved_neighbours(b)  # the next burst of takeovers, 20 ms later
    loop.advance(0.5)
    d._flush_unresolved_neighbours(a)  # its announcement again
    loop.advance(NEIGHBOUR_FLUSH_SPACING)
    assert addrs.calls == [
        (100.0, ("eth0", "eth0")),
        (100.0 + NEIGHBOUR_FLUSH_SPACING, ("eth0", "eth0")),
    ]
    loop.advance(5.0)
    d._flush_unresolved_neighbours(b)  # long after: at once
    loop.advance()
    assert addrs.calls[2:] == [(106.52, ("eth0", "eth0"))]


def test_a_failed_flush_is_counted_and_the_next_pair_still_flushed(loop: FakeLoop) -> None:
    addrs = RecordingAddrs(loop, error=OSError("netlink: no buffer space"))
    d = daemon(addrs, loop)
    a, b = instance("a", "eth0"), instance("b", "eth1")
    d._flush_unresolved_neighbours(a)
    d._flush_unresolved_neighbours(b)
    loop.advance()
    assert [call for _, call in addrs.calls] == [("eth0", "eth0"), ("eth1", "eth1")]
    assert a.counters["neighbour_errors"] == 1 and b.counters["neighbour_errors"] == 1


def test_a_flush_still_waiting_is_cancelled_at_shutdown(loop: FakeLoop) -> None:
    addrs = RecordingAddrs(loop)
    d = daemon(addrs, loop)
    d._flush_unresolved_neighbours(instance("a", "eth0"))
    loop.advance()
    d._flush_unresolved_neighbours(instance("b", "eth0"))
    d._teardown()
    loop.advance(2 * NEIGHBOUR_FLUSH_SPACING)
    assert len(addrs.calls) == 1


def test_without_a_running_loop_the_flush_is_immediate(loop: FakeLoop) -> None:
    addrs = RecordingAddrs(loop, flushed=1)
    d = daemon(addrs, None)
    inst = instance("a", "eth0")
    d._flush_unresolved_neighbours(inst)
    assert addrs.calls == [(100.0, ("eth0", "eth0"))]
    assert inst.counters["neighbours_flushed"] == 1
