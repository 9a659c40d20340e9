"""The embedded witness's lease table on synthetic time, its state file, and datagram handling
without sockets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.proto import ReplayGuard, decode_reply, encode_request
from vipd.witness.server import (
    MAX_TTL,
    MIN_TTL,
    LeaseTable,
    Record,
    StateError,
    StateFile,
    WitnessServer,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Disk:
    """An in-memory persist callback that remembers every write, and can be made to fail."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Record]] = []
        self.fail = False

    def __call__(self, records: Mapping[str, Record]) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.writes.append(dict(records))

    @property
    def last(self) -> dict[str, Record]:
        return self.writes[-1]


ids = iter(range(1, 10**6))


def ask(table: LeaseTable, op: Op, node: str, ttl: float = 3.0, epoch: int = 0) -> Reply:
    return table.handle(Request(op, "web", next(ids), ttl, epoch), node).reply


def make(
    clock: Clock, disk: Disk, records: Mapping[str, Record] | None = None, names: str = "web"
) -> LeaseTable:
    return LeaseTable(names.split(), records or {}, disk, clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def disk() -> Disk:
    return Disk()


# ---- grants, refusals, renewals, releases ---------------------------------------------------


def test_grant_is_durable_before_the_reply_and_others_are_refused(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    reply = ask(table, Op.ACQUIRE, "lb1", ttl=3.0)
    assert (reply.result, reply.epoch, reply.ttl) == (Result.GRANTED, 1, 3.0)
    assert disk.last["web"] == Record(epoch=1, holder="lb1", ttl=3.0)

    clock.now += 1.0
    refused = ask(table, Op.ACQUIRE, "lb2")
    assert refused.result is Result.REFUSED
    assert (refused.holder, refused.epoch) == ("lb1", 1)
    assert refused.remaining == pytest.approx(2.0)


def test_holder_acquiring_again_keeps_its_epoch_without_a_write(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    writes = len(disk.writes)
    clock.now += 2.0
    again = ask(table, Op.ACQUIRE, "lb1")
    assert (again.result, again.epoch) == (Result.GRANTED, 1)
    assert len(disk.writes) == writes
    clock.now += 2.5  # 4.5 s after the first grant, 2.5 s after the second
    assert ask(table, Op.ACQUIRE, "lb2").result is Result.REFUSED


def test_renewal_extends_the_lease_and_is_not_written(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    writes = len(disk.writes)
    for _ in range(10):
        clock.now += 2.0
        reply = ask(table, Op.RENEW, "lb1", epoch=1)
        assert (reply.result, reply.epoch, reply.ttl) == (Result.RENEWED, 1, 3.0)
    assert len(disk.writes) == writes
    clock.now += 2.9
    assert ask(table, Op.ACQUIRE, "lb2").result is Result.REFUSED


@pytest.mark.parametrize(("node", "epoch"), [("lb1", 2), ("lb1", 0), ("lb2", 1)])
def test_renewal_of_someone_elses_lease_or_a_wrong_epoch_is_refused(
    clock: Clock, disk: Disk, node: str, epoch: int
) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    reply = ask(table, Op.RENEW, node, epoch=epoch)
    assert (reply.result, reply.holder, reply.epoch) == (Result.REFUSED, "lb1", 1)


def test_renew_after_expiry_with_no_other_grant_keeps_the_epoch(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    clock.now += 60.0
    reply = ask(table, Op.RENEW, "lb1", epoch=1)
    assert (reply.result, reply.epoch) == (Result.RENEWED, 1)
    assert ask(table, Op.ACQUIRE, "lb2").result is Result.REFUSED


def test_after_expiry_another_node_gets_a_higher_epoch_and_the_old_holder_is_fenced(
    clock: Clock, disk: Disk
) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    clock.now += 3.0  # expired exactly now
    reply = ask(table, Op.ACQUIRE, "lb2")
    assert (reply.result, reply.epoch) == (Result.GRANTED, 2)
    assert disk.last["web"] == Record(epoch=2, holder="lb2", ttl=3.0)
    fenced = ask(table, Op.RENEW, "lb1", epoch=1)
    assert (fenced.result, fenced.holder, fenced.epoch) == (Result.REFUSED, "lb2", 2)


def test_expired_holder_acquiring_again_gets_a_new_epoch(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    clock.now += 10.0
    assert ask(table, Op.ACQUIRE, "lb1").epoch == 2


def test_release_frees_the_lease_at_once_and_is_durable(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1", ttl=30.0)
    reply = ask(table, Op.RELEASE, "lb1", epoch=1)
    assert (reply.result, reply.epoch) == (Result.RELEASED, 1)
    assert disk.last["web"] == Record(epoch=1, holder="", ttl=0.0)
    assert ask(table, Op.RENEW, "lb1", epoch=1).result is Result.REFUSED
    granted = ask(table, Op.ACQUIRE, "lb2")
    assert (granted.result, granted.epoch) == (Result.GRANTED, 2)


@pytest.mark.parametrize(("node", "epoch"), [("lb2", 1), ("lb1", 7)])
def test_release_by_a_non_holder_is_answered_and_changes_nothing(
    clock: Clock, disk: Disk, node: str, epoch: int
) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    writes = len(disk.writes)
    assert ask(table, Op.RELEASE, node, epoch=epoch).result is Result.RELEASED
    assert len(disk.writes) == writes
    assert ask(table, Op.ACQUIRE, "lb2").result is Result.REFUSED
    # Idempotent for the holder too.
    assert ask(table, Op.RELEASE, "lb1", epoch=1).result is Result.RELEASED
    assert ask(table, Op.RELEASE, "lb1", epoch=1).result is Result.RELEASED


def test_refusal_when_nobody_holds_names_no_holder(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    reply = ask(table, Op.RENEW, "lb1", epoch=5)
    assert (reply.result, reply.holder, reply.epoch, reply.remaining) == (
        Result.REFUSED,
        "",
        0,
        0.0,
    )


@pytest.mark.parametrize(("asked", "applied"), [(0.0, MIN_TTL), (1e5, MAX_TTL), (2.5, 2.5)])
def test_ttl_is_clamped_and_the_applied_ttl_is_in_the_reply(
    clock: Clock, disk: Disk, asked: float, applied: float
) -> None:
    table = make(clock, disk)
    assert ask(table, Op.ACQUIRE, "lb1", ttl=asked).ttl == applied
    assert ask(table, Op.RENEW, "lb1", ttl=asked, epoch=1).ttl == applied


def test_a_shorter_ttl_never_shortens_what_was_promised(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1", ttl=10.0)
    clock.now += 1.0
    assert ask(table, Op.RENEW, "lb1", ttl=1.0, epoch=1).ttl == 1.0
    clock.now += 8.5  # 9.5 s after the 10 s grant
    assert ask(table, Op.ACQUIRE, "lb2").result is Result.REFUSED
    clock.now += 0.5
    assert ask(table, Op.ACQUIRE, "lb2").result is Result.GRANTED


def test_a_longer_ttl_is_written_before_the_reply(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1", ttl=3.0)
    assert ask(table, Op.RENEW, "lb1", ttl=9.0, epoch=1).ttl == 9.0
    assert disk.last["web"] == Record(epoch=1, holder="lb1", ttl=9.0)
    disk.fail = True
    reply = ask(table, Op.RENEW, "lb1", ttl=20.0, epoch=1)
    assert reply.result is Result.ERROR


def test_no_grant_unless_durable(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    disk.fail = True
    reply = ask(table, Op.ACQUIRE, "lb1")
    assert reply.result is Result.ERROR and "state" in reply.error
    disk.fail = False
    # lb1 was never granted, so lb2 is not refused, and no epoch was handed out twice.
    granted = ask(table, Op.ACQUIRE, "lb2")
    assert (granted.result, granted.epoch) == (Result.GRANTED, 1)


def test_unknown_lease_is_an_error(clock: Clock, disk: Disk) -> None:
    # "old" is in the state file but not served: kept in the file, refused on the wire.
    table = make(clock, disk, {"old": Record(4, "", 0.0)})
    for lease in ("db", "old"):
        reply = table.handle(Request(Op.ACQUIRE, lease, 1, 3.0), "lb1").reply
        assert (reply.result, reply.error) == (Result.ERROR, f"unknown lease {lease}")
    ask(table, Op.ACQUIRE, "lb1")
    assert disk.last["old"] == Record(4, "", 0.0)


# ---- batches: one write for all their changes (group commit) ------------------------------


def test_a_batch_of_grants_is_written_once_before_any_reply(clock: Clock, disk: Disk) -> None:
    names = [f"l{i}" for i in range(50)]
    table = make(clock, disk, names=" ".join(names))
    writes = len(disk.writes)
    outcomes = table.handle_batch(
        (Request(Op.ACQUIRE, name, i, 3.0), "lb2") for i, name in enumerate(names)
    )
    assert [(o.reply.result, o.reply.epoch) for o in outcomes] == [(Result.GRANTED, 1)] * 50
    assert len(disk.writes) == writes + 1
    assert {disk.last[name] for name in names} == {Record(1, "lb2", 3.0)}


def test_renewals_alone_are_not_written(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk, names="web db")
    table.handle_batch((Request(Op.ACQUIRE, name, 1, 3.0), "lb1") for name in ("web", "db"))
    writes = len(disk.writes)
    outcomes = table.handle_batch(
        (Request(Op.RENEW, name, 2, 3.0, epoch=1), "lb1") for name in ("web", "db")
    )
    assert [o.reply.result for o in outcomes] == [Result.RENEWED] * 2
    assert len(disk.writes) == writes


def test_a_batch_that_cannot_be_written_grants_nothing(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk, names="web db")
    assert table.handle(Request(Op.ACQUIRE, "db", 1, 3.0), "lb1").reply.epoch == 1
    disk.fail = True
    outcomes = table.handle_batch(
        [
            (Request(Op.ACQUIRE, "web", 2, 3.0), "lb2"),  # a new holding: not durable
            (Request(Op.ACQUIRE, "web", 3, 3.0), "lb2"),  # its retransmission: rests on it
            (Request(Op.ACQUIRE, "web", 4, 3.0), "lb1"),  # refused (a refusal promises nothing)
            (Request(Op.RENEW, "db", 5, 3.0, epoch=1), "lb1"),  # rests on nothing new
        ]
    )
    results = [o.reply.result for o in outcomes]
    assert results == [Result.ERROR, Result.ERROR, Result.REFUSED, Result.RENEWED]
    assert [o.event for o in outcomes[:2]] == ["state-write-failed"] * 2
    assert "No space left" in outcomes[0].detail
    disk.fail = False
    # Undone: web is free, and epoch 1 was never handed out.
    granted = table.handle(Request(Op.ACQUIRE, "web", 6, 3.0), "lb1").reply
    assert (granted.result, granted.epoch) == (Result.GRANTED, 1)
    assert disk.last["web"] == Record(1, "lb1", 3.0)


def test_a_release_stands_when_its_batch_cannot_be_written(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk)
    ask(table, Op.ACQUIRE, "lb1")
    disk.fail = True
    outcomes = table.handle_batch(
        [
            (Request(Op.RELEASE, "web", 7, epoch=1), "lb1"),
            (Request(Op.ACQUIRE, "web", 8, 3.0), "lb2"),
        ]
    )
    assert [o.reply.result for o in outcomes] == [Result.RELEASED, Result.ERROR]
    assert outcomes[0].event == "lease-released" and "No space left" in outcomes[0].detail
    disk.fail = False
    granted = ask(table, Op.ACQUIRE, "lb2")
    assert (granted.result, granted.epoch) == (Result.GRANTED, 2)
    assert disk.last["web"] == Record(2, "lb2", 3.0)


# ---- persistence and restart ----------------------------------------------------------------


def test_restart_grace_holder_keeps_renewing_others_wait_full_ttl(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    clock = Clock(1000.0)
    table = LeaseTable(["web"], state.load(), state.save, clock)
    table.save()
    ask(table, Op.ACQUIRE, "lb1", ttl=5.0)
    clock.now += 6.0
    assert ask(table, Op.ACQUIRE, "lb2", ttl=5.0).epoch == 2

    clock = Clock(50.0)  # a new process: the clock's origin means nothing across restarts
    table = LeaseTable(["web"], state.load(), state.save, clock)
    clock.now += 4.0
    refused = ask(table, Op.ACQUIRE, "lb1")
    assert (refused.result, refused.holder, refused.epoch) == (Result.REFUSED, "lb2", 2)
    assert refused.remaining == pytest.approx(1.0)
    renewed = ask(table, Op.RENEW, "lb2", ttl=5.0, epoch=2)
    assert (renewed.result, renewed.epoch) == (Result.RENEWED, 2)
    clock.now += 5.0
    granted = ask(table, Op.ACQUIRE, "lb1")
    assert (granted.result, granted.epoch) == (Result.GRANTED, 3)


def test_restart_after_release_is_free_at_once_and_epochs_continue(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    table = LeaseTable(["web"], state.load(), state.save, Clock())
    ask(table, Op.ACQUIRE, "lb1", ttl=30.0)
    ask(table, Op.RELEASE, "lb1", epoch=1)
    table = LeaseTable(["web"], state.load(), state.save, Clock())
    granted = ask(table, Op.ACQUIRE, "lb2")
    assert (granted.result, granted.epoch) == (Result.GRANTED, 2)


def test_state_file_round_trip_is_atomic_and_keeps_every_lease(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(path)
    assert state.load() == {}
    records = {"web": Record(3, "lb1", 2.5), "db": Record(9, "", 0.0)}
    state.save(records)
    assert state.load() == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("[]", '"version": 1'),
        ('{"version": 2, "leases": {}}', '"version": 1'),
        ('{"version": 1}', '"leases" must be an object'),
        ('{"version": 1, "leases": {"web": 3}}', "leases.web must be an object"),
        ('{"version": 1, "leases": {"web": {"epoch": -1, "holder": "", "ttl": 1}}}', "epoch"),
        ('{"version": 1, "leases": {"web": {"epoch": 1.5, "holder": "", "ttl": 1}}}', "epoch"),
        ('{"version": 1, "leases": {"web": {"epoch": 1, "holder": 5, "ttl": 1}}}', "holder"),
        ('{"version": 1, "leases": {"web": {"epoch": 0, "holder": "lb1", "ttl": 1}}}', "epoch 0"),
        ('{"version": 1, "leases": {"web": {"epoch": 1, "holder": "", "ttl": "1"}}}', "ttl"),
        ('{"version": 1, "leases": {"a b": {"epoch": 1, "holder": "", "ttl": 1}}}', "name"),
    ],
)
def test_corrupt_state_file_is_refused_and_left_alone(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateError, match="refusing to start") as info:
        StateFile(path).load()
    assert str(path) in str(info.value)
    assert problem in str(info.value)
    assert path.read_text() == content


def test_unreadable_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # exists, cannot be read as a file (works as root too)
    with pytest.raises(StateError, match="cannot read"):
        StateFile(path).load()


def test_a_second_witness_cannot_use_the_same_state(tmp_path: Path) -> None:
    first = StateFile(tmp_path / "state.json")
    first.lock()
    with pytest.raises(StateError, match="in use by another vipd witness"):
        StateFile(tmp_path / "state.json").lock()


# ---- datagrams ------------------------------------------------------------------------------

KEY = b"0123456789abcdef-witness"
WALL = 1_700_000_000 * 10**9
PEER = ("192.0.2.11", 40000)


def make_server(disk: Disk, clock: Clock) -> WitnessServer:
    table = LeaseTable(["web"], {}, disk, clock)
    return WitnessServer(KEY, table, ReplayGuard(), wall_ns=lambda: WALL, clock=clock)


def test_server_answers_an_authenticated_request_echoing_node_id_and_ts(
    clock: Clock, disk: Disk
) -> None:
    server = make_server(disk, clock)
    data = encode_request(KEY, Request(Op.ACQUIRE, "web", 77, 3.0), "lb1", WALL)
    answer = server.handle(data, PEER)
    assert answer is not None
    wire = decode_reply(KEY, answer)
    assert (wire.node, wire.ts, wire.reply.req_id) == ("lb1", WALL, 77)
    assert (wire.reply.result, wire.reply.epoch) == (Result.GRANTED, 1)
    assert server.counters["request.acquire"] == 1
    assert server.counters["reply.granted"] == 1


def test_server_answers_a_batch_with_one_write(clock: Clock, disk: Disk) -> None:
    table = make(clock, disk, names="a b c")
    server = WitnessServer(KEY, table, ReplayGuard(), wall_ns=lambda: WALL, clock=clock)
    writes = len(disk.writes)
    datagrams = [
        (encode_request(KEY, Request(Op.ACQUIRE, name, i, 3.0), "lb1", WALL + i), PEER)
        for i, name in enumerate("abc")
    ]
    datagrams.insert(1, (b"garbage", PEER))
    replies = server.handle_batch(datagrams)
    assert [decode_reply(KEY, data).reply.lease for data, _ in replies] == ["a", "b", "c"]
    assert len(disk.writes) == writes + 1
    assert (server.counters["batches"], server.counters["reply.granted"]) == (1, 3)
    assert server.counters["drop.bad-magic"] == 1


def test_server_drops_and_counts_bad_datagrams(clock: Clock, disk: Disk) -> None:
    server = make_server(disk, clock)
    good = encode_request(KEY, Request(Op.ACQUIRE, "web", 1, 3.0), "lb1", WALL)
    assert server.handle(good, PEER) is not None
    bad = {
        "replay": good,
        "stale": encode_request(KEY, Request(Op.ACQUIRE, "web", 2, 3.0), "lb2", WALL - 10**12),
        "bad-mac": encode_request(b"x" * 16, Request(Op.ACQUIRE, "web", 3, 3.0), "lb1", WALL + 1),
        "truncated": good[:20],
        "oversized": good + b" " * 1024,
        "bad-magic": b"GET / HTTP/1.0\r\n\r\n" * 3,
    }
    for data in bad.values():
        assert server.handle(data, PEER) is None
    assert {k: v for k, v in server.counters.items() if k.startswith("drop.")} == {
        f"drop.{reason}": 1 for reason in bad
    }
    assert server.counters["rx"] == 1 + len(bad)
    # Still serving, and the refused ones changed nothing.
    next_one = encode_request(KEY, Request(Op.RENEW, "web", 4, 3.0, 1), "lb1", WALL + 2)
    answer = server.handle(next_one, PEER)
    assert answer is not None and decode_reply(KEY, answer).reply.result is Result.RENEWED


def test_server_answers_unknown_lease_with_an_error_and_counts_it(clock: Clock, disk: Disk) -> None:
    server = make_server(disk, clock)
    data = encode_request(KEY, Request(Op.ACQUIRE, "db", 1, 3.0), "lb1", WALL)
    answer = server.handle(data, PEER)
    assert answer is not None
    reply = decode_reply(KEY, answer).reply
    assert (reply.result, reply.error) == (Result.ERROR, "unknown lease db")
    assert server.counters["unknown-lease"] == 1


def test_state_file_on_disk_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateFile(path).save({"web": Record(2, "lb1", 3.0)})
    assert json.loads(path.read_text()) == {
        "version": 1,
        "leases": {"web": {"epoch": 2, "holder": "lb1", "ttl": 3.0}},
    }
