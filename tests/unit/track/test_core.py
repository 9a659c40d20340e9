"""The pure tracking core: rise/fall, weights, clamping, faults, sync-group rules, hook
arguments. No I/O, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vipd.track.core import (
    HOOK_STATES,
    Hooks,
    Kind,
    Tracker,
    TrackerParams,
    Verdict,
    effective_priority,
    group_faults,
    group_state,
    group_step_downs,
    hook_argvs,
    judge,
)
from vipd.vrrp.machine import State


def tracker(
    weight: int = 0, rise: int = 1, fall: int = 1, kind: Kind = Kind.SCRIPT, name: str = "t"
) -> Tracker:
    return Tracker(TrackerParams(name, kind, weight, rise, fall))


def test_core_does_no_io() -> None:
    source = Path(__file__).resolve().parents[3] / "vipd" / "track" / "core.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "os", "subprocess", "pyroute2", "httpx", "time"}


# ---- rise / fall ------------------------------------------------------------------------------


def test_first_result_decides_at_once() -> None:
    t = tracker(fall=3, rise=3)
    assert t.ok is None
    assert t.record(False, "boom")
    assert t.ok is False and t.last_error == "boom"
    u = tracker(fall=3, rise=3)
    assert u.record(True) and u.ok is True


def test_fall_needs_consecutive_failures() -> None:
    t = tracker(fall=3)
    t.record(True)
    assert not t.record(False, "a")
    assert not t.record(False, "b")
    assert not t.record(True)  # the streak is broken
    assert not t.record(False, "c")
    assert not t.record(False, "d")
    assert t.ok is True
    assert t.record(False, "e")
    assert t.ok is False and t.last_error == "e"
    assert (t.checks, t.failed_checks) == (7, 5)


def test_rise_needs_consecutive_successes_and_last_error_is_kept() -> None:
    t = tracker(rise=2)
    t.record(False, "down")
    assert not t.record(True)
    assert not t.record(False, "still down")
    assert not t.record(True)
    assert t.record(True)
    assert t.ok is True
    assert t.last_error == "still down"


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_rise_fall_property(results: list[bool], rise: int, fall: int) -> None:
    """The judged state only changes after `fall` failures / `rise` successes in a row."""
    t = tracker(rise=rise, fall=fall)
    streak_ok = streak_fail = 0
    for i, ok in enumerate(results):
        before = t.ok
        streak_ok, streak_fail = (streak_ok + 1, 0) if ok else (0, streak_fail + 1)
        changed = t.record(ok)
        if i == 0:
            assert t.ok is ok and changed
        elif before and not ok:
            assert t.ok is (streak_fail < fall)
        elif before is False and ok:
            assert t.ok is (streak_ok >= rise)
        else:
            assert t.ok is before and not changed


# ---- weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "ok", "adjustment", "faulted"),
    [
        (20, True, 20, False),
        (20, False, 0, False),
        (-50, True, 0, False),
        (-50, False, -50, False),
        (0, True, 0, False),
        (0, False, 0, True),
    ],
)
def test_weight_semantics(weight: int, ok: bool, adjustment: int, faulted: bool) -> None:
    t = tracker(weight)
    t.record(ok)
    assert (t.adjustment, t.faulted) == (adjustment, faulted)


def test_a_tracker_without_result_counts_for_nothing() -> None:
    for weight in (20, -20, 0):
        t = tracker(weight)
        assert (t.adjustment, t.faulted) == (0, False)


def test_file_value_times_weight() -> None:
    t = tracker(10, kind=Kind.FILE)
    assert t.record(True, value=3)
    assert t.adjustment == 30
    assert t.record(True, value=-2)  # a new value is a change for the daemon
    assert t.adjustment == -20
    assert not t.record(True, value=-2)
    assert t.record(False, "not an integer: 'x'")  # unreadable: failed, adds nothing
    assert t.adjustment == 0 and not t.faulted
    assert t.value == 0


def test_file_with_weight_zero_faults_on_non_zero_or_unreadable() -> None:
    t = tracker(0, kind=Kind.FILE)
    t.record(True, value=0)
    assert not t.faulted
    t.record(True, value=1)
    assert t.faulted and t.adjustment == 0
    t.record(True, value=0)
    assert not t.faulted
    t.record(False, "No such file or directory")
    assert t.faulted


@pytest.mark.parametrize(
    ("configured", "adjustments", "expected"),
    [
        (100, [], 100),
        (100, [20, -50], 70),
        (100, [-200], 1),  # never below 1
        (250, [20], 254),  # never above 254 ...
        (255, [], 255),  # ... unless configured 255
        (255, [10], 255),
        (255, [-1], 254),
        (255, [10, -10], 255),  # nothing subtracted on balance
        (254, [5], 254),
    ],
)
def test_effective_priority_clamps(configured: int, adjustments: list[int], expected: int) -> None:
    assert effective_priority(configured, adjustments) == expected


def test_judge_combines_weights_and_names_the_first_fault() -> None:
    up = tracker(10, name="up")
    down = tracker(-30, name="down")
    dead = tracker(0, name="nginx")
    also_dead = tracker(0, name="php")
    up.record(True)
    down.record(False)
    dead.record(False)
    also_dead.record(False)
    assert judge(100, [up, down]) == Verdict(80, None)
    assert judge(100, [up, down, dead, also_dead]) == Verdict(80, "track:nginx")
    assert judge(100, []) == Verdict(100, None)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError):
        TrackerParams("x", Kind.TCP, rise=0)
    with pytest.raises(ValueError):
        TrackerParams("x", Kind.TCP, weight=255)


# ---- sync groups ------------------------------------------------------------------------------

GROUPS = {"edge": ("web", "api"), "db": ("pg",)}


def test_group_fault_spreads_to_every_member() -> None:
    own = {"web": "track:nginx", "api": None, "pg": None, "solo": None}
    assert group_faults(own, GROUPS) == {
        "web": "track:nginx",
        "api": "group:edge",
        "pg": None,
        "solo": None,
    }


def test_group_fault_keeps_own_reasons_and_clears_with_them() -> None:
    own = {"web": "track:nginx", "api": "track:php", "pg": None}
    assert group_faults(own, GROUPS) == own
    clear = {"web": None, "api": None, "pg": None}
    assert group_faults(clear, GROUPS) == clear


def test_a_member_leaving_master_for_backup_takes_the_other_masters_along() -> None:
    members = ("web", "api", "img")
    states = {"web": State.BACKUP, "api": State.MASTER, "img": State.BACKUP}
    assert group_step_downs(members, "web", State.MASTER, State.BACKUP, states) == ["api"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (State.MASTER, State.FAULT),  # group_faults handles FAULT
        (State.MASTER, State.INITIALIZE),  # shutdown
        (State.BACKUP, State.MASTER),
        (State.INITIALIZE, State.BACKUP),
        (State.FAULT, State.BACKUP),
    ],
)
def test_other_transitions_step_nobody_down(old: State, new: State) -> None:
    states = {"web": new, "api": State.MASTER}
    assert group_step_downs(("web", "api"), "web", old, new, states) == []


def test_group_state() -> None:
    M, B, F, I = State.MASTER, State.BACKUP, State.FAULT, State.INITIALIZE  # noqa: E741
    assert group_state([M, M]) == "MASTER"
    assert group_state([B, B]) == "BACKUP"
    assert group_state([M, F]) == "FAULT"
    assert group_state([I, F]) == "FAULT"
    assert group_state([I, I]) == "STOP"
    assert group_state([M, B]) is None
    assert group_state([I, B]) is None


# ---- hooks ------------------------------------------------------------------------------------


def test_instance_hooks_follow_keepalived_argument_convention() -> None:
    hooks = Hooks(
        notify=("/bin/notify", "--flag"),
        notify_master=("/bin/up",),
        notify_backup=("/bin/down", "backup"),
    )
    assert hook_argvs(hooks, "INSTANCE", "web", "MASTER", 150) == [
        ("/bin/up",),
        ("/bin/notify", "--flag", "INSTANCE", "web", "MASTER", "150"),
    ]
    assert hook_argvs(hooks, "INSTANCE", "web", "BACKUP", 90) == [
        ("/bin/down", "backup"),
        ("/bin/notify", "--flag", "INSTANCE", "web", "BACKUP", "90"),
    ]
    assert hook_argvs(hooks, "INSTANCE", "web", "FAULT", 100) == [
        ("/bin/notify", "--flag", "INSTANCE", "web", "FAULT", "100"),
    ]


def test_group_hooks_get_priority_zero_like_keepalived() -> None:
    hooks = Hooks(notify=("/bin/n",), notify_stop=("/bin/stop",))
    assert hook_argvs(hooks, "GROUP", "edge", "STOP") == [
        ("/bin/stop",),
        ("/bin/n", "GROUP", "edge", "STOP", "0"),
    ]


def test_hook_states_and_bad_input() -> None:
    assert HOOK_STATES[State.INITIALIZE] == "STOP"
    assert {HOOK_STATES[s] for s in State} == {"MASTER", "BACKUP", "FAULT", "STOP"}
    assert not Hooks() and Hooks(notify_fault=("x",))
    assert hook_argvs(Hooks(), "INSTANCE", "web", "MASTER", 1) == []
    with pytest.raises(ValueError):
        hook_argvs(Hooks(), "NODE", "web", "MASTER")
    with pytest.raises(ValueError):
        hook_argvs(Hooks(), "INSTANCE", "web", "DEAD")
