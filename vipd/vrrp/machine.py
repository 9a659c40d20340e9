"""The VRRPv3 state machine of RFC 5798 section 6.4, with the RFC 9568 fixes. Pure.

Every state transition lives in this file. The machine does no I/O and reads no clock: each
entry point takes ``now`` (seconds on any monotonic clock), :meth:`Machine.get_timer` returns the
earliest absolute deadline, and outputs are drained with :meth:`Machine.drain`. The caller owns
sockets, netlink and the single timer it arms at ``get_timer()``.

Transitions (input -> action, next state), ``P`` the local priority, ``p`` the advert's:

========== ======================== ============================================= ==========
state      input                    actions                                       next
========== ======================== ============================================= ==========
INITIALIZE start, P == 255          advert, add VIPs, announce                    MASTER
INITIALIZE start, P < 255           arm Master_Down_Timer                         BACKUP
BACKUP     Master_Down_Timer        advert, add VIPs, announce (reason            MASTER
                                    master-released after a priority-0 advert)
BACKUP     advert p == 0            Master_Down_Timer := Skew_Time                BACKUP
BACKUP     advert p >= P, or no     learn Master_Adver_Interval, re-arm           BACKUP
           preempt, or within       Master_Down_Timer
           preempt_delay
BACKUP     advert p < P, preempt    discard (the master-down timer will fire)     BACKUP
MASTER     Adver_Timer              advert, the next at the instance's next slot  MASTER
                                    (advert_slot); announce too if the timer fired
                                    more than one interval late: we were frozen
MASTER     advert p == 0            advert at once, announce: the leaving router  MASTER
                                    was master too, clients may point at it
MASTER     advert p > P, or p == P  advert priority 0 (so that master             BACKUP
           and sender > primary     re-announces), remove VIPs, learn interval,
                                    arm Master_Down_Timer
MASTER     advert otherwise         advert at once (RFC 9568), announce: a        MASTER
                                    competing master may have moved ARP caches
any        shutdown                 if MASTER: advert priority 0, remove VIPs     INITIALIZE
========== ======================== ============================================= ==========

Fenced instances (``Params.fenced``, fencing.md S5) put the witness between the timer and the
promotion, and hand the lease back whenever they stop being master:

========== ======================== ============================================= ==========
BACKUP     Master_Down_Timer        acquire the lease                             BACKUP
BACKUP     lease granted            advert, add VIPs, announce                    MASTER
BACKUP     lease refused            retry when the holder's lease runs out; if    BACKUP
                                    preempting, send one claim advert so the
                                    lower-priority holder steps down and releases
MASTER     lease lost (refused or   remove VIPs                                   BACKUP
           expired)
MASTER     any step down, shutdown  ... then release the lease                    ...
========== ======================== ============================================= ==========

A backup promises its master, through :meth:`Machine.promise`, how long it will certainly not
ask for the lease; the peer channel carries that promise (the witness-lost policy).

Operations (trackers, maintenance, planned handover):

========== ======================== ============================================= ==========
any        fault set                if MASTER: advert priority 0, remove VIPs,    FAULT
                                    release the lease
FAULT      advert                   remember the master (for status), nothing     FAULT
                                    else; no timers run
FAULT      fault cleared            arm Master_Down_Timer                         BACKUP
MASTER     step down (handover)     advert priority 0, remove VIPs, release;      BACKUP
                                    then accept any master, even a lower one,
                                    until we are master again (no preempting
                                    back)
========== ======================== ============================================= ==========
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from vipd.announce.schedule import AnnounceParams, AnnounceSchedule
from vipd.vrrp.packet import Advert

IPAddress = IPv4Address | IPv6Address


class State(enum.Enum):
    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"  # may not be master: a tracker failed, or maintenance


@dataclass(frozen=True, slots=True)
class Params:
    vrid: int
    priority: int
    advert_interval: int  # centiseconds
    primary: IPAddress  # this router's address on the link; the equal-priority tie-break
    preempt: bool = True
    preempt_delay: float = 0.0
    announce: AnnounceParams = field(default_factory=AnnounceParams)
    fenced: bool = False  # promote only on a witness grant (fencing.md S5)

    def __post_init__(self) -> None:
        if not 1 <= self.priority <= 255:
            raise ValueError(f"priority must be 1..255, got {self.priority}")
        if not 1 <= self.advert_interval <= 4095:
            raise ValueError("advert_interval must be 1..4095 centiseconds")


# Outputs, drained by the caller in order.
@dataclass(frozen=True, slots=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True, slots=True)
class AddVips:
    pass


@dataclass(frozen=True, slots=True)
class RemoveVips:
    pass


@dataclass(frozen=True, slots=True)
class AcquireLease:
    pass


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    pass


@dataclass(frozen=True, slots=True)
class Announce:
    reason: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: State
    new: State
    reason: str
    priority: int


Action = SendAdvert | AddVips | RemoveVips | Announce | StateChanged | AcquireLease | ReleaseLease


def skew_time(priority: int, master_adver_int: float) -> float:
    """RFC 5798 section 6.1 (as corrected by RFC 9568): ((256 - Priority) * MAI) / 256."""
    return ((256 - priority) * master_adver_int) / 256


def master_down_interval(priority: int, master_adver_int: float) -> float:
    return 3 * master_adver_int + skew_time(priority, master_adver_int)


#: Adverts are staggered over this many phases of the interval, by VRID (the trade-off between
#: wake-ups and burst length is in docs/chaos.md, finding 5).
STAGGER = 5


def advert_slot(now: float, interval: float, vrid: int) -> float:
    """The first of the instance's advert slots after ``now``: multiples of ``interval`` on
    the clock, shifted by (VRID mod STAGGER) / STAGGER of it. So the next advert is due within
    one interval, as RFC 5798 asks, and

    - a loop that wakes a little late every time does not make the adverts drift (they are
      not counted from when the last one went out);
    - instances with one interval fall into STAGGER groups that are due at the same instants,
      so a host with many instances wakes up once per group and sends its adverts in short
      bursts (vipd.timers), rather than once per instance or in one long burst."""
    offset = (vrid % STAGGER) * interval / STAGGER
    slot = (math.floor((now - offset) / interval) + 1) * interval + offset
    return slot if slot > now else slot + interval


class Machine:
    """One VRRP instance (one VRID on one interface, one address family)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.priority = params.priority
        self.state = State.INITIALIZE
        self.master_adver_int = params.advert_interval / 100  # seconds, learned in BACKUP
        self.master_address: IPAddress | None = None
        self.master_priority: int | None = None
        self._adver_at: float | None = None
        self._master_down_at: float | None = None
        self._lower_master_since: float | None = None
        self.acquiring = False  # fenced: asked the witness, waiting for its answer
        self.fault: str | None = None  # why we may not be master (None: we may)
        self._yielded = False  # handed over: do not preempt back
        self._announce = AnnounceSchedule(params.announce)
        self._actions: list[Action] = []

    # ---- queries ---------------------------------------------------------------------------
    @property
    def advert_interval(self) -> float:
        return self.params.advert_interval / 100

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(self.priority, self.master_adver_int)

    def get_timer(self) -> float | None:
        """The earliest absolute time at which :meth:`handle_timer` has work to do."""
        earliest = self._announce.deadline()
        for t in (self._adver_at, self._master_down_at):
            if t is not None and (earliest is None or t < earliest):
                earliest = t
        return earliest

    def drain(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # ---- inputs ----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        if self.state is not State.INITIALIZE:
            return
        if self.fault is not None:
            self._change(State.FAULT, self.fault)
        elif self.priority == 255 and self.params.fenced:
            self._become_backup(now, "startup", self.advert_interval)
            self._master_down_at = now  # the address owner still asks the witness first
        elif self.priority == 255:
            self._become_master(now, "address-owner")
        else:
            self._become_backup(now, "startup", self.advert_interval)

    def shutdown(self, now: float) -> None:
        if self.state is State.MASTER:
            self._emit(SendAdvert(0))
            self._emit(RemoveVips())
        self._release_lease()
        self._announce.stop()
        self._adver_at = self._master_down_at = None
        self._change(State.INITIALIZE, "shutdown")

    def set_priority(self, priority: int, now: float) -> None:
        """Change the effective priority (tracking, maintenance). A master advertises the new
        value at once so a backup with preemption can take over without waiting."""
        if not 1 <= priority <= 254 and not (priority == 255 and self.params.priority == 255):
            raise ValueError(f"effective priority must be 1..254, got {priority}")
        if priority == self.priority:
            return
        self.priority = priority
        if self.state is State.MASTER:
            self._send_advert(now)

    def set_fault(self, now: float, reason: str | None) -> None:
        """Enter FAULT for ``reason`` (a tracker failed, maintenance), or leave it (None)."""
        self.fault = reason
        if self.state is State.INITIALIZE:
            return  # start() honours it
        if reason is not None:
            if self.state is not State.FAULT:
                self._give_up_mastership()
                self._master_down_at = None
                self._lower_master_since = None
                if self.acquiring:
                    self.acquiring = False
                    self._release_lease()
                self._change(State.FAULT, reason)
        elif self.state is State.FAULT:
            self._become_backup(now, "fault-cleared", self.master_adver_int)
            if self.master_priority is not None:
                self.master_priority = None  # a master seen while in FAULT may be long gone

    def step_down(self, now: float, reason: str = "handover") -> bool:
        """Planned handover: give up mastership and do not preempt back. False unless MASTER.
        ``reason`` names it in the transition (a sync group's member follows: "group:...")."""
        if self.state is not State.MASTER:
            return False
        self._give_up_mastership()
        self._yielded = True
        self._become_backup(now, reason, self.master_adver_int)
        return True

    def reconfigure(self, params: Params, now: float) -> None:
        """Apply a reloaded config for the same VRID and address: priority, interval,
        preemption, announcements. A master advertises the change at once."""
        if (params.vrid, params.primary, params.fenced) != (
            self.params.vrid,
            self.params.primary,
            self.params.fenced,
        ):
            raise ValueError("reconfigure cannot change vrid, primary address or fencing")
        old, self.params = self.params, params
        self._announce.params = params.announce
        if params.priority != old.priority:
            self.priority = params.priority
        if self.state is State.MASTER and (
            params.priority != old.priority or params.advert_interval != old.advert_interval
        ):
            self._send_advert(now)

    def take_over(self, now: float) -> bool:
        """Our master handed over to us (it dropped the VIP): promote now, through the lease
        when fenced, instead of waiting for Skew_Time. False unless we are a backup."""
        if self.state is not State.BACKUP or self.acquiring:
            return False
        self.master_priority = 0
        self._master_down_at = now
        self.handle_timer(now)
        return True

    def handle_timer(self, now: float) -> None:
        if self.state is State.MASTER and self._adver_at is not None and now >= self._adver_at:
            late = now - self._adver_at
            self._send_advert(now)
            if late > self.advert_interval:
                # Our own timer fired a whole interval late: we were frozen (VM pause, SIGSTOP,
                # GC). A backup may have taken over and moved the neighbours' caches meanwhile.
                self._trigger_announce(now, "resumed-from-freeze")
        if (
            self.state is State.BACKUP
            and self._master_down_at is not None
            and now >= self._master_down_at
        ):
            if self.params.fenced:
                self._master_down_at = None
                self.acquiring = True
                self._emit(AcquireLease())
            else:
                self._become_master(now, self._promotion_reason())
        if self.state is State.MASTER:
            reason = self._announce.handle_timer(now)
            if reason is not None:
                self._emit(Announce(reason))

    def receive(self, advert: Advert, src: IPAddress, now: float) -> None:
        """A validated advert for our VRID from ``src``."""
        if advert.vrid != self.params.vrid:
            raise ValueError("advert for another VRID")
        if self.state is State.BACKUP:
            self._backup_receive(advert, src, now)
        elif self.state is State.MASTER:
            self._master_receive(advert, src, now)
        elif self.state is State.FAULT and advert.priority > 0:
            self.master_address, self.master_priority = src, advert.priority

    def lease_granted(self, now: float) -> None:
        """The witness granted the lease we asked for: promote. A grant that comes after we
        stopped wanting it (a higher-priority master appeared meanwhile) is handed back."""
        if self.state is State.BACKUP and self.acquiring:
            self.acquiring = False
            self._become_master(now, self._promotion_reason())
        elif self.state is not State.MASTER:
            self._emit(ReleaseLease())

    def lease_refused(self, now: float, remaining: float) -> None:
        """Another node holds the lease for ``remaining`` more seconds at the witness."""
        if not (self.state is State.BACKUP and self.acquiring):
            return
        self.acquiring = False
        # A witness's ``remaining`` may be coarse: etcd's is whole seconds, an upper bound, and
        # a restarted etcd extends leases (docs/chaos.md, finding 8). So ask again at least
        # every Master_Down_Interval meanwhile; the embedded witness's is exact and at most
        # the TTL, i.e. Master_Down_Interval by default, so it changes nothing there.
        retry = min(remaining + 0.01, self.master_down_interval)
        preempting = self._lower_master_since is not None
        if preempting or self.master_priority == 0:
            # The holder is alive and about to hand over (it is lower, or it said it is
            # leaving): ask again soon rather than waiting out its whole lease.
            retry = min(retry, max(0.02, self.advert_interval / 4))
        if preempting:
            # Tell the lower-priority master we are here; it steps down and releases.
            self._emit(SendAdvert(self.priority))
        self._master_down_at = now + retry

    def lease_lost(self, now: float, reason: str) -> None:
        """Our lease ended (renewal refused, or ran out with no peer confirmation): the VIP
        goes at once (fencing.md S2, S5)."""
        if self.state is State.MASTER:
            self._emit(RemoveVips())
            self._announce.stop()
            self._adver_at = None
            self._become_backup(now, reason, self.master_adver_int)

    def promise(self, now: float) -> float | None:
        """For how long this backup will certainly not ask for the lease: the time left on
        its master-down timer. None unless we are a backup that hears a master."""
        if self.state is State.FAULT:
            # Leaving FAULT arms a whole Master_Down_Interval first.
            return self.master_down_interval
        if (
            self.state is not State.BACKUP
            or self.acquiring
            or self._master_down_at is None
            or self.master_priority in (None, 0)
        ):
            return None
        return max(0.0, self._master_down_at - now)

    # ---- per-state handlers ------------------------------------------------------------------
    def _backup_receive(self, advert: Advert, src: IPAddress, now: float) -> None:
        if advert.priority == 0:
            # The master is leaving: take over after Skew_Time only (section 6.4.2).
            self._master_down_at = now + skew_time(self.priority, self.master_adver_int)
            self.master_priority = 0
            return
        if advert.priority >= self.priority or not self.params.preempt or self._yielded:
            self._lower_master_since = None
            self._accept_master(advert, src, now)
            return
        if self.acquiring:
            return  # asking the witness already; its answer decides
        # A lower-priority master and we preempt, but only once preempt_delay has passed
        # since we first saw it (keepalived's preempt_delay).
        if self._lower_master_since is None:
            self._lower_master_since = now
        if now - self._lower_master_since < self.params.preempt_delay:
            self._accept_master(advert, src, now)
        # else: discard, so Master_Down_Timer fires and we take over.

    def _master_receive(self, advert: Advert, src: IPAddress, now: float) -> None:
        if advert.priority == 0:
            # Another router was master too (a split brain ending) and is leaving: clients may
            # still point at it, so advertise at once and re-announce.
            self._send_advert(now)
            self._trigger_announce(now, "competing-master")
            return
        if advert.priority > self.priority or (
            advert.priority == self.priority and int(src) > int(self.params.primary)
        ):
            # Say so with a priority-0 advert: the higher master may never have heard us (a
            # partition healing), and clients may still point at us until it re-announces.
            self._emit(SendAdvert(0))
            self._emit(RemoveVips())
            self._release_lease()
            self._announce.stop()
            self._adver_at = None
            self._become_backup(
                now, "higher-priority-master", advert.max_adver_int / 100, advert, src
            )
            return
        # A competing master with lower priority: RFC 9568 says advertise at once; we also
        # re-announce, the moment incident A went wrong.
        self._send_advert(now)
        self._trigger_announce(now, "competing-master")

    # ---- transitions ---------------------------------------------------------------------
    def _become_master(self, now: float, reason: str) -> None:
        self._yielded = False
        self._master_down_at = None
        self._lower_master_since = None
        self.master_address = self.params.primary
        self.master_priority = self.priority
        self._change(State.MASTER, reason)
        self._emit(AddVips())
        self._send_advert(now)
        announce = self._announce.start(now, "became-master")
        if announce is not None:
            self._emit(Announce(announce))

    def _become_backup(
        self,
        now: float,
        reason: str,
        master_adver_int: float,
        advert: Advert | None = None,
        src: IPAddress | None = None,
    ) -> None:
        self.master_adver_int = master_adver_int
        self.master_address = src
        self.master_priority = advert.priority if advert else None
        self._master_down_at = now + self.master_down_interval
        self._change(State.BACKUP, reason)

    def _accept_master(self, advert: Advert, src: IPAddress, now: float) -> None:
        if self.acquiring:
            # A master we accept appeared while we asked the witness; a grant that still
            # comes is handed back (lease_granted).
            self.acquiring = False
        self.master_adver_int = advert.max_adver_int / 100
        self.master_address = src
        self.master_priority = advert.priority
        self._master_down_at = now + self.master_down_interval

    def _give_up_mastership(self) -> None:
        if self.state is State.MASTER:
            self._emit(SendAdvert(0))
            self._emit(RemoveVips())
            self._release_lease()
            self._announce.stop()
            self._adver_at = None

    def _promotion_reason(self) -> str:
        return "master-released" if self.master_priority == 0 else "master-down"

    def _release_lease(self) -> None:
        if self.params.fenced:
            self._emit(ReleaseLease())

    def _send_advert(self, now: float) -> None:
        """Advertise now; the next advert is due at this instance's next slot."""
        self._emit(SendAdvert(self.priority))
        self._adver_at = advert_slot(now, self.advert_interval, self.params.vrid)

    def _trigger_announce(self, now: float, reason: str) -> None:
        announce = self._announce.trigger(now, reason)
        if announce is not None:
            self._emit(Announce(announce))

    def _change(self, new: State, reason: str) -> None:
        old, self.state = self.state, new
        if old is not new:
            self._emit(StateChanged(old, new, reason, self.priority))

    def _emit(self, action: Action) -> None:
        self._actions.append(action)
