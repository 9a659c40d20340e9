"""What tracking decides, on injected results. Pure: no I/O, no clock, no asyncio.

A :class:`Tracker` turns a stream of check results into a judged state with keepalived's
rise/fall counting; :func:`judge` combines an instance's trackers into its effective priority
and, for trackers of weight 0, a fault; the sync-group rules say how the members of a group
follow each other; :func:`hook_argvs` builds the notify commands' arguments.

Weights (keepalived semantics):

============ =============== ============================================================
kind         weight          effect
============ =============== ============================================================
any but file ``w > 0``       ``+w`` while the tracker is OK
any but file ``w < 0``       ``w`` (subtracts) while the tracker has failed
any but file ``0``           FAULT while the tracker has failed
file         ``w != 0``      ``value * w`` while the file reads as an integer
file         ``0``           FAULT while the value is not 0, or the file cannot be read
============ =============== ============================================================

The sum is added to the configured priority and clamped to 1..254; an address owner
(configured 255) stays 255 unless something subtracts. A tracker that has not reported yet
counts for nothing either way (the daemon waits for every tracker's first result before it
starts an instance, so this only matters in that first moment).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vipd.vrrp.machine import State


class Kind(enum.Enum):
    INTERFACE = "interface"
    SCRIPT = "script"
    HTTP = "http"
    TCP = "tcp"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class TrackerParams:
    name: str  # unique per instance; fault reasons are "track:<name>"
    kind: Kind
    weight: int = 0
    rise: int = 1  # consecutive successes that make a failed tracker OK again
    fall: int = 1  # consecutive failures that make an OK tracker failed

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if not -254 <= self.weight <= 254:
            raise ValueError(f"weight must be -254..254, got {self.weight}")


@dataclass(slots=True)
class Tracker:
    """One tracker's judged state, fed one check result at a time."""

    params: TrackerParams
    ok: bool | None = None  # None until the first result
    value: int = 0  # file trackers: the integer the file holds
    successes: int = 0  # consecutive, since the last failure
    failures: int = 0  # consecutive, since the last success
    checks: int = 0  # totals, for status
    failed_checks: int = 0
    last_error: str | None = None  # the most recent failed check's reason, kept after recovery

    def record(self, ok: bool, error: str | None = None, value: int = 0) -> bool:
        """One check result (``value``: what a file tracker read). True when the judged state
        changed, or an OK file tracker's value did: the caller then re-judges the instance.

        The first result decides at once (there is no history to smooth); after that an OK
        tracker fails after ``fall`` consecutive failures and a failed one recovers after
        ``rise`` consecutive successes.
        """
        self.checks += 1
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failed_checks += 1
            self.failures += 1
            self.successes = 0
            self.last_error = error or "failed"
        before = (self.ok, self.value)
        if self.ok is None:
            self.ok = ok
        elif self.ok and self.failures >= self.params.fall:
            self.ok = False
        elif not self.ok and self.successes >= self.params.rise:
            self.ok = True
        if not self.ok:
            self.value = 0
        elif ok:
            self.value = value
        return (self.ok, self.value) != before

    @property
    def adjustment(self) -> int:
        """What this tracker adds to the configured priority now."""
        weight = self.params.weight
        if self.ok is None or weight == 0:
            return 0
        if self.params.kind is Kind.FILE:
            return self.value * weight if self.ok else 0
        if weight > 0:
            return weight if self.ok else 0
        return weight if not self.ok else 0

    @property
    def faulted(self) -> bool:
        """True if this tracker keeps the instance in FAULT now."""
        if self.ok is None or self.params.weight != 0:
            return False
        if self.params.kind is Kind.FILE:
            return not self.ok or self.value != 0
        return not self.ok


@dataclass(frozen=True, slots=True)
class Verdict:
    priority: int  # the effective priority, valid for Machine.set_priority
    fault: str | None  # "track:<name>" of the first faulted tracker, else None


def effective_priority(configured: int, adjustments: Iterable[int]) -> int:
    """``configured`` plus the trackers' adjustments, clamped to 1..254; an address owner
    (255) keeps 255 unless the adjustments subtract."""
    total = configured + sum(adjustments)
    if configured == 255 and total >= 255:
        return 255
    return max(1, min(254, total))


