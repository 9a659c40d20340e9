"""The lease core on synthetic time: deadlines, renewals, refusals, the witness-lost policy."""

from __future__ import annotations

import pytest

from vipd.fence.lease import (
    Granted,
    LeaseClient,
    LeaseParams,
    LeaseState,
    Lost,
    Policy,
    Refused,
    Released,
    Send,
)
from vipd.witness.base import Op, Reply, Request, Result

P = LeaseParams(
    "web", ttl=3.0, renew_interval=1.0, retry_interval=0.25, rate_margin=0.01, guard=0.02
)


def sends(client: LeaseClient) -> list[Request]:
    return [e.request for e in client.drain() if isinstance(e, Send)]


def grant(client: LeaseClient, request: Request, now: float, epoch: int = 7) -> None:
    result = Result.GRANTED if request.op is Op.ACQUIRE else Result.RENEWED
    assert client.on_reply(Reply("web", request.req_id, result, epoch, ttl=3.0), now)


def test_grant_deadline_counts_from_the_send_time_with_margins() -> None:
    c = LeaseClient(P)
    c.acquire(10.0)
    (req,) = sends(c)
    assert (req.op, req.lease, req.ttl) == (Op.ACQUIRE, "web", 3.0)
    grant(c, req, now=10.5)  # a slow reply earns nothing beyond the send time
    assert c.drain() == [Granted(7, 3.0)]
    assert c.state is LeaseState.HELD
    assert c.lease_deadline == pytest.approx(10.0 + 3.0 * 0.99 - 0.02)
    assert c.last_rtt == pytest.approx(0.5)
    assert c.holds(12.9) and not c.holds(13.0)


def test_renewals_extend_and_are_retransmitted_until_answered() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.01)
    c.drain()
    assert c.get_timer() == pytest.approx(1.0)
    c.handle_timer(1.0)
    (renew,) = sends(c)
    assert (renew.op, renew.epoch) == (Op.RENEW, 7)
    c.handle_timer(1.25)  # unanswered: resent at the retry pace
    (again,) = sends(c)
    assert again.op is Op.RENEW and again.req_id != renew.req_id
    grant(c, renew, 1.3)  # the first one's answer arrives: it counts from its own send time
    assert c.lease_deadline == pytest.approx(1.0 + 2.97 - 0.02)
    assert c.get_timer() == pytest.approx(2.0)


def test_refused_acquire_reports_holder_and_remaining() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    (req,) = sends(c)
    c.on_reply(Reply("web", req.req_id, Result.REFUSED, 4, remaining=1.5, holder="lb1"), 0.01)
    assert c.drain() == [Refused("lb1", 4, 1.5)]
    assert c.state is LeaseState.IDLE and c.get_timer() is None


def test_refused_renewal_is_lost_at_once_whatever_the_policy() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.0)
    c.peer_confirmed(0.5, 10.0)  # a peer promise does not outlive a refusal
    c.drain()
    c.handle_timer(1.0)
    (renew,) = sends(c)
    c.on_reply(Reply("web", renew.req_id, Result.REFUSED, 8, remaining=3.0, holder="lb2"), 1.0)
    assert c.drain() == [Lost("renewal-refused", 7)]
    assert not c.holds(1.0)


def test_expiry_without_witness_or_peer_loses_the_lease_and_releases() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.0)
    c.drain()
    t = 0.0
    while c.state is LeaseState.HELD:
        t = c.get_timer() or 0.0
        c.handle_timer(t)
    assert t == pytest.approx(2.95)
    events = c.drain()
    assert Lost("expired", 7) in events
    assert any(isinstance(e, Send) and e.request.op is Op.RELEASE for e in events)


def test_hold_with_peer_keeps_the_vip_only_while_the_peer_confirms() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.0)
    # The witness is gone; the peer answers pings sent at 2.0 and 4.0 with 3.4 s promises.
    c.peer_confirmed(2.0, 3.4)
    c.peer_confirmed(4.0, 3.4)
    assert c.held_until() == pytest.approx(4.0 + 3.4 * 0.99 - 0.02)
    c.handle_timer(7.0)
    assert c.state is LeaseState.HELD
    c.handle_timer(c.held_until())
    assert any(isinstance(e, Lost) for e in c.drain())


def test_release_policy_ignores_the_peer() -> None:
    c = LeaseClient(LeaseParams("web", 3.0, 1.0, 0.25, policy=Policy.RELEASE))
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.0)
    c.peer_confirmed(2.0, 30.0)
    assert c.held_until() == c.lease_deadline


