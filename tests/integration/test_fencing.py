"""The failure matrix of fencing.md, row by row, with real processes: two vipd nodes, a
witness (the embedded `vipd witness`, or a real etcd), a client probing the VIP over TCP whose
ARP entries live four hours. Every test watches who holds the VIP every 20 ms and asserts the
dual-holder time of its row is zero (S1), then the outcome its row expects.

Timing here is functional, never a speed goal (those are in benchmarks/): waits are generous,
and the figures a row produces (takeover time, outage) are printed for the record.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from vipd.lab.pair import WITNESS_V4, HolderMonitor, Pair, wait_until

from .conftest import PairFactory

pytestmark = pytest.mark.netns

INTERVAL = 0.2  # seconds between adverts: Master_Down_Interval ~0.72 s for priority 100
BACKENDS = ["embedded", "etcd"]


def fenced(make_pair: PairFactory, backend: str = "embedded", **kw: Any) -> Pair:
    kw.setdefault("advert_interval", INTERVAL)
    pair = make_pair(witness=backend, **kw)
    pair.start_witness()
    pair.start("n1")  # first, so it is master without a start-up race (nopreempt tests)
    wait_until(lambda: pair.holders() == ["n1"], 20, what="n1 to hold the VIP")
    pair.start("n2")
    wait_until(lambda: lease(pair, "n1")["state"] == "held", 10, what="n1's lease")
    wait_until(lambda: inst(pair, "n2")["master_priority"] is not None, 10, what="n2 to hear n1")
    return pair


def inst(pair: Pair, node: str) -> dict[str, Any]:
    return pair.nodes[node].instance()


def lease(pair: Pair, node: str) -> dict[str, Any]:
    witness: dict[str, Any] = inst(pair, node)["witness"]
    return witness


def counter(pair: Pair, node: str, name: str) -> int:
    return int(inst(pair, node)["counters"].get(name, 0))


def events(pair: Pair, node: str, event: str) -> list[dict[str, Any]]:
    found = []
    for line in pair.nodes[node].log().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def master_down_interval(pair: Pair, priority: int = 100) -> float:
    return 3 * pair.advert_interval + (256 - priority) * pair.advert_interval / 256


@pytest.fixture
def monitor_of() -> Iterator[Any]:
    """Start a HolderMonitor on a pair; always stopped at the end."""
    monitors: list[HolderMonitor] = []

    def start(pair: Pair) -> HolderMonitor:
        monitors.append(pair.watch_holders())
        return monitors[-1]

    yield start
    for m in monitors:
        m.stop()


def assert_no_split_brain(monitor: HolderMonitor) -> None:
    monitor.stop()
    assert monitor.dual_holder_seconds() == 0.0, monitor.dual_holder_samples()[:5]


# ---- rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_master_killed_and_cut_backup_promotes_through_the_lease(
    make_pair: PairFactory, monitor_of: Any, backend: str
) -> None:
    pair = fenced(make_pair, backend)
    monitor = monitor_of(pair)
    epoch = lease(pair, "n1")["epoch"]
    t_fault = pair.crash("n1")
    t_holds = wait_until(lambda: pair.holders() == ["n2"] or "n2" in pair.holders(), 15)
    assert inst(pair, "n2")["last_transition"]["reason"] == "master-down"
    assert lease(pair, "n2")["epoch"] > epoch
    assert_no_split_brain(monitor)
    print(f"{backend}: n2 holds the VIP {t_holds - t_fault:.3f} s after the kill")


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_master_drops_the_vip_on_wake_and_the_client_sees_no_outage(
    make_pair: PairFactory, monitor_of: Any, backend: str
) -> None:
    """Incident A with a witness: freeze (SIGSTOP + link cut) for 8 s, then resume. No
    preemption, so the resumed node must simply fall in line behind n2."""
    pair = fenced(make_pair, backend, common={"preempt": False})
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    monitor = monitor_of(pair)
    pair.signal("n1", signal.SIGSTOP)
    pair.cut("n1")
    t_freeze = time.monotonic()
    wait_until(lambda: probe.first_success_after(t_freeze, node="n2") is not None, 8)
    time.sleep(max(0.0, 8 - (time.monotonic() - t_freeze)))
    # The kernel dropped the frozen node's VIP when its lifetime ran out (S4).
    assert "n1" not in pair.holders()
    pair.restore("n1")
    pair.signal("n1", signal.SIGCONT)
    t_resume = time.monotonic()
    wait_until(lambda: inst(pair, "n1")["state"] == "backup", 5, what="n1 to step down")
    time.sleep(2.0)
    assert inst(pair, "n1")["last_transition"]["reason"] == "lease-expired"
    assert [e["reason"] for e in events(pair, "n1", "self-fence")] == ["expired"]
    assert probe.outages(after=t_resume) == []
    assert probe.nodes_seen_after(t_resume) == {"n2"}
    assert pair.holders() == ["n2"]
    assert_no_split_brain(monitor)


@pytest.mark.parametrize("backend", BACKENDS)
def test_partition_between_the_nodes_causes_no_promotion(
    make_pair: PairFactory, monitor_of: Any, backend: str
) -> None:
    pair = fenced(make_pair, backend)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    monitor = monitor_of(pair)
    t0 = time.monotonic()
    n2_transitions = counter(pair, "n2", "transitions")
    pair.lab.partition(pair.nodes["n1"].host, pair.nodes["n2"].host)
    wait_until(lambda: counter(pair, "n2", "lease:refused") >= 2, 20, what="n2 refused twice")
    pair.lab.heal(pair.nodes["n1"].host, pair.nodes["n2"].host)
    time.sleep(1.0)
    assert counter(pair, "n2", "transitions") == n2_transitions
    assert inst(pair, "n1")["state"] == "master"
    assert probe.outages(after=t0) == []
    assert_no_split_brain(monitor)


def test_master_cut_from_the_witness_keeps_the_vip_while_the_peer_confirms(
    make_pair: PairFactory, monitor_of: Any
) -> None:
    pair = fenced(make_pair)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    monitor = monitor_of(pair)
    t0 = time.monotonic()
    n2_transitions = counter(pair, "n2", "transitions")
    assert pair.witness_host is not None
    pair.lab.partition(pair.nodes["n1"].host, pair.witness_host)
    ttl = lease(pair, "n1")["ttl"]
    time.sleep(3 * ttl)
    status = lease(pair, "n1")
    assert status["state"] == "held" and status["lease_remaining"] == 0.0
    assert status["remaining"] > 0  # held on the peer's word
    assert inst(pair, "n1")["state"] == "master"
    assert counter(pair, "n1", "peer:confirms-received") > 0
    pair.lab.heal(pair.nodes["n1"].host, pair.witness_host)
    wait_until(lambda: lease(pair, "n1")["lease_remaining"] > 0, 10, what="renewals again")
    assert counter(pair, "n2", "transitions") == n2_transitions
    assert probe.outages(after=t0) == []
    assert_no_split_brain(monitor)


@pytest.mark.parametrize("backend", BACKENDS)
def test_witness_down_changes_nothing(
    make_pair: PairFactory, monitor_of: Any, backend: str
) -> None:
    pair = fenced(make_pair, backend)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    monitor = monitor_of(pair)
    t0 = time.monotonic()
    n2_transitions = counter(pair, "n2", "transitions")
    pair.stop_witness(signal.SIGKILL)
    time.sleep(3 * max(lease(pair, "n1")["ttl"], 1.0))
    assert inst(pair, "n1")["state"] == "master"
    assert lease(pair, "n1")["lease_remaining"] == 0.0
    pair.start_witness()
    wait_until(lambda: lease(pair, "n1")["lease_remaining"] > 0, 15, what="renewals again")
    assert counter(pair, "n2", "transitions") == n2_transitions
    assert probe.outages(after=t0) == []
    assert_no_split_brain(monitor)


def test_witness_down_then_master_dies_no_promotion(
    make_pair: PairFactory, monitor_of: Any
) -> None:
    """The documented price of the default policy: without a witness a backup never promotes."""
    pair = fenced(make_pair)
    monitor = monitor_of(pair)
    pair.stop_witness(signal.SIGKILL)
    pair.crash("n1")
    time.sleep(4 * master_down_interval(pair))
    assert inst(pair, "n2")["state"] == "backup"
    assert counter(pair, "n2", "lease:acquire-sent") >= 1
    assert counter(pair, "n2", "lease:granted") == 0
    assert "n2" not in pair.holders()
    # The witness comes back: now the backup gets the lease and takes over.
    pair.start_witness()
    wait_until(lambda: "n2" in pair.holders(), 15, what="n2 to take over")
    assert_no_split_brain(monitor)


@pytest.mark.parametrize("backend", BACKENDS)
def test_witness_restart_epochs_continue_upward_and_the_holder_keeps_the_vip(
    make_pair: PairFactory, monitor_of: Any, backend: str
) -> None:
    pair = fenced(make_pair, backend)
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    monitor = monitor_of(pair)
    t0 = time.monotonic()
    epoch = lease(pair, "n1")["epoch"]
    renewals = counter(pair, "n1", "lease:renew-sent")
    pair.stop_witness()
    pair.start_witness()
    wait_until(lambda: counter(pair, "n1", "lease:renew-sent") > renewals + 5, 10)
    wait_until(lambda: lease(pair, "n1")["lease_remaining"] > 0, 15, what="renewals again")
    assert inst(pair, "n1")["state"] == "master"
    assert probe.outages(after=t0) == []
    pair.crash("n1")
    wait_until(lambda: "n2" in pair.holders(), 15, what="n2 to take over")
    assert lease(pair, "n2")["epoch"] > epoch
    assert_no_split_brain(monitor)


def test_thirty_percent_loss_on_the_master_link_no_flapping(
    make_pair: PairFactory, monitor_of: Any
) -> None:
    pair = fenced(make_pair, advert_interval=0.1)
    monitor = monitor_of(pair)
    before = {n: counter(pair, n, "transitions") for n in ("n1", "n2")}
    host = pair.nodes["n1"].host
    pair.lab.set_loss(host, 30)
    time.sleep(15)
    pair.lab.clear_loss(host)
    time.sleep(0.5)
    assert {n: counter(pair, n, "transitions") for n in ("n1", "n2")} == before
    assert monitor.holders_seen() == {"n1"}
    assert_no_split_brain(monitor)
    print(
        "n2 asked for the lease",
        counter(pair, "n2", "lease:acquire-sent"),
        "times under loss; refused",
        counter(pair, "n2", "lease:refused"),
    )


@pytest.mark.parametrize("side", ["node", "witness"])
def test_neighbour_entries_between_node_and_witness_stay_reachable(
    make_pair: PairFactory, side: str
) -> None:
    """chaos.md finding 7: under loss, the kernel's re-probe of a stale neighbour entry could
    fail on either side (the master's entry for the witness, the witness's for the master), and
    the renewals or their replies then waited a second or more for a broadcast ARP. Both send
    with MSG_CONFIRM while the other answers, so the entries stay REACHABLE: shown with a
    reachable time of 0.5-1.5 s (base 1 s), where an unconfirmed entry goes STALE within 1.5 s."""
    pair = fenced(make_pair, advert_interval=0.1)
    n1 = pair.nodes["n1"]
    if side == "node":
        host, other = n1.host, WITNESS_V4
    else:
        assert pair.witness_host is not None
        host, other = pair.witness_host, n1.spec.ipv4.split("/")[0]
    host.run("sysctl", "-qw", f"net.ipv4.neigh.{host.ifname}.base_reachable_time_ms=1000")

    def state() -> str:
        shown = host.run("ip", "neigh", "show", other, "dev", host.ifname).stdout.split()
        return shown[-1] if shown else "none"

    # An entry keeps the reachable time it was resolved with: resolve it again.
    host.run("ip", "neigh", "del", other, "dev", host.ifname)
    wait_until(lambda: state() == "REACHABLE", 5, what=f"{other}'s entry resolved again")
    states = set()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        states.add(state())
        time.sleep(0.05)
    assert states == {"REACHABLE"}, states
    assert lease(pair, "n1")["state"] == "held"


def test_sigterm_releases_the_lease_and_the_backup_promotes_at_once(
    make_pair: PairFactory, monitor_of: Any
) -> None:
    pair = fenced(make_pair)
    monitor = monitor_of(pair)
    epoch = lease(pair, "n1")["epoch"]
    t_stop = time.monotonic()
    assert pair.stop("n1") == 0
    t_holds = wait_until(lambda: pair.holders() == ["n2"], 10)
    assert inst(pair, "n2")["last_transition"]["reason"] == "master-released"
    assert lease(pair, "n2")["epoch"] > epoch
    assert counter(pair, "n2", "lease:granted") == 1
    assert_no_split_brain(monitor)
    print(f"planned handover: n2 holds the VIP {t_holds - t_stop:.3f} s after SIGTERM")


def test_preemption_hands_over_through_the_lease(make_pair: PairFactory, monitor_of: Any) -> None:
    """n2 alone becomes master; n1 (higher priority) starts and takes over: its claim makes
    n2 step down and release, and n1 promotes only on its own grant."""
    pair = make_pair(witness="embedded", advert_interval=INTERVAL)
    pair.start_witness()
    monitor = monitor_of(pair)
    pair.start("n2")
    wait_until(lambda: pair.holders() == ["n2"], 15, what="n2 to hold the VIP")
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 15, what="n1 to take over")
    assert inst(pair, "n2")["last_transition"]["reason"] == "higher-priority-master"
    assert counter(pair, "n1", "lease:refused") >= 1  # asked while n2 held it
    assert_no_split_brain(monitor)


def test_ipv6_pair_fails_over_through_the_witness(make_pair: PairFactory, monitor_of: Any) -> None:
    pair = fenced(make_pair, family=6)
    monitor = monitor_of(pair)
    wait_until(  # the peer channel over IPv6 (n1 pings once per advert)
        lambda: counter(pair, "n1", "peer:confirms-received") > 0, 10, what="a confirmation"
    )
    pair.crash("n1")
    wait_until(lambda: "n2" in pair.holders(), 15, what="n2 to take over")
    assert_no_split_brain(monitor)


def test_vip_lifetime_follows_the_lease(make_pair: PairFactory) -> None:
    """S4: the master's VIP carries a finite lifetime, a second or two past its lease."""
    pair = fenced(make_pair)
    out = pair.nodes["n1"].host.run("ip", "-j", "addr", "show", "dev", "eth0").stdout
    vip = next(
        a for link in json.loads(out) for a in link["addr_info"] if a.get("local") == Pair.VIP4
    )
    ttl = lease(pair, "n1")["ttl"]
    assert 0 < vip["valid_life_time"] <= ttl + 3, vip


@pytest.mark.parametrize("works", [True, False])
def test_fence_command_runs_between_grant_and_promotion(
    make_pair: PairFactory, monitor_of: Any, works: bool
) -> None:
    """A failing fence command blocks the promotion (and the lease goes back)."""
    pair = make_pair(witness="embedded", advert_interval=INTERVAL)
    marker = pair.workdir / "fenced"
    command = f"sh -c 'echo $$ >> {marker}'" if works else f"sh -c 'echo $$ >> {marker}; exit 3'"
    pair.witness_options = {"fence_command": command, "fence_timeout": 5.0}
    for node in pair.nodes.values():
        pair.write_config(node)
    pair.start_witness()
    pair.start("n1")
    wait_until(lambda: marker.exists(), 15, what="n1's fence command")
    if works:
        wait_until(lambda: pair.holders() == ["n1"], 10, what="n1 to promote")
        assert counter(pair, "n1", "fence:ok") >= 1
    else:
        wait_until(lambda: counter(pair, "n1", "fence:failed") >= 2, 15, what="two failed fences")
        assert pair.holders() == []
        assert inst(pair, "n1")["state"] == "backup"
        assert any(e.get("ok") is False for e in events(pair, "n1", "fence-command"))
