"""AddressManager and FrameSender against a real kernel, inside a throwaway netns.

Each test gets its own namespace ``vt<6 hex>`` holding a veth pair va <-> vb:
va is "the router's" interface (192.0.2.1/24, 2001:db8::1/64), vb is the wire
on which frames are captured and from which probes are injected.  Nothing
touches the root namespace: AddressManager runs with ``netns=``, and sockets
are opened in threads that entered the namespace (``in_netns``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from vipd.announce.frames import format_mac, garp_frames, parse_mac, unsolicited_na
from vipd.net.addrs import AddressManager, NetlinkError, in_netns, vmac_name
from vipd.net.packet import FrameSender

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip"),
]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass
class Ns:
    """A test namespace with veth va <-> vb."""

    name: str

    def run(self, *argv: str) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], check=True, capture_output=True, text=True
        )
        return done.stdout

    def ip(self, *argv: str) -> Any:
        """``ip -j ...`` in the namespace, decoded."""
        out = subprocess.run(
            ["ip", "-n", self.name, "-j", *argv], check=True, capture_output=True, text=True
        ).stdout
        return json.loads(out) if out.strip() else []

    def sysctl(self, dev: str, key: str) -> str:
        return self.run("cat", f"/proc/sys/net/ipv4/conf/{dev}/{key}").strip()

    def set_sysctl(self, dev: str, key: str, value: str) -> None:
        self.run("sh", "-c", f"echo {value} > /proc/sys/net/ipv4/conf/{dev}/{key}")

    def mac(self, dev: str) -> bytes:
        return parse_mac(self.ip("link", "show", "dev", dev)[0]["address"])

    def addrs(self, dev: str) -> set[str]:
        return {
            f"{a['local']}/{a['prefixlen']}"
            for link in self.ip("addr", "show", "dev", dev)
            for a in link.get("addr_info", [])
        }

    def link_exists(self, dev: str) -> bool:
        return any(link["ifname"] == dev for link in self.ip("link", "show"))


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


@pytest.fixture
def ns() -> Iterator[Ns]:
    name = "vt" + secrets.token_hex(3)
    _ip("netns", "add", name)
    try:
        the_ns = Ns(name)
        _ip("-n", name, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb")
        for dev in ("va", "vb"):
            # No DAD on the test wire: link-locals are usable at once.
            the_ns.run("sh", "-c", f"echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_dad")
        _ip("-n", name, "addr", "add", "192.0.2.1/24", "dev", "va")
        _ip("-n", name, "addr", "add", "2001:db8::1/64", "dev", "va", "nodad")
        for dev in ("lo", "va", "vb"):
            _ip("-n", name, "link", "set", "dev", dev, "up")
        yield the_ns
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def am(ns: Ns) -> Iterator[AddressManager]:
    manager = AddressManager(netns=ns.name)
    try:
        yield manager
    finally:
        manager.close()


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll ``cond`` until true; return the seconds it took, or raise on timeout."""
    start = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def capture_socket(ns: Ns, ifname: str) -> socket.socket:
    def open_() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        sock.settimeout(0.05)
        return sock

    return in_netns(ns.name, open_)


def collect(
    sock: socket.socket,
    duration: float,
    enough: Callable[[list[Ether]], bool] | None = None,
) -> list[Ether]:
    """Frames received (not sent) on ``sock`` for up to ``duration`` s, parsed by scapy."""
    got: list[Ether] = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if addr[2] == PACKET_OUTGOING:
            continue
        got.append(Ether(data))
        if enough is not None and enough(got):
            break
    return got


# -- link / addresses ------------------------------------------------------------


def test_link_info(ns: Ns, am: AddressManager) -> None:
    info = am.link("va")
    assert info.name == "va"
    assert info.index == ns.ip("link", "show", "dev", "va")[0]["ifindex"]
    assert info.mac == ns.mac("va")
    assert info.up is True
    assert info.ipv4 == (IPv4Interface("192.0.2.1/24"),)
    assert info.ipv6_link_local is not None
    assert info.ipv6_link_local.is_link_local
    assert f"{info.ipv6_link_local}/64" in ns.addrs("va")


def test_link_down_is_not_up(ns: Ns, am: AddressManager) -> None:
    _ip("-n", ns.name, "link", "set", "dev", "vb", "down")  # va loses carrier
    assert am.link("va").up is False
    _ip("-n", ns.name, "link", "set", "dev", "vb", "up")
    wait_for(lambda: am.link("va").up, timeout=3)


