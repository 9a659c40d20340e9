"""Two real vipd processes, a client whose ARP entries live 4 hours, in network namespaces.

Timing bounds here are functional (the client must recover, and within what the issue
promises), never speed goals: those are measured by benchmarks/.
"""

from __future__ import annotations

import signal
import time

import pytest

from vipd.lab.pair import Pair, wait_until

from .conftest import PairFactory

pytestmark = pytest.mark.netns


def converge(pair: Pair, master: str = "n1") -> None:
    wait_until(lambda: pair.holders() == [master], 10, what=f"{master} to hold the VIP")
    other = next(n for n in pair.nodes if n != master)
    wait_until(
        lambda: pair.nodes[other].instance()["master_priority"] is not None,
        10,
        what=f"{other} to hear the master",
    )


def test_higher_priority_becomes_the_only_master(make_pair: PairFactory) -> None:
    pair = make_pair()
    pair.start()
    converge(pair)
    probe = pair.probe()
    t0 = time.monotonic()
    samples = []
    while time.monotonic() - t0 < 3:
        samples.append(pair.holders())
        time.sleep(0.05)
    assert all(s == ["n1"] for s in samples), samples
    first = probe.first_success_after(t0, node="n1")
    assert first is not None, probe.stderr
    n1, n2 = pair.nodes["n1"].instance(), pair.nodes["n2"].instance()
    assert (n1["state"], n2["state"]) == ("master", "backup")
    assert n2["master"] == "192.0.2.11" and n2["master_priority"] == 150
    assert n1["counters"]["adverts_sent"] >= 3
    assert n2["counters"]["adverts_received"] >= 3


def test_master_killed_and_cut_backup_takes_over_client_follows(
    make_pair: PairFactory,
) -> None:
    pair = make_pair()
    pair.start()
    converge(pair)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    assert pair.client_mac_for_vip() == pair.nodes["n1"].host.mac
    t_fault = pair.crash("n1")
    wait_until(lambda: probe.first_success_after(t_fault, node="n2") is not None, 15)
    assert pair.nodes["n2"].instance()["state"] == "master"
    assert "n2" in pair.holders()
    # The client's 4-hour ARP entry moved only because n2 announced the VIP.
    assert pair.client_mac_for_vip() == pair.nodes["n2"].host.mac
    assert pair.nodes["n2"].instance()["last_transition"]["reason"] == "master-down"


def test_sigterm_sends_priority_zero_and_backup_takes_over_at_once(
    make_pair: PairFactory,
) -> None:
    pair = make_pair()
    pair.start()
    converge(pair)
    probe = pair.probe()
    t_stop = time.monotonic()
    assert pair.stop("n1") == 0
    assert "192.0.2.100/24" not in pair.nodes["n1"].host.addresses()
    wait_until(lambda: probe.first_success_after(t_stop, node="n2") is not None, 10)
    last = pair.nodes["n2"].instance()["last_transition"]
    # master-released: n2 heard priority 0 and waited only Skew_Time (RFC 5798 6.4.2)
    assert (last["to"], last["reason"]) == ("master", "master-released")


def test_preempt_returning_master_takes_the_vip_back(make_pair: PairFactory) -> None:
    pair = make_pair()
    pair.start("n2")
    wait_until(lambda: pair.holders() == ["n2"], 10)
    probe = pair.probe()
    pair.start("n1")
    t_start = time.monotonic()
    wait_until(lambda: pair.holders() == ["n1"], 10)
    wait_until(lambda: probe.first_success_after(t_start, node="n1") is not None, 5)
    assert pair.nodes["n2"].instance()["state"] == "backup"


def test_nopreempt_returning_node_stays_backup(make_pair: PairFactory) -> None:
    pair = make_pair(common={"preempt": False})
    pair.start("n2")
    wait_until(lambda: pair.holders() == ["n2"], 10)
    pair.start("n1")
    wait_until(lambda: pair.nodes["n1"].instance()["master_priority"] == 100, 10)
    time.sleep(3 * pair.advert_interval + 1)  # longer than n1's master-down interval
    assert pair.holders() == ["n2"]
    assert pair.nodes["n1"].instance()["state"] == "backup"


