"""The daemon's neighbour flush after an announcement: one per pair of interfaces per pass of the
loop, however many instances announced in that pass (each flush dumps the host's whole
neighbour table)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from vipd.config import parse_config
from vipd.daemon import Daemon

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
    def __init__(self, flushed: int = 0, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.flushed, self.error = flushed, error

    def flush_unresolved_neighbours(self, ifnames: Iterable[str], min_age: float = 0.1) -> int:
        self.calls.append(tuple(ifnames))
        if self.error is not None:
            raise self.error
        return self.flushed


def instance(name: str, interface: str, vip_ifname: str | None = None) -> Any:
    return SimpleNamespace(
        cfg=SimpleNamespace(name=name, interface=interface),
        vip_ifname=vip_ifname or interface,
        counters=Counter(),
    )


def daemon(addrs: RecordingAddrs) -> Daemon:
    return Daemon(parse_config(CONFIG), addrs=addrs)  # type: ignore[arg-type]


def test_the_instances_announcing_in_one_pass_share_one_flush_per_interface_pair() -> None:
    addrs = RecordingAddrs(flushed=2)
    d = daemon(addrs)
    first, second, third = instance("a", "eth0"), instance("b", "eth0"), instance("c", "eth1")
    vmac = instance("d", "eth0", vip_ifname="vrrp.7")

    async def one_pass_then_the_next() -> None:
        d._loop = asyncio.get_running_loop()
        for inst in (first, second, third, vmac):
            d._flush_unresolved_neighbours(inst)
        assert addrs.calls == []  # not before the pass's callbacks have run
        await asyncio.sleep(0)
        assert addrs.calls == [("eth0", "eth0"), ("eth1", "eth1"), ("vrrp.7", "eth0")]
        # What a flush removed counts against the instance that asked for it first.
        assert first.counters["neighbours_flushed"] == 2
        assert second.counters["neighbours_flushed"] == 0
        d._flush_unresolved_neighbours(second)  # a later pass flushes again
        await asyncio.sleep(0)

    asyncio.run(one_pass_then_the_next())
    assert addrs.calls[3:] == [("eth0", "eth0")]
    assert [i.counters["neighbours_flushed"] for i in (first, second, third, vmac)] == [2, 2, 2, 2]


def test_a_failed_flush_is_counted_and_the_next_pair_still_flushed() -> None:
    addrs = RecordingAddrs(error=OSError("netlink: no buffer space"))
    d = daemon(addrs)
    a, b = instance("a", "eth0"), instance("b", "eth1")

    async def one_pass() -> None:
        d._loop = asyncio.get_running_loop()
        d._flush_unresolved_neighbours(a)
        d._flush_unresolved_neighbours(b)
        await asyncio.sleep(0)

    asyncio.run(one_pass())
    assert addrs.calls == [("eth0", "eth0"), ("eth1", "eth1")]
    assert a.counters["neighbour_errors"] == 1 and b.counters["neighbour_errors"] == 1


def test_without_a_running_loop_the_flush_is_immediate() -> None:
    addrs = RecordingAddrs(flushed=1)
    d = daemon(addrs)
    inst = instance("a", "eth0")
    d._flush_unresolved_neighbours(inst)
    assert addrs.calls == [("eth0", "eth0")]
    assert inst.counters["neighbours_flushed"] == 1
