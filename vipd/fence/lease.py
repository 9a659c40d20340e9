"""The lease a node needs to hold a VIP, seen from the node. Pure: no I/O, no clock.

One :class:`LeaseClient` per fenced instance. It decides when to ask the witness for the lease,
renew it, retransmit, release it, and until when the VIP may be held; the daemon carries its
:class:`~vipd.witness.base.Request` outputs to a witness backend and feeds the replies back.

The local deadline is conservative (fencing.md S2). A reply to a request sent at ``t_sent`` (our
CLOCK_BOOTTIME) with TTL ``T`` means the witness will not expire the lease before it received
that request plus ``T``, which is after ``t_sent + T`` in real time. Our clock may run up to
``rate_margin`` fast or slow, so we stop holding at ``t_sent + T * (1 - rate_margin) - guard``,
``guard`` being the time to take the VIP off the interface. A later reply can only push the
deadline forward, and only from its own request's send time, so a reply that took long to come
back never earns more than the witness actually promised.

The witness-lost policy (fencing.md): with ``hold-with-peer`` (the default) a master whose lease
runs out because the witness cannot be reached keeps the VIP while a peer confirms, over the peer
channel, that it sees this master and will not promote. A confirmation answers a ping we sent at
``t_ping`` with ``promise``: the seconds the peer's master-down timer had left when it answered,
after which it may ask for the lease. It counted them from a moment after ``t_ping``, so holding
until ``t_ping + promise * (1 - rate_margin) - guard`` is safe. With ``release`` the VIP goes
when the lease runs out, whatever the peer says. A *refused* renewal always ends the hold at once
(another node has been granted a higher epoch), whatever the policy.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

from vipd.witness.base import Op, Reply, Request, Result


class Policy(enum.StrEnum):
    HOLD_WITH_PEER = "hold-with-peer"
    RELEASE = "release"


class LeaseState(enum.Enum):
    IDLE = "idle"
    ACQUIRING = "acquiring"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class LeaseParams:
    name: str
    ttl: float  # seconds asked for; defaults to the instance's Master_Down_Interval
    renew_interval: float  # seconds between renewals (the advert interval)
    retry_interval: float  # resend an unanswered request after this long, or longer while
    # the witness answers slower than that (LeaseClient.retry_after)
    policy: Policy = Policy.HOLD_WITH_PEER
    rate_margin: float = 0.01  # how far our clock's rate may be off, as a fraction
    guard: float = 0.02  # seconds to take the VIP down before the deadline

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.renew_interval <= 0 or self.retry_interval <= 0:
            raise ValueError("lease ttl, renew and retry intervals must be positive")
        if not 0 <= self.rate_margin < 0.5:
            raise ValueError("rate_margin must be in [0, 0.5)")


# Outputs, drained by the caller in order.
@dataclass(frozen=True, slots=True)
class Send:
    request: Request


@dataclass(frozen=True, slots=True)
class Granted:
    epoch: int
    ttl: float


@dataclass(frozen=True, slots=True)
class Refused:
    holder: str
    epoch: int
    remaining: float  # seconds until the holder's lease expires at the witness


@dataclass(frozen=True, slots=True)
class Lost:
    reason: str  # "renewal-refused" (fenced: a higher epoch exists) or "expired"
    epoch: int


@dataclass(frozen=True, slots=True)
class Released:
    epoch: int  # the witness confirmed it dropped our lease


@dataclass(frozen=True, slots=True)
class WitnessError:
    error: str


LeaseEvent = Send | Granted | Refused | Lost | Released | WitnessError

_MAX_OUTSTANDING = 64  # requests we remember waiting for; older ones are forgotten


class LeaseClient:
    def __init__(self, params: LeaseParams) -> None:
        self.params = params
        self.state = LeaseState.IDLE
        self.epoch = 0
        self.lease_deadline = 0.0  # hold no longer than this on the witness's word
        self.peer_deadline = 0.0  # ... or than this on the peer's (hold-with-peer)
        self.last_rtt: float | None = None
        self._srtt: float | None = None  # smoothed round-trip time to the witness
        self._rttvar = 0.0  # and its mean deviation (RFC 6298)
        self._ids = itertools.count(1)
        self._outstanding: dict[int, tuple[Op, float]] = {}  # req_id -> (op, sent at)
        self._next_send: float | None = None  # acquire/renew (re)transmission
        self._release: tuple[int, int, float] | None = None  # epoch, tries left, next try
        # The highest epoch we released: a grant of it still in flight is void (the witness
        # may have seen our release after granting), so we never take it up again.
        self._released_epoch = 0
        self._events: list[LeaseEvent] = []

    # ---- queries ---------------------------------------------------------------------------
    def held_until(self) -> float:
        """Until when this node may hold the VIP (meaningful while HELD)."""
        if self.params.policy is Policy.HOLD_WITH_PEER:
            return max(self.lease_deadline, self.peer_deadline)
        return self.lease_deadline

    def holds(self, now: float) -> bool:
        return self.state is LeaseState.HELD and now < self.held_until()

    def get_timer(self) -> float | None:
        times = []
        if self.state is not LeaseState.IDLE and self._next_send is not None:
            times.append(self._next_send)
        if self.state is LeaseState.HELD:
            times.append(self.held_until())
        if self._release is not None:
            times.append(self._release[2])
        return min(times) if times else None

    def retry_after(self) -> float:
        """How long an answer may take before we ask again: ``retry_interval``, or, while the
        witness answers slower than that, its smoothed round-trip time plus four deviations
        (TCP's retransmission timeout, RFC 6298), at most a quarter of the TTL.

        Every try is a request of its own, so every answer is one clean sample. An overloaded
        witness that answered after more than ``retry_interval`` used to get every request
        again and again (12.5 ms apart at advert 0.1 s), which overloaded it further: 50
        fenced instances at 0.1 s kept losing their leases (docs/chaos.md finding 11). A lost
        or dropped request gives no sample, so loss alone keeps the configured pace."""
        floor = self.params.retry_interval
        if self._srtt is None:
            return floor
        return min(max(floor, self._srtt + 4 * self._rttvar), max(floor, self.params.ttl / 4))

    def drain(self) -> list[LeaseEvent]:
        events, self._events = self._events, []
        return events

    # ---- inputs ----------------------------------------------------------------------------
    def acquire(self, now: float) -> None:
        """Ask for the lease (a no-op while asking or holding)."""
        if self.state is LeaseState.IDLE:
            self.state = LeaseState.ACQUIRING
            self._send(Op.ACQUIRE, now)

    def release(self, now: float) -> None:
        """Give the lease up (after the VIP is down). Also cancels an acquire in flight: a
        grant that still arrives is handed back at once."""
        self._forget_requests()
        if self.state is LeaseState.HELD:
            self._start_release(self.epoch, now)
        self.state = LeaseState.IDLE
        self._next_send = None
        self.lease_deadline = self.peer_deadline = 0.0

    def on_reply(self, reply: Reply, now: float) -> bool:
        """A reply from the witness. False if it answers nothing we asked (stale, duplicate)."""
        sent = self._outstanding.pop(reply.req_id, None)
        if sent is None:
            if (
                reply.result is Result.GRANTED
                and not self._holds_epoch(reply.epoch)
                and reply.epoch > self._released_epoch
            ):
                # A late grant for an acquire we gave up: hand it back.
                self._start_release(reply.epoch, now)
            return False
        op, sent_at = sent
        self.last_rtt = rtt = now - sent_at
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar += (abs(self._srtt - rtt) - self._rttvar) / 4
            self._srtt += (rtt - self._srtt) / 8
        if reply.result in (Result.GRANTED, Result.RENEWED):
            self._on_granted(reply, op, sent_at, now)
        elif reply.result is Result.REFUSED:
            self._on_refused(reply, op, now)
        elif reply.result is Result.RELEASED:
            if self._release is not None and self._release[0] == reply.epoch:
                self._release = None
                self._events.append(Released(reply.epoch))
        else:
            self._events.append(WitnessError(reply.error or "witness error"))
        return True

    def peer_confirmed(self, ping_sent_at: float, promise: float) -> None:
        """A peer answered our ping (sent at ``ping_sent_at``): it will not ask for the lease
        for ``promise`` seconds from when it answered."""
        if self.state is LeaseState.HELD and promise > 0:
            until = ping_sent_at + promise * (1 - self.params.rate_margin) - self.params.guard
            self.peer_deadline = max(self.peer_deadline, until)

    def handle_timer(self, now: float) -> None:
        if self.state is LeaseState.HELD and now >= self.held_until():
            self.state = LeaseState.IDLE
            self._next_send = None
            self._forget_requests()
            self._events.append(Lost("expired", self.epoch))
            # Hand it back too: if the witness is reachable again, the peer need not wait.
            self._start_release(self.epoch, now)
        if self._next_send is not None and now >= self._next_send:
            if self.state is LeaseState.ACQUIRING:
                self._send(Op.ACQUIRE, now)
            elif self.state is LeaseState.HELD:
                self._send(Op.RENEW, now)
        if self._release is not None and now >= self._release[2]:
            epoch, tries, _ = self._release
            self._emit_request(Op.RELEASE, now, epoch)
            retry = now + self.retry_after()
            self._release = (epoch, tries - 1, retry) if tries > 1 else None

    # ---- internals ---------------------------------------------------------------------------
    def _holds_epoch(self, epoch: int) -> bool:
        return self.state is LeaseState.HELD and epoch == self.epoch

    def _on_granted(self, reply: Reply, op: Op, sent_at: float, now: float) -> None:
        deadline = sent_at + reply.ttl * (1 - self.params.rate_margin) - self.params.guard
        if reply.epoch <= self._released_epoch:
            # See _released_epoch: we do not take it up again. The witness still counts us as
            # its holder, so our release was lost (it was down, say), and each of our acquires
            # extends it: it would never lapse, and the peer would be refused for as long as we
            # asked (a 15 s outage in a chaos run, finding 12). Hand it back again; the next
            # acquire gets a fresh epoch.
            if self._release is None:
                self._start_release(reply.epoch, now)
            return
        if self.state is LeaseState.ACQUIRING:
            self.state = LeaseState.HELD
            self.epoch = reply.epoch
            self.lease_deadline = deadline
            self.peer_deadline = 0.0
            self._next_send = sent_at + self.params.renew_interval
            self._events.append(Granted(reply.epoch, reply.ttl))
        elif self.state is LeaseState.HELD:
            if reply.epoch != self.epoch:
                # etcd answers a renewal of a lapsed lease with a fresh grant. Another node may
                # have held it in between, but only after our previous deadline had passed (or,
                # holding with a peer, after the peer's promise had run out): either way we
                # were not holding then, and from here on this grant is our lease.
                self.epoch = reply.epoch
                self.lease_deadline = deadline
            else:
                self.lease_deadline = max(self.lease_deadline, deadline)
            self._next_send = max(now, sent_at + self.params.renew_interval)
        else:
            self._start_release(reply.epoch, now)

    def _on_refused(self, reply: Reply, op: Op, now: float) -> None:
        if op is Op.ACQUIRE and self.state is LeaseState.ACQUIRING:
            self.state = LeaseState.IDLE
            self._next_send = None
            self._drop_outstanding(Op.ACQUIRE)
            self._events.append(Refused(reply.holder, reply.epoch, reply.remaining))
        elif op is Op.RENEW and self.state is LeaseState.HELD:
            self.state = LeaseState.IDLE
            self._next_send = None
            self.lease_deadline = self.peer_deadline = 0.0
            self._forget_requests()
            self._events.append(Lost("renewal-refused", self.epoch))

    def _send(self, op: Op, now: float) -> None:
        self._emit_request(op, now, self.epoch if op is Op.RENEW else 0)
        self._next_send = now + self.retry_after()

    def _start_release(self, epoch: int, now: float) -> None:
        """Send a release now and twice more unless answered (nobody waits for it: it only
        spares the peer the rest of our TTL)."""
        self._released_epoch = max(self._released_epoch, epoch)
        self._emit_request(Op.RELEASE, now, epoch)
        self._release = (epoch, 2, now + self.retry_after())

    def _emit_request(self, op: Op, now: float, epoch: int) -> None:
        req_id = next(self._ids)
        self._outstanding[req_id] = (op, now)
        while len(self._outstanding) > _MAX_OUTSTANDING:
            del self._outstanding[next(iter(self._outstanding))]
        self._events.append(Send(Request(op, self.params.name, req_id, self.params.ttl, epoch)))

    def _forget_requests(self) -> None:
        """Stop holding or asking: every answer still on its way is void. A renewal granted
        before our release promised nothing once the witness saw the release, and a grant
        for an acquire we gave up is handed back when it arrives (see on_reply)."""
        self._outstanding.clear()

    def _drop_outstanding(self, op: Op) -> None:
        for req_id in [r for r, (o, _) in self._outstanding.items() if o is op]:
            del self._outstanding[req_id]