def test_ipv6_vip_moves_and_client_follows_unsolicited_na(make_pair: PairFactory) -> None:
    pair = make_pair(family=6, advert_interval=0.5)
    pair.start()
    converge(pair)
    n1 = pair.nodes["n1"].instance()
    assert n1["primary"].startswith("fe80::")
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    t_fault = pair.crash("n1")
    wait_until(lambda: probe.first_success_after(t_fault, node="n2") is not None, 15)
    assert pair.client_mac_for_vip() == pair.nodes["n2"].host.mac


def test_stale_vip_from_a_crashed_run_is_removed_at_start(make_pair: PairFactory) -> None:
    pair = make_pair()
    pair.nodes["n2"].host.add_address("192.0.2.100/24")
    pair.start("n2", wait=False)
    pair.wait_ready(pair.nodes["n2"])
    # n2 alone starts as backup, so the leftover VIP must be gone before it promotes.
    assert "192.0.2.100/24" not in pair.nodes["n2"].host.addresses()
    assert "stale-vip-removed" in pair.nodes["n2"].log()


def test_a_new_master_answers_a_client_it_tried_to_reach_while_cut_off(
    make_pair: PairFactory,
) -> None:
    """chaos.md finding 7: a packet that n1 sends to the client while its link has no carrier
    leaves an INCOMPLETE neighbour entry whose ARP probes went nowhere; with the carrier back
    it probes again only at its next retransmit (retrans_time_ms, 1 s by default, 30 s here),
    and n1's SYN-ACKs to the client wait in that entry's queue. vipd deletes such entries as
    it announces the VIP, so the client is answered at once (without: after the client's own
    unicast ARP probe, 5 s into its DELAY state)."""
    pair = make_pair(advert_interval=0.1)
    pair.start("n2")
    wait_until(lambda: pair.holders() == ["n2"], 10, what="n2 to hold the VIP")
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n2") is not None, 5)
    n1, client_ip = pair.nodes["n1"].host, "192.0.2.50"
    n1.run("sysctl", "-qw", f"net.ipv4.neigh.{n1.ifname}.retrans_time_ms=30000")

    def entry() -> str:
        shown = n1.run("ip", "neigh", "show", client_ip, "dev", n1.ifname).stdout.split()
        return shown[-1] if shown else "none"

    pair.cut("n1")
    n1.run("ping", "-c1", "-W0.2", client_ip, check=False)
    pair.restore("n1")
    assert entry() == "INCOMPLETE"
    pair.start("n1")
    t_master = wait_until(lambda: pair.holders() == ["n1"], 10, what="n1 to take over")
    wait_until(
        lambda: probe.first_success_after(t_master, node="n1") is not None,
        3,
        what="n1 to answer the client",
    )
    assert pair.nodes["n1"].instance()["counters"]["neighbours_flushed"] == 1


def test_incident_a_frozen_master_resumes_and_client_recovers(make_pair: PairFactory) -> None:
    """Incident A: freeze the master (SIGSTOP + link cut) for 8 s, resume it. keepalived 2.2.7
    never recovers here; vipd must have the client reaching the VIP again within one advert
    interval plus one second, with no manual ARP flush."""
    pair = make_pair(advert_interval=1.0)
    pair.start()
    converge(pair)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    n1 = pair.nodes["n1"].host
    pair.signal("n1", signal.SIGSTOP)
    pair.lab.cut(n1)
    t_freeze = time.monotonic()
    wait_until(lambda: probe.first_success_after(t_freeze, node="n2") is not None, 8)
    time.sleep(max(0.0, 8 - (time.monotonic() - t_freeze)))
    pair.lab.restore(n1)
    pair.signal("n1", signal.SIGCONT)
    t_resume = time.monotonic()
    wait_until(lambda: pair.holders() == ["n1"], 10)
    recovered = wait_until(lambda: probe.first_success_after(t_resume, node="n1") is not None, 10)
    first_ok = probe.first_success_after(t_resume, node="n1")
    assert first_ok is not None
    assert first_ok - t_resume <= pair.advert_interval + 1.0, (
        f"client reached the VIP {first_ok - t_resume:.2f} s after the resume"
    )
    assert recovered >= t_resume
    # Stays recovered: the backup must not keep answering for the VIP.
    time.sleep(1.0)
    tail = [r for r in probe.results() if r.t > first_ok + 0.3]
    assert tail and all(r.ok and r.node == "n1" for r in tail)
    assert pair.client_mac_for_vip() == n1.mac