def test_missing_interface_raises_with_name(am: AddressManager) -> None:
    with pytest.raises(NetlinkError, match="nosuch0") as exc_info:
        am.link("nosuch0")
    assert exc_info.value.errno == errno.ENODEV
    with pytest.raises(NetlinkError, match="nosuch0"):
        am.addresses("nosuch0")
    with pytest.raises(NetlinkError, match="nosuch0"):
        am.add_vip("nosuch0", IPv4Interface("192.0.2.9/24"))


def test_addresses(ns: Ns, am: AddressManager) -> None:
    got = am.addresses("va")
    assert IPv4Interface("192.0.2.1/24") in got
    assert IPv6Interface("2001:db8::1/64") in got
    assert {str(a) for a in got} == ns.addrs("va")


# -- VIPs --------------------------------------------------------------------------


def test_add_remove_v4_vip_with_label(ns: Ns, am: AddressManager) -> None:
    vip = IPv4Interface("192.0.2.100/24")
    am.add_vip("va", vip, label="va:vip")
    (entry,) = [
        a for a in ns.ip("addr", "show", "dev", "va")[0]["addr_info"] if a["local"] == "192.0.2.100"
    ]
    assert entry["prefixlen"] == 24
    assert entry["label"] == "va:vip"
    assert entry["broadcast"] == "192.0.2.255"  # as `brd +` would set it
    assert entry["valid_life_time"] == 0xFFFFFFFF
    assert vip in am.addresses("va")

    am.add_vip("va", vip, label="va:vip")  # idempotent: no EEXIST, no duplicate
    assert sum(a.startswith("192.0.2.100/") for a in ns.addrs("va")) == 1

    assert am.remove_vip("va", vip) is True
    assert vip not in am.addresses("va")
    assert am.remove_vip("va", vip) is False
    assert am.remove_vip("gone0", vip) is False  # missing interface: nothing to remove


@pytest.mark.parametrize(
    ("vip", "brd"), [("198.51.100.7/30", "198.51.100.7"), ("203.0.113.9/32", None)]
)
def test_v4_broadcast_only_where_prefix_allows(
    ns: Ns, am: AddressManager, vip: str, brd: str | None
) -> None:
    iface = IPv4Interface(vip)
    am.add_vip("va", iface)
    (entry,) = [
        a for a in ns.ip("addr", "show", "dev", "va")[0]["addr_info"] if a["local"] == str(iface.ip)
    ]
    assert entry.get("broadcast") == brd


def test_v4_label_validation(am: AddressManager) -> None:
    with pytest.raises(ValueError):
        am.add_vip("va", IPv4Interface("192.0.2.101/24"), label="other:1")
    with pytest.raises(ValueError):
        am.add_vip("va", IPv4Interface("192.0.2.101/24"), label="va:" + "x" * 13)


def test_add_remove_v6_vip_nodad(ns: Ns, am: AddressManager) -> None:
    vip = IPv6Interface("2001:db8::100/64")
    am.add_vip("va", vip, label="ignored-for-v6")
    (entry,) = [
        a
        for a in ns.ip("addr", "show", "dev", "va")[0]["addr_info"]
        if a["local"] == "2001:db8::100"
    ]
    assert entry.get("nodad") is True
    assert not entry.get("tentative", False)  # usable at once
    am.add_vip("va", vip)  # idempotent
    assert sum(a.startswith("2001:db8::100/") for a in ns.addrs("va")) == 1
    # Immediately usable as a source address.
    in_netns(ns.name, lambda: _bind_v6(vip.ip))
    assert am.remove_vip("va", vip) is True
    assert am.remove_vip("va", vip) is False
    assert vip not in am.addresses("va")


def _bind_v6(addr: IPv6Address) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind((str(addr), 0))