def test_a_grant_after_cancelling_is_handed_back() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    (req,) = sends(c)
    c.release(0.1)  # e.g. a higher-priority master appeared meanwhile
    assert sends(c) == []  # nothing held yet, nothing to release
    # Its answer is void now (on_reply says False), but the witness did grant it: give it back.
    assert not c.on_reply(Reply("web", req.req_id, Result.GRANTED, 9, ttl=3.0), 0.2)
    (release,) = sends(c)
    assert (release.op, release.epoch) == (Op.RELEASE, 9)
    assert c.state is LeaseState.IDLE


def test_a_lease_whose_release_was_lost_is_handed_back_again_when_granted_anew() -> None:
    """The lease ran out while the witness was down: our release (three tries) never reached
    it, and it came back still counting us as the holder (restart grace). An acquire of ours
    is then answered with that old epoch, which we do not take up; handing it back again lets
    the next acquire get a fresh one. Without that, every acquire extended the old epoch and
    the peer was refused for as long as we asked (chaos seed 3: 15 s without a holder)."""
    c = LeaseClient(P)
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.0)
    c.drain()
    t = 0.0
    while c.state is LeaseState.HELD or c.get_timer() is not None:  # expiry, release tries
        t = c.get_timer() or 0.0
        c.handle_timer(t)
    releases = [r for r in sends(c) if r.op is Op.RELEASE]
    assert [r.epoch for r in releases] == [7, 7, 7]  # all lost
    c.acquire(t + 1.0)  # our master-down timer: ask again
    (acquire,) = sends(c)
    grant(c, acquire, t + 1.01, epoch=7)  # the witness: still ours, extended
    assert c.state is LeaseState.ACQUIRING
    (release,) = sends(c)
    assert (release.op, release.epoch) == (Op.RELEASE, 7)
    c.on_reply(Reply("web", release.req_id, Result.RELEASED, 7), t + 1.02)
    c.handle_timer(t + 1.0 + P.retry_interval)  # the acquire again: a fresh epoch this time
    (again,) = [r for r in sends(c) if r.op is Op.ACQUIRE]
    grant(c, again, t + 1.3, epoch=8)
    assert c.state is LeaseState.HELD and c.epoch == 8


def test_release_is_sent_three_times_unless_answered() -> None:
    c = LeaseClient(P)
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.0)
    c.drain()
    c.release(0.5)
    first = sends(c)
    c.handle_timer(0.75)
    second = sends(c)
    c.on_reply(Reply("web", second[0].req_id, Result.RELEASED, 7), 0.76)
    assert c.drain() == [Released(7)]
    c.handle_timer(1.0)
    assert [r.op for r in first + second] == [Op.RELEASE, Op.RELEASE]
    assert sends(c) == [] and c.get_timer() is None


def test_stale_and_unknown_replies_are_ignored() -> None:
    c = LeaseClient(P)
    assert not c.on_reply(Reply("web", 999, Result.RENEWED, 1, ttl=3.0), 0.0)
    assert c.state is LeaseState.IDLE


def test_retries_slow_down_while_the_witness_answers_slowly() -> None:
    """Every try is its own request, so every answer times the witness. At the configured pace
    while it answers fast (or not at all: loss gives no sample), slower while it answers
    slowly, at most a quarter of the TTL: an overloaded witness is not asked again and again."""
    c = LeaseClient(P)
    assert c.retry_after() == 0.25
    c.acquire(0.0)
    grant(c, sends(c)[0], 0.02)
    assert c.retry_after() == 0.25  # 20 ms answers: the floor

    def renew_answered_after(rtt: float, rounds: int, now: float) -> float:
        for _ in range(rounds):
            c.handle_timer(now)
            (renew,) = sends(c)
            grant(c, renew, now + rtt)
            now += 1.0
        return now

    now = renew_answered_after(0.4, 30, 1.0)  # the witness now takes 0.4 s
    assert 0.4 < c.retry_after() <= 0.75
    c.handle_timer(now)
    assert [r.op for r in sends(c)] == [Op.RENEW]
    c.handle_timer(now + 0.3)  # before its answer could be in: not asked again yet
    assert sends(c) == []
    c.handle_timer(now + c.retry_after())
    (renew,) = sends(c)
    grant(c, renew, now + c.retry_after() + 0.01)
    renew_answered_after(0.01, 40, now + 2.0)  # fast again: back to the floor
    assert c.retry_after() == 0.25
