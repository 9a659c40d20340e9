"""RFC 5798 section 6 state machine on synthetic time, alone and on a simulated lossy link."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipd.announce.schedule import AnnounceParams
from vipd.vrrp.machine import (
    AcquireLease,
    AddVips,
    Announce,
    Machine,
    Params,
    ReleaseLease,
    RemoveVips,
    SendAdvert,
    State,
    StateChanged,
    master_down_interval,
    skew_time,
)
from vipd.vrrp.packet import Advert

from .sim import VIP, Sim

PEER = IPv4Address("192.0.2.99")


def machine(priority: int = 100, **kw: object) -> Machine:
    params = Params(
        vrid=1, priority=priority, advert_interval=100, primary=IPv4Address("192.0.2.10"), **kw
    )  # type: ignore[arg-type]
    return Machine(params)


def advert(priority: int, cs: int = 100) -> Advert:
    return Advert(1, priority, cs, (VIP,))


def test_timer_formulas_rfc5798_6_1() -> None:
    # Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256
    assert skew_time(100, 1.0) == pytest.approx(156 / 256)
    assert master_down_interval(100, 1.0) == pytest.approx(3 + 156 / 256)
    assert master_down_interval(254, 0.1) == pytest.approx(0.3 + 0.2 / 256)


def test_start_goes_backup_then_master_after_master_down_interval() -> None:
    m = machine(100)
    m.start(0.0)
    assert m.state is State.BACKUP
    assert m.drain() == [StateChanged(State.INITIALIZE, State.BACKUP, "startup", 100)]
    assert m.get_timer() == pytest.approx(3 + 156 / 256)
    m.handle_timer(3.0)  # not yet: a timer that fires early changes nothing
    assert m.state is State.BACKUP and m.drain() == []
    m.handle_timer(m.get_timer() or 0)
    assert m.state is State.MASTER
    actions = m.drain()
    assert actions[:3] == [
        StateChanged(State.BACKUP, State.MASTER, "master-down", 100),
        AddVips(),
        SendAdvert(100),
    ]
    assert actions[3] == Announce("became-master")


def test_address_owner_goes_straight_to_master() -> None:
    m = machine(255)
    m.start(0.0)
    assert m.state is State.MASTER
    assert SendAdvert(255) in m.drain()


def test_backup_learns_master_adver_interval() -> None:
    m = machine(100)
    m.start(0.0)
    m.receive(advert(200, cs=50), PEER, 1.0)
    assert m.master_adver_int == 0.5
    assert m.get_timer() == pytest.approx(1.0 + 1.5 + 156 * 0.5 / 256)
    assert (m.master_address, m.master_priority) == (PEER, 200)


def test_priority_zero_makes_backup_wait_only_skew_time() -> None:
    m = machine(100)
    m.start(0.0)
    m.receive(advert(200), PEER, 1.0)
    m.receive(advert(0), PEER, 1.5)
    assert m.get_timer() == pytest.approx(1.5 + 156 / 256)


def test_backup_with_preempt_discards_lower_priority() -> None:
    m = machine(150)
    m.start(0.0)
    deadline = m.get_timer()
    m.receive(advert(100), PEER, 1.0)
    assert m.get_timer() == deadline  # discarded: the master-down timer was not reset


def test_backup_without_preempt_accepts_lower_priority() -> None:
    m = machine(150, preempt=False)
    m.start(0.0)
    m.receive(advert(100), PEER, 1.0)
    assert m.get_timer() == pytest.approx(1.0 + master_down_interval(150, 1.0))


def test_master_yields_to_higher_priority() -> None:
    m = machine(255)
    m.start(0.0)
    m.drain()
    m.receive(advert(255), IPv4Address("192.0.2.200"), 0.5)  # equal, greater address wins
    assert m.state is State.BACKUP
    assert m.drain() == [
        SendAdvert(0),  # the higher master may never have heard us: it re-announces
        RemoveVips(),
        StateChanged(State.MASTER, State.BACKUP, "higher-priority-master", 255),
    ]


def test_master_hearing_a_leaving_master_advertises_and_re_announces() -> None:
    m = master_of(machine(100))
    m.receive(advert(0), PEER, 10.0)
    assert m.drain() == [SendAdvert(100), Announce("competing-master")]


def test_master_keeps_role_on_equal_priority_from_lower_address() -> None:
    m = machine(100)
    m.start(0.0)
    m.handle_timer(m.get_timer() or 0)
    m.drain()
    m.receive(advert(100), IPv4Address("192.0.2.1"), 5.0)
    assert m.state is State.MASTER
    # RFC 9568: answer a competing (lower) master at once; vipd also re-announces.
    assert m.drain() == [SendAdvert(100), Announce("competing-master")]


def test_master_answers_priority_zero_with_advert() -> None:
    m = machine(255)
    m.start(0.0)
    m.drain()
    m.receive(advert(0), PEER, 0.2)
    assert m.drain() == [SendAdvert(255)]


def test_master_detects_its_own_freeze_and_reannounces() -> None:
    m = machine(255, announce=AnnounceParams(count=1, spacing=1.2, refresh=0))
    m.start(0.0)
    m.drain()
    m.handle_timer(1.0)
    assert m.drain() == [SendAdvert(255)]
    m.handle_timer(9.0)  # due at 2.0, fired at 9.0: we were frozen for 7 s
    assert m.drain() == [SendAdvert(255), Announce("resumed-from-freeze")]


def test_shutdown_from_master_sends_priority_zero_then_removes_vips() -> None:
    m = machine(255)
    m.start(0.0)
    m.drain()
    m.shutdown(1.0)
    assert m.drain() == [
        SendAdvert(0),
        RemoveVips(),
        StateChanged(State.MASTER, State.INITIALIZE, "shutdown", 255),
    ]
    assert m.get_timer() is None


def test_set_priority_while_master_advertises_at_once() -> None:
    m = machine(255)
    m.start(0.0)
    m.drain()
    with pytest.raises(ValueError):
        machine(100).set_priority(0, 0.0)
    m.set_priority(50, 0.3)
    assert m.drain() == [SendAdvert(50)]


# ---- several machines on a simulated link -------------------------------------------------


def test_higher_priority_wins_and_exactly_one_master() -> None:
    sim = Sim()
    sim.add("a", 150)
    sim.add("b", 100)
    sim.start()
    sim.run_until(10)
    assert sim.masters() == ["a"]
    assert sim.holders() == {"a"}
    assert sim.dual_holder_time() == 0


def test_master_killed_backup_takes_over_within_master_down_interval() -> None:
    sim = Sim()
    sim.add("a", 150)
    sim.add("b", 100)
    sim.start()
    sim.run_until(10)
    last_advert = max(t for t, _ in sim.routers["a"].sent)
    sim.kill("a")
    sim.run_until(20)
    took_over = sim.routers["b"].transitions[-1][0]
    assert sim.masters() == ["b"]
    assert took_over - last_advert <= master_down_interval(100, 1.0) + sim.delay + 1e-9


def test_shutdown_priority_zero_fast_takeover() -> None:
    sim = Sim()
    sim.add("a", 150)
    sim.add("b", 100)
    sim.start()
    sim.run_until(10)
    t0 = sim.now
    sim.shutdown("a")
    sim.run_until(20)
    took_over, change = sim.routers["b"].transitions[-1]
    assert took_over - t0 == pytest.approx(sim.delay + skew_time(100, 1.0))
    assert change.reason == "master-released"


def test_preempt_returning_higher_priority_takes_back() -> None:
    sim = Sim()
    sim.add("a", 150)
    sim.add("b", 100)
    sim.start("b")
    sim.run_until(10)
    assert sim.masters() == ["b"]
    sim.start("a")
    sim.run_until(20)
    assert sim.masters() == ["a"]


def test_nopreempt_returning_higher_priority_stays_backup() -> None:
    sim = Sim()
    sim.add("a", 150, preempt=False)
    sim.add("b", 100)
    sim.start("b")
    sim.run_until(10)
    sim.start("a")
    sim.run_until(30)
    assert sim.masters() == ["b"]


def test_preempt_delay_holds_off_takeover() -> None:
    sim = Sim()
    sim.add("a", 150, preempt_delay=10.0)
    sim.add("b", 100)
    sim.start("b")
    sim.run_until(10)
    sim.start("a")
    sim.run_until(18)
    assert sim.masters() == ["b"]
    sim.run_until(30)
    assert sim.masters() == ["a"]
    took_over = sim.routers["a"].transitions[-1][0]
    # first lower advert seen just after 10; takeover after delay + one master-down interval
    assert 20 <= took_over <= 10 + 10 + master_down_interval(150, 1.0) + 1.1


def test_equal_priority_tie_break_by_address() -> None:
    sim = Sim()
    sim.add("a", 100, addr="192.0.2.20")
    sim.add("b", 100, addr="192.0.2.30")
    # Force both into master at once (as after a partition heals).
    sim.partitioned.add(frozenset(("a", "b")))
    sim.start()
    sim.run_until(10)
    assert sorted(sim.masters()) == ["a", "b"]
    sim.partitioned.clear()
    sim.run_until(15)
    assert sim.masters() == ["b"]


def test_frozen_master_reannounces_when_it_wakes() -> None:
    """Incident A in miniature: the frozen master resumes, the backup that took over steps down,
    and the resumed master announces (freeze detection and the competing-master rule)."""
    sim = Sim()
    sim.add("a", 150)
    sim.add("b", 100)
    sim.start()
    sim.run_until(10)
    sim.freeze("a")
    sim.run_until(18)
    assert sim.routers["b"].machine.state is State.MASTER
    t_resume = sim.now
    sim.thaw("a")
    sim.run_until(25)
    assert sim.masters() == ["a"]
    reasons = [r for t, r in sim.routers["a"].announced if t >= t_resume]
    assert reasons[0] == "resumed-from-freeze"
    assert sim.routers["a"].announced[-len(reasons)][0] == t_resume


def test_learned_interval_from_faster_master() -> None:
    sim = Sim()
    sim.add("a", 150, interval_cs=10)
    sim.add("b", 100, interval_cs=100)
    sim.start()
    sim.run_until(5)
    assert sim.routers["b"].machine.master_adver_int == pytest.approx(0.1)
    t_kill = sim.now
    sim.kill("a")
    sim.run_until(6)
    assert sim.masters() == ["b"]
    assert sim.routers["b"].transitions[-1][0] - t_kill <= master_down_interval(100, 0.1) + 0.11


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    prios=st.lists(st.integers(1, 254), min_size=2, max_size=4, unique=True),
    loss=st.floats(0.0, 0.3),
    interval_cs=st.sampled_from([10, 100]),
)
def test_converges_to_the_highest_priority_after_loss_stops(
    seed: int, prios: list[int], loss: float, interval_cs: int
) -> None:
    """Whatever the loss did meanwhile, once the link is clean again there is exactly one
    master, the one with the highest priority, within a couple of master-down intervals."""
    sim = Sim(seed=seed, loss=loss)
    for i, p in enumerate(prios):
        sim.add(f"r{i}", p, interval_cs=interval_cs)
    sim.start()
    sim.run_until(40 * interval_cs / 100)
    sim.loss = 0.0
    settle = sim.now + 2 * master_down_interval(1, interval_cs / 100)
    sim.run_until(settle)
    best = f"r{prios.index(max(prios))}"
    assert sim.masters() == [best]
    assert sim.holders() == {best}


# ---- fencing, faults and handover -----------------------------------------------------------


def master_of(m: Machine) -> Machine:
    m.start(0.0)
    m.handle_timer(m.get_timer() or 0.0)
    if m.params.fenced:
        m.lease_granted(m.get_timer() or 5.0)
    assert m.state is State.MASTER
    m.drain()
    return m


def test_fenced_backup_asks_for_the_lease_and_promotes_only_on_the_grant() -> None:
    m = machine(100, fenced=True)
    m.start(0.0)
    m.drain()
    m.handle_timer(m.get_timer() or 0.0)
    assert m.state is State.BACKUP and m.drain() == [AcquireLease()]
    assert m.promise(4.0) is None  # asking: no promise to anyone
    m.lease_refused(4.0, remaining=1.5)
    assert m.state is State.BACKUP and m.get_timer() == pytest.approx(5.51)
    m.handle_timer(5.51)
    assert m.drain() == [AcquireLease()]
    m.lease_granted(5.52)
    assert m.state is State.MASTER
    assert AddVips() in m.drain()


def test_refused_backup_asks_again_within_a_master_down_interval_however_long_the_lease() -> None:
    params = Params(vrid=1, priority=100, advert_interval=10, primary=PEER, fenced=True)
    m = Machine(params)  # advert 0.1 s: Master_Down_Interval 0.36 s
    m.start(0.0)
    m.drain()
    m.handle_timer(m.get_timer() or 0.0)
    assert m.drain() == [AcquireLease()]
    m.lease_refused(4.0, remaining=2.0)  # etcd: whole seconds, an upper bound
    assert m.get_timer() == pytest.approx(4.0 + m.master_down_interval)
    m.handle_timer(m.get_timer() or 0.0)
    assert m.drain() == [AcquireLease()]


def test_preempting_backup_that_is_refused_sends_one_claim_advert() -> None:
    m = machine(200, fenced=True)
    m.start(0.0)
    m.receive(advert(100), PEER, 0.1)  # a lower master: we preempt
    m.handle_timer(m.get_timer() or 0.0)
    m.drain()
    m.lease_refused(4.0, remaining=3.0)
    assert m.drain() == [SendAdvert(200)]
    assert m.get_timer() == pytest.approx(4.25)  # soon, not after the holder's whole lease


def test_master_that_loses_its_lease_removes_the_vips_and_releases_on_step_down() -> None:
    m = master_of(machine(100, fenced=True))
    m.lease_lost(10.0, "lease-expired")
    assert m.state is State.BACKUP
    assert m.drain()[0] == RemoveVips()
    m2 = master_of(machine(100, fenced=True))
    m2.receive(advert(200), PEER, 10.0)
    assert m2.drain()[:3] == [SendAdvert(0), RemoveVips(), ReleaseLease()]


def test_a_grant_that_comes_too_late_is_handed_back() -> None:
    m = machine(100, fenced=True)
    m.start(0.0)
    m.handle_timer(m.get_timer() or 0.0)
    m.receive(advert(200), PEER, 4.0)  # a higher master appeared while we asked
    m.drain()
    m.lease_granted(4.1)
    assert m.state is State.BACKUP and m.drain() == [ReleaseLease()]


def test_backup_promise_is_the_time_left_on_its_master_down_timer() -> None:
    m = machine(100)
    m.start(0.0)
    m.receive(advert(150), PEER, 1.0)
    assert m.promise(2.0) == pytest.approx(1.0 + m.master_down_interval - 2.0)
    assert machine(100).promise(0.0) is None


def test_fault_takes_mastership_away_and_clearing_it_returns_to_backup() -> None:
    m = master_of(machine(100))
    m.set_fault(10.0, "track:nginx")
    assert m.state is State.FAULT
    actions = m.drain()
    assert actions[:2] == [SendAdvert(0), RemoveVips()]
    assert actions[-1] == StateChanged(State.MASTER, State.FAULT, "track:nginx", 100)
    assert m.get_timer() is None
    m.receive(advert(50), PEER, 11.0)  # even a lower master does not tempt a FAULT node
    assert m.state is State.FAULT and m.master_address == PEER
    m.set_fault(12.0, None)
    assert m.state is State.BACKUP
    assert m.get_timer() == pytest.approx(12.0 + m.master_down_interval)


def test_fault_set_before_start_starts_in_fault() -> None:
    m = machine(100)
    m.set_fault(0.0, "maintenance")
    m.start(0.0)
    assert m.state is State.FAULT


def test_step_down_hands_over_and_does_not_preempt_back() -> None:
    m = master_of(machine(200))
    assert m.step_down(10.0)
    assert m.drain()[:2] == [SendAdvert(0), RemoveVips()]
    m.receive(advert(100), PEER, 10.5)  # the lower peer took over: we follow it
    for t in (11.5, 12.5, 13.5, 14.5):
        m.receive(advert(100), PEER, t)
        m.handle_timer(t)
    assert m.state is State.BACKUP
    assert not machine(100).step_down(0.0)


def test_take_over_promotes_at_once_through_the_lease() -> None:
    m = machine(100, fenced=True)
    m.start(0.0)
    m.receive(advert(200), PEER, 0.5)
    m.drain()
    assert m.take_over(0.6)
    assert m.drain() == [AcquireLease()]
    m.lease_granted(0.61)
    changes = [a for a in m.drain() if isinstance(a, StateChanged)]
    assert changes == [StateChanged(State.BACKUP, State.MASTER, "master-released", 100)]
    assert not m.take_over(0.7)  # only a backup takes over


def test_adverts_fall_on_their_slots_and_do_not_drift_with_a_late_timer() -> None:
    m = machine(255, announce=AnnounceParams(count=1, spacing=1.2, refresh=0))
    m.start(0.337)  # the first advert goes at once; VRID 1's slots are at k + 0.2 s
    assert m.drain()[0:3] == [
        StateChanged(State.INITIALIZE, State.MASTER, "address-owner", 255),
        AddVips(),
        SendAdvert(255),
    ]
    assert m.get_timer() == pytest.approx(1.2)
    sent = []
    for _ in range(50):  # a loop that always wakes 30 ms late
        due = m.get_timer() or 0
        m.handle_timer(due + 0.03)
        if SendAdvert(255) in m.drain():
            sent.append(due)
    assert sent == pytest.approx([k + 0.2 for k in range(1, 51)])


def test_adverts_are_staggered_over_five_phases_by_vrid() -> None:
    def owner(vrid: int) -> Machine:
        announce = AnnounceParams(count=1, spacing=1.2, refresh=0)
        params = Params(
            vrid=vrid, priority=255, advert_interval=10, primary=PEER, announce=announce
        )
        m = Machine(params)
        m.start(10.03)
        return m

    one, six, two = owner(1), owner(6), owner(2)
    assert one.get_timer() == six.get_timer() == pytest.approx(10.12)  # one group
    assert two.get_timer() == pytest.approx(10.04)  # the next group's slot comes first
    one.drain()
    one.receive(Advert(1, 100, 10, (VIP,)), IPv4Address("192.0.2.1"), 10.04)
    assert SendAdvert(255) in one.drain()
    assert one.get_timer() == pytest.approx(10.12)  # an extra advert keeps the slots
    one.handle_timer(10.123)
    two.handle_timer(10.043)
    assert one.get_timer() == pytest.approx(10.22) and two.get_timer() == pytest.approx(10.14)