def test_lifetime_expires_and_renewal_keeps(ns: Ns, am: AddressManager) -> None:
    expiring4 = IPv4Interface("192.0.2.150/24")
    expiring6 = IPv6Interface("2001:db8::150/64")
    renewed = IPv4Interface("192.0.2.151/24")
    start = time.monotonic()
    for vip in (expiring4, expiring6, renewed):
        am.add_vip("va", vip, lifetime=2)
    (entry,) = [
        a for a in ns.ip("addr", "show", "dev", "va")[0]["addr_info"] if a["local"] == "192.0.2.150"
    ]
    assert 1 <= entry["valid_life_time"] <= 2
    assert 1 <= entry["preferred_life_time"] <= 2

    time.sleep(max(0.0, start + 1.0 - time.monotonic()))
    am.add_vip("va", renewed, lifetime=3)  # renewed before expiry: now due at ~4 s

    wait_for(lambda: expiring4 not in am.addresses("va"), timeout=4.0)
    wait_for(lambda: expiring6 not in am.addresses("va"), timeout=1.0)
    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed <= 4.0, f"lifetime-2 addresses vanished after {elapsed:.1f}s"
    assert renewed in am.addresses("va"), "the renewal did not extend the lifetime"
    wait_for(lambda: renewed not in am.addresses("va"), timeout=4.0)
    assert time.monotonic() - start >= 3.5


def test_lifetime_none_makes_address_permanent_again(ns: Ns, am: AddressManager) -> None:
    vip = IPv4Interface("192.0.2.160/24")
    am.add_vip("va", vip, lifetime=0.2)  # rounded up to 1 s
    (entry,) = [
        a for a in ns.ip("addr", "show", "dev", "va")[0]["addr_info"] if a["local"] == "192.0.2.160"
    ]
    assert entry["valid_life_time"] <= 1
    am.add_vip("va", vip)
    (entry,) = [
        a for a in ns.ip("addr", "show", "dev", "va")[0]["addr_info"] if a["local"] == "192.0.2.160"
    ]
    assert entry["valid_life_time"] == 0xFFFFFFFF
    time.sleep(1.5)
    assert vip in am.addresses("va")


def test_bad_lifetime_rejected(am: AddressManager) -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            am.add_vip("va", IPv4Interface("192.0.2.170/24"), lifetime=bad)


def test_usable_from_running_event_loop(ns: Ns, am: AddressManager) -> None:
    """The daemon calls AddressManager from coroutines: that must work."""

    async def main() -> set[IPv4Interface | IPv6Interface]:
        am.add_vip("va", IPv4Interface("192.0.2.180/24"))
        assert am.link("va").up
        return am.addresses("va")

    assert IPv4Interface("192.0.2.180/24") in asyncio.run(main())


def test_caller_supplied_iproute(ns: Ns) -> None:
    ipr = IPRoute(netns=ns.name, flags=0)
    try:
        with AddressManager(ipr, netns=ns.name) as manager:
            manager.add_vip("va", IPv4Interface("192.0.2.190/24"))
            assert "192.0.2.190/24" in ns.addrs("va")
        # The manager did not close a socket it does not own.
        assert any(link.get_attr("IFLA_IFNAME") == "va" for link in ipr.link("dump"))
    finally:
        ipr.close()


def test_closed_manager_refuses(ns: Ns) -> None:
    manager = AddressManager(netns=ns.name)
    manager.close()
    manager.close()  # idempotent
    with pytest.raises(ValueError):
        manager.link("va")


def test_missing_netns_raises() -> None:
    with pytest.raises(NetlinkError):
        AddressManager(netns="vt-does-not-exist")


# -- neighbours ---------------------------------------------------------------------


def test_flush_unresolved_neighbours_deletes_only_the_incomplete(
    ns: Ns, am: AddressManager
) -> None:
    """Entries created while va has no carrier stay INCOMPLETE (their probes go nowhere) until
    their next timer; the flush deletes those, in both families, once they are older than a
    LAN round trip, and keeps resolved ones."""
    _ip("-n", ns.name, "link", "set", "dev", "vb", "down")  # va loses carrier
    _ip(
        "-n",
        ns.name,
        "neigh",
        "replace",
        "192.0.2.78",
        "lladdr",
        "02:00:00:00:00:78",
        "dev",
        "va",
        "nud",
        "reachable",
    )
    for dst in ("192.0.2.77", "2001:db8::77"):
        subprocess.run(
            ["ip", "netns", "exec", ns.name, "ping", "-c1", "-W0.2", dst],
            check=False,
            capture_output=True,
        )

    def entries() -> dict[str, str]:
        return {n["dst"]: n["state"][0] for n in ns.ip("neigh", "show", "dev", "va")}

    assert entries() == {
        "192.0.2.77": "INCOMPLETE",
        "2001:db8::77": "INCOMPLETE",
        "192.0.2.78": "REACHABLE",
    }
    assert am.flush_unresolved_neighbours(["va"], min_age=60) == 0  # younger: under way
    assert am.flush_unresolved_neighbours(["va", "nosuch0"]) == 2  # ping waited 0.2 s
    assert entries() == {"192.0.2.78": "REACHABLE"}
    assert am.flush_unresolved_neighbours(["va"]) == 0
    assert am.flush_unresolved_neighbours(["nosuch0"]) == 0


