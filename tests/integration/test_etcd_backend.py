"""The etcd witness backend against a real etcd (started by each test, always torn down).

Timing checks are safety inequalities only ("granted no earlier than the TTL after the last
renewal was sent"); everything else waits for a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vipd.lab.etcd import EtcdProcess, etcd_available, start_etcd, start_loopback_etcd
from vipd.lab.netns import Lab
from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.etcd import HEDGE_AFTER, EtcdBackend

from ..conftest import skip_or_fail

LEASE = "vi_1"
WAIT = 15.0  # generous deadline for anything that should happen "soon"


@pytest.fixture(autouse=True)
def _need_etcd() -> None:
    if not etcd_available():
        skip_or_fail("etcd not on PATH (scripts/install --test installs etcd-server)")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    server = start_loopback_etcd(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


class Node:
    """One EtcdBackend plus the replies it delivered, as the lease core would see them."""

    def __init__(self, endpoints: list[str], node: str, timeout: float = 1.0) -> None:
        self.backend = EtcdBackend(endpoints, node, timeout=timeout)
        self.node = node
        self.replies: list[Reply] = []
        self._changed = asyncio.Event()
        self._next_id = 0

    async def start(self) -> Node:
        await self.backend.start(self._on_reply)
        return self

    def _on_reply(self, reply: Reply) -> None:
        self.replies.append(reply)
        self._changed.set()

    def send(self, op: Op, ttl: float = 0.0, epoch: int = 0, lease: str = LEASE) -> int:
        self._next_id += 1
        self.backend.send(Request(op, lease, self._next_id, ttl=ttl, epoch=epoch))
        return self._next_id

    def reply_to(self, req_id: int) -> Reply | None:
        return next((r for r in self.replies if r.req_id == req_id), None)

    async def wait_for(self, cond: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                try:
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    async def ask(
        self, op: Op, ttl: float = 0.0, epoch: int = 0, lease: str = LEASE, timeout: float = WAIT
    ) -> Reply:
        req_id = self.send(op, ttl=ttl, epoch=epoch, lease=lease)
        await self.wait_for(lambda: self.reply_to(req_id) is not None, timeout)
        reply = self.reply_to(req_id)
        assert reply is not None
        assert reply.lease == lease
        return reply

    async def ask_until_answered(
        self, op: Op, ttl: float = 0.0, epoch: int = 0, every: float = 0.2
    ) -> Reply:
        """Retransmit (new request ids, like the lease core) until one of them is answered; the
        backend drops a retransmit while an earlier one is in flight, so any may be the one."""
        sent: set[int] = set()

        def answered() -> Reply | None:
            return next((r for r in self.replies if r.req_id in sent), None)

        async with asyncio.timeout(WAIT):
            while True:
                sent.add(self.send(op, ttl=ttl, epoch=epoch))
                try:
                    await self.wait_for(lambda: answered() is not None, every)
                except TimeoutError:
                    continue
                reply = answered()
                assert reply is not None
                return reply

    async def close(self) -> None:
        await self.backend.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` in a fresh loop; fail if any task died with an unhandled exception."""
    errors: list[dict[str, Any]] = []

    async def wrapper() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        await main()

    asyncio.run(wrapper())
    assert errors == []


