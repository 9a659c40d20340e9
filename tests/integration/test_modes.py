"""Unicast peers (with multicast VRRP blocked on the bridge, as in clouds) and the virtual-MAC
mode (the VIP's MAC moves with it, keepalived's use_vmac)."""

from __future__ import annotations

import signal
import socket
import struct
import time

import pytest

from vipd.lab.pair import Node, Pair, wait_until

from .conftest import PairFactory

pytestmark = pytest.mark.netns


def block_vrrp_multicast(pair: Pair) -> None:
    """Drop 01:00:5e:00:00:12 (224.0.0.18) at the switch, like a cloud network would."""
    script = (
        "table bridge vipdtest {\n"
        "  chain block { type filter hook forward priority -10; "
        "ether daddr 01:00:5e:00:00:12 drop; }\n"
        "}\n"
    )
    pair.lab._sw("nft", "-f", "-", input=script)


def test_unicast_pair_works_where_multicast_is_blocked(make_pair: PairFactory) -> None:
    pair = make_pair()
    block_vrrp_multicast(pair)
    for node, peer in (("n1", "192.0.2.12"), ("n2", "192.0.2.11")):
        pair.write_config(pair.nodes[node], unicast_peers=[peer])
    pair.start()
    wait_until(lambda: pair.holders() == ["n1"], 10)
    wait_until(lambda: pair.nodes["n2"].instance()["master_priority"] == 150, 10)
    # Stays converged: the backup hears the master over unicast only.
    time.sleep(4)
    assert pair.holders() == ["n1"]
    assert pair.nodes["n2"].instance()["state"] == "backup"
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    t_fault = pair.crash("n1")
    wait_until(lambda: probe.first_success_after(t_fault, node="n2") is not None, 15)


def joined_vrrp_group(node: Node) -> bool:
    """Whether the node's lab interface is a member of 224.0.0.18, by its namespace's
    /proc/net/igmp (groups printed as the address's four bytes read as a host-order number)."""
    group = f"{struct.unpack('=I', socket.inet_aton('224.0.0.18'))[0]:08X}"
    device = None
    for line in node.host.run("cat", "/proc/net/igmp").stdout.splitlines()[1:]:
        if not line.startswith("\t"):
            device = line.split()[1]
        elif device == node.host.ifname and line.split()[0] == group:
            return True
    return False


def test_only_a_multicast_instance_joins_the_vrrp_group(make_pair: PairFactory) -> None:
    """Unicast peers need no group membership (so no IGMP reports either); a reload that turns
    an instance to multicast joins the group on the socket it already has."""
    pair = make_pair()
    n1, n2 = pair.nodes["n1"], pair.nodes["n2"]
    pair.write_config(n1, unicast_peers=["192.0.2.12"])
    pair.start()
    wait_until(lambda: pair.holders() == ["n1"], 10)
    assert not joined_vrrp_group(n1)
    assert joined_vrrp_group(n2)  # the multicast side, and the oracle's check
    pair.write_config(n1)
    pair.signal("n1", signal.SIGHUP)
    wait_until(lambda: joined_vrrp_group(n1), 10, what="n1 to join 224.0.0.18 on reload")
    assert pair.holders() == ["n1"]


def test_unicast_ignores_adverts_from_unconfigured_peers(make_pair: PairFactory) -> None:
    """n2 lists only a peer that does not exist, so n1's adverts are not from a configured
    peer: n2 must drop them and become master itself."""
    pair = make_pair()
    pair.write_config(pair.nodes["n1"], unicast_peers=["192.0.2.12"])
    pair.write_config(pair.nodes["n2"], unicast_peers=["192.0.2.99"])
    pair.start()
    wait_until(lambda: pair.nodes["n2"].instance()["state"] == "master", 10)
    counters = pair.nodes["n2"].instance()["counters"]
    assert counters.get("drop:unknown-peer", 0) >= 1


def test_virtual_mac_moves_with_the_vip(make_pair: PairFactory) -> None:
    pair = make_pair(common={"use_vmac": True})
    vmac = "00:00:5e:00:01:33"  # VRID 51 (RFC 5798 7.3)
    pair.start()
    wait_until(lambda: pair.nodes["n1"].instance()["state"] == "master", 10)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 10)
    assert pair.client_mac_for_vip() == vmac
    t_fault = pair.crash("n1")
    wait_until(lambda: probe.first_success_after(t_fault, node="n2") is not None, 15)
    # The client's neighbour entry never had to change: the MAC moved with the VIP.
    assert pair.client_mac_for_vip() == vmac
    assert pair.stop("n2") == 0
    out = pair.nodes["n2"].host.run("ip", "-o", "link", "show").stdout
    assert "vrrp4.51" not in out  # vmac removed on clean shutdown