# -- vmac ------------------------------------------------------------------------------


def _link_json(ns: Ns, dev: str) -> dict[str, Any]:
    result: dict[str, Any] = ns.ip("-d", "link", "show", "dev", dev)[0]
    return result


def test_vmac_v4_created_configured_reused_removed(ns: Ns, am: AddressManager) -> None:
    before = (ns.sysctl("va", "arp_ignore"), ns.sysctl("va", "arp_filter"))
    name = am.ensure_vmac("va", 42, 4)
    assert name == "vrrp4.42" == vmac_name(42, 4)
    link = _link_json(ns, name)
    assert link["address"] == "00:00:5e:00:01:2a"
    assert link["link"] == "va"
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "private"
    assert "UP" in link["flags"]
    assert link.get("inet6_addr_gen_mode") == "none"
    assert not any(
        a["family"] == "inet6" for a in ns.ip("addr", "show", "dev", name)[0].get("addr_info", [])
    )
    assert am.link(name).mac == bytes.fromhex("00005e00012a")
    # keepalived's sysctls: vmac answers only for its own addresses, parent ignores VIPs.
    assert ns.sysctl(name, "arp_ignore") == "1"
    assert ns.sysctl(name, "accept_local") == "1"
    assert ns.sysctl(name, "rp_filter") == "0"
    assert ns.sysctl(name, "promote_secondaries") == "1"
    assert ns.sysctl("va", "arp_ignore") == "1"
    assert ns.sysctl("va", "arp_filter") == "1"

    index = link["ifindex"]
    assert am.ensure_vmac("va", 42, 4) == name  # reuse
    assert _link_json(ns, name)["ifindex"] == index

    assert am.remove_vmac(name) is True
    assert not ns.link_exists(name)
    assert (ns.sysctl("va", "arp_ignore"), ns.sysctl("va", "arp_filter")) == before
    assert am.remove_vmac(name) is False


def test_vmac_recreated_when_mac_differs(ns: Ns, am: AddressManager) -> None:
    name = am.ensure_vmac("va", 7, 4)
    _ip("-n", ns.name, "link", "set", "dev", name, "address", "02:00:00:00:00:07")
    assert am.ensure_vmac("va", 7, 4) == name
    assert _link_json(ns, name)["address"] == "00:00:5e:00:01:07"
    assert am.remove_vmac(name)


def test_vmac_v6_gets_parent_link_local_not_eui64(ns: Ns, am: AddressManager) -> None:
    parent_lla = am.link("va").ipv6_link_local
    assert parent_lla is not None
    name = am.ensure_vmac("va", 42, 6)
    assert name == "vrrp6.42"
    link = _link_json(ns, name)
    assert link["address"] == "00:00:5e:00:02:2a"
    assert link["linkinfo"]["info_data"]["mode"] == "private"
    assert ns.addrs(name) == {f"{parent_lla}/64"}  # no fe80::200:5eff:fe00:22a
    assert am.link(name).ipv6_link_local == parent_lla
    assert am.remove_vmac(name)


def test_vmac_refuses_non_macvlan(ns: Ns, am: AddressManager) -> None:
    _ip("-n", ns.name, "link", "add", "name", "vrrp4.43", "type", "veth", "peer", "name", "vx43")
    with pytest.raises(NetlinkError, match="refusing"):
        am.ensure_vmac("va", 43, 4)
    with pytest.raises(NetlinkError, match="refusing"):
        am.remove_vmac("vrrp4.43")
    with pytest.raises(NetlinkError, match="refusing"):
        am.remove_vmac("va")
    assert ns.link_exists("vrrp4.43")
    assert ns.link_exists("va")


def test_vmac_missing_parent(am: AddressManager) -> None:
    with pytest.raises(NetlinkError, match="nosuch0"):
        am.ensure_vmac("nosuch0", 1, 4)


def _arp_probe(ns: Ns, target: IPv4Address) -> list[Ether]:
    """Broadcast an ARP request for ``target`` from vb; return the replies seen on vb."""
    vb_mac = ns.mac("vb")
    request = bytes(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=format_mac(vb_mac))
        / ARP(op=1, hwsrc=format_mac(vb_mac), psrc="192.0.2.200", pdst=str(target))
    )
    cap = capture_socket(ns, "vb")
    sender = in_netns(ns.name, lambda: FrameSender("vb"))
    try:
        assert sender.send([request]) == 1
        frames = collect(cap, 0.5)
    finally:
        sender.close()
        cap.close()
    return [f for f in frames if ARP in f and f[ARP].op == 2 and f[ARP].psrc == str(target)]


