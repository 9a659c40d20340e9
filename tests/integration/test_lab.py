"""The namespace lab itself: topology, fault injection, probe and teardown.

Every other integration test stands on this, so these check that each knob
does what it claims (and nothing more, e.g. a partition must not cut off
third parties).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import time

import pytest

from vipd.lab.netns import Host, Lab, _check_lab_address, list_namespaces
from vipd.lab.probe import ProbeLog

N1_V4, N1_V6 = "192.0.2.11", "2001:db8::11"
N2_V4, N2_V6 = "192.0.2.12", "2001:db8::12"
CLIENT_V4, CLIENT_V6 = "192.0.2.100", "2001:db8::100"


def three_hosts(lab: Lab) -> tuple[Host, Host, Host]:
    n1 = lab.add_host("n1", f"{N1_V4}/24", f"{N1_V6}/64")
    n2 = lab.add_host("n2", f"{N2_V4}/24", f"{N2_V6}/64")
    client = lab.add_host("client", f"{CLIENT_V4}/24", f"{CLIENT_V6}/64")
    return n1, n2, client


def lab_namespaces(prefix: str) -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(prefix + "-")]


def ping_loss_percent(host: Host, addr: str, count: int) -> float:
    out = host.run(
        "ping", "-n", "-q", "-i", "0.005", "-W", "1", "-c", str(count), addr, check=False
    )
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out.stdout)
    assert m, out.stdout + out.stderr
    sent, received = int(m.group(1)), int(m.group(2))
    return 100.0 * (sent - received) / sent


# --------------------------------------------------------------------------- #
# Needs root                                                                   #
# --------------------------------------------------------------------------- #


@pytest.mark.netns
def test_hosts_get_addresses_usable_at_once(lab: Lab) -> None:
    n1, n2, client = three_hosts(lab)
    assert lab.prefix.startswith("vl")
    assert n1.ns == f"{lab.prefix}-n1" and n1.ifname == "eth0"
    assert set(lab_namespaces(lab.prefix)) == {
        f"{lab.prefix}-{name}" for name in ("sw", "n1", "n2", "client")
    }
    addrs = n1.addresses()
    assert {f"{N1_V4}/24", f"{N1_V6}/64"} <= addrs
    assert any(a.startswith("fe80:") for a in addrs)
    # DAD is off, so nothing is tentative and the link-local works immediately.
    raw = json.loads(n1.run("ip", "-j", "-6", "addr", "show", "dev", "eth0").stdout)
    assert not [a for a in raw[0]["addr_info"] if a.get("tentative")]
    link_local = next(a for a in addrs if a.startswith("fe80:")).split("/")[0]
    assert client.ping(f"{link_local}%eth0")
    assert n1.mac == json.loads(n1.run("ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    assert len({n1.mac, n2.mac, client.mac}) == 3


@pytest.mark.netns
def test_probe_names_the_node_it_reached(lab: Lab) -> None:
    n1, n2, client = three_hosts(lab)
    n1.start_responder()
    n2.start_responder()
    t0 = time.monotonic()
    p4 = client.start_probe(N1_V4, duration=0.5)
    p6 = client.start_probe(N2_V6, duration=0.5)
    p4.proc.wait(timeout=5)
    p6.proc.wait(timeout=5)
    p4.stop()
    p6.stop()
    for probe, node in ((p4, "n1"), (p6, "n2")):
        results = probe.results()
        assert len(results) >= 20, probe.stderr
        assert all(r.ok for r in results), results[:5]
        assert probe.nodes_seen_after(t0) == {node}
        assert probe.outages() == []
        assert all(t0 <= r.t <= time.monotonic() for r in results)


@pytest.mark.netns
def test_cut_blackholes_host_and_restore_brings_it_back(lab: Lab) -> None:
    n1, _, client = three_hosts(lab)
    n1.start_responder()
    probe = client.start_probe(N1_V4, interval=0.01, timeout=0.2)
    probe.wait_for_success(timeout=5)

    # An attempt that starts while `ip link set down` runs may still get through: the
    # cut is known to be in effect only once lab.cut() has returned.
    t_asked = time.monotonic()
    lab.cut(n1)
    t_cut = time.monotonic()
    time.sleep(0.6)
    assert probe.first_success_after(t_cut + 0.01) is None
    assert not client.ping(N1_V6)

    t_restore = time.monotonic()
    lab.restore(n1)
    t_back = probe.wait_for_success(after=t_restore, node="n1", timeout=5)
    probe.stop()

    # Attempts kept starting every interval although each failed one hung for its timeout.
    during = [r for r in probe.results() if t_cut + 0.01 <= r.t < t_restore]
    assert len(during) >= 30
    assert not any(r.ok for r in during)
    gaps = sorted(b.t - a.t for a, b in itertools.pairwise(during))
    assert gaps[len(gaps) // 2] < 0.03
    ((start, end),) = probe.outages(after=t_cut)
    assert start < t_cut and end == t_back
    assert 0.6 <= probe.longest_outage_after(t_cut) < (t_back - t_asked) + 0.05
    # The host keeps its addresses across a carrier loss.
    assert {f"{N1_V4}/24", f"{N1_V6}/64"} <= n1.addresses()


@pytest.mark.netns
def test_partition_only_separates_the_pair(lab: Lab) -> None:
    n1, n2, client = three_hosts(lab)
    assert n1.ping(N2_V4)  # also primes the neighbour caches: unicast must be dropped too
    lab.partition(n1, n2)
    assert not n1.ping(N2_V4)
    assert not n2.ping(N1_V6)
    assert n1.ping(CLIENT_V4) and n2.ping(CLIENT_V4)
    assert client.ping(N1_V6) and client.ping(N2_V6)
    lab.partition(n1, n2)  # idempotent
    lab.heal(n1, n2)
    # Neighbour resolution may sit between 1 s retransmits: allow a few.
    assert n1.ping(N2_V4, timeout=3) and n2.ping(N1_V6, timeout=3)
    lab.heal(n1, n2)  # idempotent


@pytest.mark.netns
def test_isolate_drops_traffic_but_keeps_carrier(lab: Lab) -> None:
    n1, _, client = three_hosts(lab)
    lab.isolate(n1)
    assert not client.ping(N1_V4)
    link = json.loads(n1.run("ip", "-j", "link", "show", "eth0").stdout)[0]
    assert "LOWER_UP" in link["flags"]
    lab.unisolate(n1)
    # The ARP entry may still be INCOMPLETE, retrying every second: allow a few.
    assert client.ping(N1_V4, timeout=3)


@pytest.mark.netns
def test_set_loss_drops_some_frames(lab: Lab) -> None:
    n1, _, client = three_hosts(lab)
    assert ping_loss_percent(client, N1_V4, 20) == 0.0
    lab.set_loss(n1, 100)
    assert not client.ping(N1_V4)
    # 30 % each way: about 51 % of echo round trips fail.
    lab.set_loss(n1, 30)
    assert 20.0 <= ping_loss_percent(client, N1_V4, 200) <= 85.0
    lab.clear_loss(n1)
    lab.clear_loss(n1)  # idempotent
    assert ping_loss_percent(client, N1_V4, 20) == 0.0


@pytest.mark.netns
def test_neighbour_and_long_arp(lab: Lab) -> None:
    n1, n2, client = three_hosts(lab)
    assert client.neighbour(N1_V4) is None
    assert client.ping(N1_V4) and client.ping(N2_V6)
    assert client.neighbour(N1_V4) == n1.mac
    assert client.neighbour(N2_V6) == n2.mac
    assert client.neighbour("192.0.2.99") is None

    client.set_long_arp()
    for family in ("ipv4", "ipv6"):
        path = f"/proc/sys/net/{family}/neigh/eth0/base_reachable_time_ms"
        assert client.run("cat", path).stdout.strip() == "14400000"
    # The kernel re-draws reachable_time (0.5x..1.5x base) as soon as base changes.
    ntable = client.run("ip", "ntable", "show", "dev", "eth0").stdout
    reachable = [int(x) for x in re.findall(r"\breachable (\d+)", ntable)]
    assert len(reachable) == 2 and all(x >= 7_200_000 for x in reachable), ntable


@pytest.mark.netns
def test_close_removes_everything_and_is_idempotent() -> None:
    lab = Lab()
    try:
        n1, _, client = three_hosts(lab)
        responder = n1.start_responder()
        probe = client.start_probe(N1_V4)
        assert len(lab_namespaces(lab.prefix)) == 4
    finally:
        lab.close()
    assert lab_namespaces(lab.prefix) == []
    assert responder.poll() is not None
    assert probe.proc.poll() is not None
    lab.close()


@pytest.mark.netns
def test_close_cleans_up_when_the_body_raises() -> None:
    prefix = ""
    procs: list[subprocess.Popen[str]] = []
    with pytest.raises(RuntimeError, match="boom"), Lab() as lab:
        prefix = lab.prefix
        n1 = lab.add_host("n1", f"{N1_V4}/24")
        procs.append(n1.popen(["sleep", "60"], text=True))
        raise RuntimeError("boom")
    assert prefix and lab_namespaces(prefix) == []
    assert all(p.poll() is not None for p in procs)


@pytest.mark.netns
def test_parallel_labs_do_not_collide(lab: Lab) -> None:
    # Same host names and addresses in two labs: separate namespaces and switches.
    with Lab() as other:
        assert other.prefix != lab.prefix
        a, ca = lab.add_host("n1", f"{N1_V4}/24"), lab.add_host("c", f"{CLIENT_V4}/24")
        b, cb = other.add_host("n1", f"{N1_V4}/24"), other.add_host("c", f"{CLIENT_V4}/24")
        assert a.ns != b.ns
        assert ca.ping(N1_V4) and cb.ping(N1_V4)
        assert ca.neighbour(N1_V4) == a.mac
        assert cb.neighbour(N1_V4) == b.mac


@pytest.mark.netns
def test_only_lab_ranges_are_accepted(lab: Lab) -> None:
    with pytest.raises(ValueError, match="outside the lab ranges"):
        lab.add_host("bad", "10.0.0.1/24")
    assert f"{lab.prefix}-bad" not in list_namespaces()
    with pytest.raises(ValueError, match="bad host name"):
        lab.add_host("sw")


# --------------------------------------------------------------------------- #
# No root needed                                                               #
# --------------------------------------------------------------------------- #


def test_lab_address_ranges() -> None:
    assert _check_lab_address("192.0.2.5/24") == "192.0.2.5/24"
    assert _check_lab_address("2001:db8:1::5/64") == "2001:db8:1::5/64"
    for bad in ("10.0.0.1/8", "192.0.2.5/16", "2001:db9::1/64", "192.0.2.5"):
        with pytest.raises(ValueError):
            _check_lab_address(bad)


def fake_probe(lines: list[dict[str, object]]) -> ProbeLog:
    """A ProbeLog reading canned results from a child process."""
    text = "".join(json.dumps(line) + "\n" for line in lines) + "not json\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = ProbeLog(proc)
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.close()
    proc.wait(timeout=10)
    log.stop()
    return log


def r(t: float, node: str | None) -> dict[str, object]:
    return {"t": t, "ok": node is not None, "node": node, "rtt": 0.001, "err": None}


def test_probelog_outage_analysis() -> None:
    # Completion order differs from start order, as with concurrent attempts.
    log = fake_probe(
        [
            *[r(1.00, "n1"), r(1.02, None), r(1.01, None), r(1.03, "n2"), r(1.04, "n2")],
            *[r(2.00, None), r(2.01, None), r(2.02, "n2"), r(2.03, "n1"), r(3.0, None)],
        ]
    )
    assert [x.t for x in log.results()] == sorted(x.t for x in log.results())
    assert log.junk == ["not json\n"]
    assert log.outages() == [(1.00, 1.03), (1.04, 2.02), (2.03, math.inf)]
    assert log.outages(after=1.5) == [(1.04, 2.02), (2.03, math.inf)]
    assert log.longest_outage_after(1.5) == math.inf
    assert log.first_success_after(1.005) == 1.03
    assert log.first_success_after(1.005, node="n1") == 2.03
    assert log.first_success_after(5.0) is None
    assert log.nodes_seen_after(1.01) == {"n1", "n2"}
    assert log.node_sequence_after(0.0) == ["n1", "n2", "n1"]


def test_probelog_leading_failures_and_clean_run() -> None:
    log = fake_probe([r(1.0, None), r(1.1, "n1"), r(1.2, "n1")])
    assert log.outages() == [(1.0, 1.1)]
    assert log.longest_outage_after(1.15) == 0.0
    with pytest.raises(TimeoutError):
        log.wait_for_success(after=1.5, timeout=0.2)