def key_exists(etcd: EtcdProcess, lease: str = LEASE) -> bool:
    body = json.dumps({"key": b64encode(f"/vipd/lease/{lease}".encode()).decode()}).encode()
    req = urllib.request.Request(etcd.client_url + "/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return bool(json.loads(resp.read()).get("kvs"))


def dead_endpoint() -> tuple[socket.socket, str]:
    """A loopback URL that refuses connections (bound, not listening), kept until closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- grants, refusals, renewals, releases -----------------------------------------------------


def test_acquire_refuse_renew_release(etcd: EtcdProcess) -> None:
    async def main() -> None:
        a = await Node(etcd.endpoints, "a").start()
        b = await Node(etcd.endpoints, "b").start()
        try:
            got = await a.ask(Op.ACQUIRE, ttl=2.0)
            assert got.result is Result.GRANTED
            assert got.epoch > 0
            assert got.ttl >= 2.0
            epoch_a = got.epoch

            # A retransmitted acquire by the holder is granted again, same epoch.
            again = await a.ask(Op.ACQUIRE, ttl=2.0)
            assert (again.result, again.epoch) == (Result.GRANTED, epoch_a)

            refused = await b.ask(Op.ACQUIRE, ttl=2.0)
            assert refused.result is Result.REFUSED
            assert (refused.holder, refused.epoch) == ("a", epoch_a)
            assert 0 < refused.remaining <= 3.0

            renewed = await a.ask(Op.RENEW, ttl=2.0, epoch=epoch_a)
            assert (renewed.result, renewed.epoch) == (Result.RENEWED, epoch_a)
            assert renewed.ttl >= 2.0
            assert (await b.ask(Op.ACQUIRE, ttl=2.0)).result is Result.REFUSED

            # Releasing an epoch we do not hold changes nothing (but is answered).
            wrong = await a.ask(Op.RELEASE, epoch=epoch_a + 1000)
            assert wrong.result is Result.RELEASED
            assert (await b.ask(Op.ACQUIRE, ttl=2.0)).result is Result.REFUSED

            released = await a.ask(Op.RELEASE, epoch=epoch_a)
            assert released.result is Result.RELEASED
            assert not key_exists(etcd)
            # Idempotent.
            assert (await a.ask(Op.RELEASE, epoch=epoch_a)).result is Result.RELEASED

            taken = await b.ask(Op.ACQUIRE, ttl=2.0)
            assert taken.result is Result.GRANTED
            assert taken.epoch > epoch_a

            # The old holder is fenced: its renewal is refused with the new holder's epoch.
            fenced = await a.ask(Op.RENEW, ttl=2.0, epoch=epoch_a)
            assert fenced.result is Result.REFUSED
            assert (fenced.holder, fenced.epoch) == ("b", taken.epoch)
            # A stale release by the old holder cannot drop the new holder's lease.
            assert (await a.ask(Op.RELEASE, epoch=epoch_a)).result is Result.RELEASED
            kept = await b.ask(Op.RENEW, ttl=2.0, epoch=taken.epoch)
            assert (kept.result, kept.epoch) == (Result.RENEWED, taken.epoch)
            assert b.backend.counters["unreachable"] == 0
        finally:
            await a.close()
            await b.close()

    run(main)


def test_leases_are_independent_and_ttl_rounds_up(etcd: EtcdProcess) -> None:
    async def main() -> None:
        a = await Node(etcd.endpoints, "a").start()
        b = await Node(etcd.endpoints, "b").start()
        try:
            short = await a.ask(Op.ACQUIRE, ttl=0.3, lease="vi_short")
            assert (short.result, short.ttl) == (Result.GRANTED, 1.0)
            odd = await b.ask(Op.ACQUIRE, ttl=1.2, lease="vi_odd")
            assert (odd.result, odd.ttl) == (Result.GRANTED, 2.0)
            assert odd.epoch > short.epoch
            bad = await a.ask(Op.ACQUIRE, ttl=0.0, lease="vi_zero")
            assert bad.result is Result.ERROR
        finally:
            await a.close()
            await b.close()

    run(main)


def test_expired_lease_is_granted_to_the_other_node_only_after_the_ttl(etcd: EtcdProcess) -> None:
    async def main() -> None:
        a = await Node(etcd.endpoints, "a").start()
        b = await Node(etcd.endpoints, "b").start()
        try:
            got = await a.ask(Op.ACQUIRE, ttl=1.0)
            assert got.result is Result.GRANTED
            ttl = got.ttl
            last_sent = time.monotonic()
            for _ in range(3):
                await asyncio.sleep(0.3)
                last_sent = time.monotonic()
                renewed = await a.ask(Op.RENEW, ttl=1.0, epoch=got.epoch)
                assert renewed.result is Result.RENEWED
                assert renewed.ttl == ttl
            # A stops renewing. B keeps asking until it is granted.
            refusals = 0
            async with asyncio.timeout(ttl + WAIT):
                while True:
                    reply = await b.ask(Op.ACQUIRE, ttl=1.0)
                    if reply.result is Result.GRANTED:
                        granted_at = time.monotonic()
                        break
                    assert reply.result is Result.REFUSED
                    assert (reply.holder, reply.epoch) == ("a", got.epoch)
                    refusals += 1
                    await asyncio.sleep(0.05)
            assert refusals >= 1
            # Safety: never earlier than the TTL after the last renewal was sent.
            assert granted_at - last_sent >= ttl
            assert reply.epoch > got.epoch
            fenced = await a.ask(Op.RENEW, ttl=1.0, epoch=got.epoch)
            assert (fenced.result, fenced.holder, fenced.epoch) == (
                Result.REFUSED,
                "b",
                reply.epoch,
            )
        finally:
            await a.close()
            await b.close()

    run(main)


def test_renewal_of_a_lapsed_lease_reacquires_if_free(etcd: EtcdProcess) -> None:
    async def main() -> None:
        a = await Node(etcd.endpoints, "a").start()
        try:
            got = await a.ask(Op.ACQUIRE, ttl=1.0)
            assert got.result is Result.GRANTED
            async with asyncio.timeout(WAIT):
                while key_exists(etcd):
                    await asyncio.sleep(0.1)
            again = await a.ask(Op.RENEW, ttl=1.0, epoch=got.epoch)
            assert again.result is Result.GRANTED
            assert again.epoch > got.epoch
            assert a.backend.counters["reacquired"] == 1
            renewed = await a.ask(Op.RENEW, ttl=1.0, epoch=again.epoch)
            assert (renewed.result, renewed.epoch) == (Result.RENEWED, again.epoch)
        finally:
            await a.close()

    run(main)


def test_one_request_in_flight_per_lease_and_op(etcd: EtcdProcess) -> None:
    async def main() -> None:
        a = await Node(etcd.endpoints, "a").start()
        try:
            first = a.send(Op.ACQUIRE, ttl=2.0)
            second = a.send(Op.ACQUIRE, ttl=2.0)  # a retransmit while the first is in flight
            other = a.send(Op.ACQUIRE, ttl=2.0, lease="vi_other")  # another lease: not dropped
            await a.wait_for(lambda: a.reply_to(first) is not None)
            await a.wait_for(lambda: a.reply_to(other) is not None)
            assert a.backend.counters["dropped_in_flight"] == 1
            assert a.reply_to(second) is None
            reply = a.reply_to(first)
            assert reply is not None and reply.result is Result.GRANTED
            # Once answered, the next retransmit is served again.
            assert (await a.ask(Op.ACQUIRE, ttl=2.0)).epoch == reply.epoch
        finally:
            await a.close()

    run(main)


def test_a_stalled_renewal_is_hedged_with_a_keepalive(etcd: EtcdProcess) -> None:
    """docs/chaos.md finding 3: a renewal stalled behind a lost TCP segment let the lease run
    out. Here the queued renewal is stalled by holding the lease's queue; a retransmit after
    HEDGE_AFTER goes out as a keepalive on its own and answers with its own request id."""

    async def main() -> None:
        a = await Node(etcd.endpoints, "a").start()
        try:
            granted = await a.ask(Op.ACQUIRE, ttl=2.0)
            async with a.backend._locks[LEASE]:
                first = a.send(Op.RENEW, epoch=granted.epoch)
                early = a.send(Op.RENEW, epoch=granted.epoch)  # too soon to hedge: dropped
                await asyncio.sleep(HEDGE_AFTER + 0.05)
                hedge = a.send(Op.RENEW, epoch=granted.epoch)
                await a.wait_for(lambda: a.reply_to(hedge) is not None)
                assert a.reply_to(first) is None
            reply = a.reply_to(hedge)
            assert reply is not None and reply.result is Result.RENEWED
            assert reply.epoch == granted.epoch and reply.ttl >= 2.0
            await a.wait_for(lambda: a.reply_to(first) is not None)  # the queue goes on
            assert a.reply_to(early) is None
            assert a.backend.counters["hedges"] == 1
            assert a.backend.counters["dropped_in_flight"] == 1
            # Released, the lease is not this node's to extend: a retransmit is not hedged.
            await a.ask(Op.RELEASE, epoch=granted.epoch)
            async with a.backend._locks[LEASE]:
                a.send(Op.RENEW, epoch=granted.epoch)
                await asyncio.sleep(HEDGE_AFTER + 0.05)
                a.send(Op.RENEW, epoch=granted.epoch)
            assert a.backend.counters["hedges"] == 1
        finally:
            await a.close()

    run(main)


# -- etcd failing ---------------------------------------------------------------------------------


def test_etcd_down_means_no_reply_and_back_means_service(etcd: EtcdProcess) -> None:
    async def main() -> None:
        a = await Node(etcd.endpoints, "a", timeout=0.5).start()
        b = await Node(etcd.endpoints, "b", timeout=0.5).start()
        try:
            got = await a.ask(Op.ACQUIRE, ttl=3.0)
            assert got.result is Result.GRANTED

            etcd.stop()  # connection refused
            renew_id = a.send(Op.RENEW, ttl=3.0, epoch=got.epoch)
            acquire_id = b.send(Op.ACQUIRE, ttl=3.0)
            await a.wait_for(lambda: a.backend.counters["unreachable"] >= 1)
            await b.wait_for(lambda: b.backend.counters["unreachable"] >= 1)
            assert a.reply_to(renew_id) is None
            assert b.reply_to(acquire_id) is None
            assert a.backend.reachable is False

            etcd.start()  # same data dir: the key and A's lease survive
            renewed = await a.ask_until_answered(Op.RENEW, ttl=3.0, epoch=got.epoch)
            assert renewed.result in (Result.RENEWED, Result.GRANTED)
            epoch = renewed.epoch
            assert epoch >= got.epoch
            assert a.backend.reachable is True
            refused = await b.ask_until_answered(Op.ACQUIRE, ttl=3.0)
            assert (refused.result, refused.holder, refused.epoch) == (Result.REFUSED, "a", epoch)

            etcd.freeze()  # a hung etcd: requests time out instead of failing fast
            before = a.backend.counters["unreachable"]
            renew_id = a.send(Op.RENEW, ttl=3.0, epoch=epoch)
            await a.wait_for(lambda: a.backend.counters["unreachable"] > before)
            assert a.reply_to(renew_id) is None
            etcd.thaw()
            renewed = await a.ask_until_answered(Op.RENEW, ttl=3.0, epoch=epoch)
            assert (renewed.result, renewed.epoch) == (Result.RENEWED, epoch)
            for node in (a, b):
                assert node.backend.counters["internal_errors"] == 0
                assert node.backend.counters["bad_responses"] == 0
        finally:
            await a.close()
            await b.close()

    run(main)


def test_epochs_keep_rising_across_an_etcd_crash(etcd: EtcdProcess) -> None:
    async def main_before() -> None:
        a = await Node(etcd.endpoints, "a").start()
        try:
            got = await a.ask(Op.ACQUIRE, ttl=2.0)
            assert got.result is Result.GRANTED
            epochs.append(got.epoch)
            assert (await a.ask(Op.RELEASE, epoch=got.epoch)).result is Result.RELEASED
        finally:
            await a.close()

    async def main_after() -> None:
        b = await Node(etcd.endpoints, "b").start()
        try:
            got = await b.ask(Op.ACQUIRE, ttl=2.0)
            assert got.result is Result.GRANTED
            epochs.append(got.epoch)
        finally:
            await b.close()

    epochs: list[int] = []
    run(main_before)
    etcd.kill()
    etcd.start()
    run(main_after)
    assert epochs[1] > epochs[0]


def test_next_endpoint_when_one_fails(etcd: EtcdProcess) -> None:
    sock, dead = dead_endpoint()

    async def main() -> None:
        a = await Node([dead, *etcd.endpoints], "a").start()
        try:
            got = await a.ask(Op.ACQUIRE, ttl=2.0)
            assert got.result is Result.GRANTED
            assert a.backend.counters["endpoint_errors"] >= 1
            assert a.backend.status()["endpoint"] == etcd.client_url
            errors = a.backend.counters["endpoint_errors"]
            # The working endpoint stays current: no more failed attempts.
            assert (await a.ask(Op.RENEW, ttl=2.0, epoch=got.epoch)).result is Result.RENEWED
            assert a.backend.counters["endpoint_errors"] == errors
        finally:
            await a.close()

    try:
        run(main)
    finally:
        sock.close()


def test_send_never_raises_outside_start_and_close() -> None:
    async def main() -> None:
        backend = EtcdBackend(["http://127.0.0.1:9"], "a")
        backend.send(Request(Op.ACQUIRE, LEASE, 1, ttl=1.0))  # not started: dropped
        replies: list[Reply] = []
        await backend.start(replies.append)
        await backend.close()
        backend.send(Request(Op.ACQUIRE, LEASE, 2, ttl=1.0))  # closed: dropped
        assert backend.counters["dropped_not_started"] == 2
        assert replies == []

    run(main)


def test_minimum_ttl_with_default_raft_timing(tmp_path: Path) -> None:
    """etcd's own timing (heartbeat 100 ms, election 1 s) raises a 1 s lease to 2 s."""
    with start_loopback_etcd(tmp_path / "etcd", heartbeat_ms=100, election_ms=1000) as server:
        assert server.min_lease_ttl == 2

        async def main() -> None:
            a = await Node(server.endpoints, "a").start()
            try:
                got = await a.ask(Op.ACQUIRE, ttl=1.0)
                assert (got.result, got.ttl) == (Result.GRANTED, 2.0)
            finally:
                await a.close()

        run(main)


# -- in the namespace lab --------------------------------------------------------------------

CLIENT_SCRIPT = """
import asyncio, dataclasses, json, sys
from vipd.witness.base import Op, Request
from vipd.witness.etcd import HEDGE_AFTER, EtcdBackend

async def main():
    replies = []
    backend = EtcdBackend([sys.argv[1]], sys.argv[2])
    await backend.start(replies.append)
    backend.send(Request(Op.ACQUIRE, "vi_lab", 1, ttl=2.0))
    async with asyncio.timeout(15):
        while not replies:
            await asyncio.sleep(0.01)
    await backend.close()
    print(json.dumps(dataclasses.asdict(replies[0])))

asyncio.run(main())
"""


@pytest.mark.netns
def test_etcd_in_a_lab_host(lab: Lab, tmp_path: Path) -> None:
    witness = lab.add_host("witness", "192.0.2.30/24")
    n1 = lab.add_host("n1", "192.0.2.11/24")
    n2 = lab.add_host("n2", "192.0.2.12/24")
    url = "http://192.0.2.30:2379"
    server = start_etcd(tmp_path / "etcd", url, "http://192.0.2.30:2380", host=witness)
    try:
        assert server.is_healthy()

        def acquire(host: Any, node: str) -> dict[str, Any]:
            script = textwrap.dedent(CLIENT_SCRIPT)
            proc = host.run(sys.executable, "-c", script, url, node)
            assert isinstance(proc, subprocess.CompletedProcess)
            return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

        first = acquire(n1, "n1")
        assert (first["result"], first["holder"]) == ("granted", "")
        second = acquire(n2, "n2")
        assert (second["result"], second["holder"]) == ("refused", "n1")
        assert second["epoch"] == first["epoch"]
    finally:
        server.stop()