def test_vmac_answers_arp_for_vip_parent_does_not(ns: Ns, am: AddressManager) -> None:
    name = am.ensure_vmac("va", 9, 4)
    vip = IPv4Interface("192.0.2.99/32")
    am.add_vip(name, vip)
    vmac = "00:00:5e:00:01:09"
    replies = _arp_probe(ns, vip.ip)
    assert replies, "nobody answered ARP for the VIP"
    assert {r[ARP].hwsrc for r in replies} == {vmac}
    assert {r.src for r in replies} == {vmac}

    # Control: with the parent back at Linux defaults it answers too, with its
    # own MAC -- which is exactly what the sysctls prevent.
    ns.set_sysctl("va", "arp_ignore", "0")
    ns.set_sysctl("va", "arp_filter", "0")
    replies = _arp_probe(ns, vip.ip)
    assert {r[ARP].hwsrc for r in replies} == {vmac, format_mac(ns.mac("va"))}
    assert am.remove_vmac(name)


# -- FrameSender ------------------------------------------------------------------------


def test_frame_sender_garp_and_na_leave_the_interface(ns: Ns) -> None:
    mac = ns.mac("va")
    vip4 = IPv4Address("192.0.2.77")
    vip6 = IPv6Address("2001:db8::77")
    frames = [*garp_frames(mac, vip4), unsolicited_na(mac, vip6)]
    cap = capture_socket(ns, "vb")
    sender = in_netns(ns.name, lambda: FrameSender("va"))
    try:
        with sender:
            assert sender.send(frames) == 3
            assert sender.last_error is None

        def ours(got: list[Ether]) -> list[Ether]:
            return [
                f
                for f in got
                if (ARP in f and f[ARP].psrc == str(vip4))
                or (ICMPv6ND_NA in f and IPv6Address(f[ICMPv6ND_NA].tgt) == vip6)
            ]

        seen = ours(collect(cap, 2.0, enough=lambda got: len(ours(got)) >= 3))
    finally:
        cap.close()
    assert len(seen) == 3
    request, reply, na = seen
    assert bytes(request) == frames[0]
    assert bytes(reply) == frames[1]
    assert bytes(na) == frames[2]
    for frame, op, hwdst in ((request, 1, "00:00:00:00:00:00"), (reply, 2, "ff:ff:ff:ff:ff:ff")):
        assert frame.dst == "ff:ff:ff:ff:ff:ff"
        assert frame.src == format_mac(mac)
        assert frame[ARP].op == op
        assert frame[ARP].hwsrc == format_mac(mac)
        assert frame[ARP].pdst == str(vip4)
        assert frame[ARP].hwdst == hwdst
    assert na.dst == "33:33:00:00:00:01"
    assert na[IPv6].hlim == 255
    assert IPv6Address(na[IPv6].src) == vip6
    assert na[ICMPv6ND_NA].O == 1
    assert na[ICMPv6NDOptDstLLAddr].lladdr == format_mac(mac)
    assert sender.fileno() == -1


def test_frame_sender_link_down_is_not_an_exception(ns: Ns) -> None:
    sender = in_netns(ns.name, lambda: FrameSender("va"))
    try:
        _ip("-n", ns.name, "link", "set", "dev", "va", "down")
        frames = garp_frames(ns.mac("va"), IPv4Address("192.0.2.78"))
        assert sender.send(frames) == 0
        assert sender.last_error is not None
        assert sender.last_error.errno == errno.ENETDOWN
        _ip("-n", ns.name, "link", "set", "dev", "va", "up")
        assert sender.send(frames) == 2
        assert sender.last_error is None
    finally:
        sender.close()
    with pytest.raises(ValueError):
        sender.send(frames)


def test_frame_sender_missing_interface(ns: Ns) -> None:
    with pytest.raises(OSError):
        in_netns(ns.name, lambda: FrameSender("nosuch0"))


def test_in_netns_really_switches_namespace(ns: Ns) -> None:
    names = in_netns(ns.name, lambda: sorted(n for _, n in socket.if_nameindex()))
    assert names == ["lo", "va", "vb"]