def judge(configured: int, trackers: Iterable[Tracker]) -> Verdict:
    trackers = list(trackers)
    priority = effective_priority(configured, (t.adjustment for t in trackers))
    fault = next((f"track:{t.params.name}" for t in trackers if t.faulted), None)
    return Verdict(priority, fault)


# ---- sync groups (keepalived's vrrp_sync_group) -----------------------------------------------


def group_faults(
    own: Mapping[str, str | None], groups: Mapping[str, Sequence[str]]
) -> dict[str, str | None]:
    """The fault each instance should be in: its own (from its trackers), else
    ``"group:<name>"`` when another member of its group has a fault of its own, else None.

    ``own`` maps every instance to its own fault; ``groups`` maps group names to members (an
    instance belongs to at most one group).
    """
    result = dict(own)
    for group, members in groups.items():
        if any(own.get(m) is not None for m in members):
            for m in members:
                if result.get(m) is None:
                    result[m] = f"group:{group}"
    return result


def group_step_downs(
    members: Sequence[str], changed: str, old: State, new: State, states: Mapping[str, State]
) -> list[str]:
    """Members to step down because ``changed`` went from ``old`` to ``new``: when one member
    stops being master for BACKUP (a higher priority appeared, its priority dropped, its lease
    was lost), the other members that are still master hand over too, so the group's
    addresses stay on one node. (A member entering FAULT takes the others along through
    :func:`group_faults`; a shutdown stops them all anyway.)"""
    if old is not State.MASTER or new is not State.BACKUP or changed not in members:
        return []
    return [m for m in members if m != changed and states.get(m) is State.MASTER]


def group_state(states: Iterable[State]) -> str | None:
    """The state a group reports to its hooks: FAULT if any member is in FAULT, MASTER or
    BACKUP once every member is, STOP once every member stopped; None while the members
    disagree (the group keeps its previous state)."""
    states = list(states)
    if any(s is State.FAULT for s in states):
        return "FAULT"
    for state, name in (
        (State.MASTER, "MASTER"),
        (State.BACKUP, "BACKUP"),
        (State.INITIALIZE, "STOP"),
    ):
        if states and all(s is state for s in states):
            return name
    return None


# ---- hooks ------------------------------------------------------------------------------------

#: keepalived's state words for hooks; a machine going back to INITIALIZE is stopping.
HOOK_STATES: Mapping[State, str] = {
    State.MASTER: "MASTER",
    State.BACKUP: "BACKUP",
    State.FAULT: "FAULT",
    State.INITIALIZE: "STOP",
}


@dataclass(frozen=True, slots=True)
class Hooks:
    """The notify commands of one instance or group (each an argv; empty: none)."""

    notify: tuple[str, ...] = ()
    notify_master: tuple[str, ...] = ()
    notify_backup: tuple[str, ...] = ()
    notify_fault: tuple[str, ...] = ()
    notify_stop: tuple[str, ...] = ()

    def for_state(self, state: str) -> tuple[str, ...]:
        """The state's own hook (notify_master for MASTER, ...); empty if none."""
        specific = {
            "MASTER": self.notify_master,
            "BACKUP": self.notify_backup,
            "FAULT": self.notify_fault,
            "STOP": self.notify_stop,
        }.get(state)
        if specific is None:
            raise ValueError(f"unknown hook state {state!r}")
        return specific

    def __bool__(self) -> bool:
        return any(
            (
                self.notify,
                self.notify_master,
                self.notify_backup,
                self.notify_fault,
                self.notify_stop,
            )
        )


def hook_argvs(
    hooks: Hooks, kind: str, name: str, state: str, priority: int = 0
) -> list[tuple[str, ...]]:
    """The commands to run, in order, when instance or group ``name`` enters ``state``
    (MASTER, BACKUP, FAULT, STOP): the state's own hook as configured, then the generic
    ``notify`` with keepalived's arguments appended: ``INSTANCE name STATE priority``, or
    ``GROUP name STATE 0`` for a group (keepalived 2.2 passes 0 as a group's priority)."""
    if kind not in ("INSTANCE", "GROUP"):
        raise ValueError(f"kind must be INSTANCE or GROUP, got {kind!r}")
    argvs: list[tuple[str, ...]] = []
    specific = hooks.for_state(state)
    if specific:
        argvs.append(specific)
    if hooks.notify:
        argvs.append((*hooks.notify, kind, name, state, str(priority)))
    return argvs
