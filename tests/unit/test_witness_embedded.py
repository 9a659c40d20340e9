"""EmbeddedBackend against a fake witness on loopback: only verified replies to requests it is
waiting for are delivered; everything else is counted; send() never raises."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import asyncio_dgram
import pytest

from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.embedded import EmbeddedBackend
from vipd.witness.proto import decode_request, encode_reply, encode_request

KEY = b"0123456789abcdef-embedded"
WAIT = 30.0


class Replies:
    def __init__(self) -> None:
        self.got: list[Reply] = []
        self.event = asyncio.Event()

    def __call__(self, reply: Reply) -> None:
        self.got.append(reply)
        self.event.set()

    async def next(self) -> Reply:
        await asyncio.wait_for(self.event.wait(), WAIT)
        self.event.clear()
        return self.got[-1]


def test_only_verified_expected_replies_are_delivered() -> None:
    async def scenario() -> None:
        fake = await asyncio_dgram.bind(("127.0.0.1", 0))
        other = await asyncio_dgram.bind(("127.0.0.1", 0))
        backend = EmbeddedBackend(fake.sockname[:2], KEY, "lb1")
        replies = Replies()
        await backend.start(replies)

        backend.send(Request(Op.ACQUIRE, "web", 1, 3.0))
        data, client = await asyncio.wait_for(fake.recv(), WAIT)
        wire = decode_request(KEY, data)
        assert (wire.node, wire.request) == ("lb1", Request(Op.ACQUIRE, "web", 1, 3.0))

        good = Reply("web", 1, Result.GRANTED, epoch=4, ttl=3.0)
        ts = wire.ts
        bad: list[tuple[Any, bytes]] = [
            (fake, encode_reply(KEY, dataclasses.replace(good, req_id=2), "lb1", ts)),
            (fake, encode_reply(KEY, good, "lb1", ts + 1)),  # not the ts we sent
            (fake, encode_reply(KEY, dataclasses.replace(good, lease="db"), "lb1", ts)),
            (fake, encode_reply(KEY, good, "lb2", ts)),
            (fake, encode_reply(b"wrong key, long enough", good, "lb1", ts)),
            (fake, b"garbage" * 10),
            (fake, encode_request(KEY, Request(Op.ACQUIRE, "web", 1), "lb1", ts)),
            (other, encode_reply(KEY, good, "lb1", ts)),  # right content, wrong source
        ]
        for sock, datagram in bad:
            await sock.send(datagram, client)
        await fake.send(encode_reply(KEY, good, "lb1", ts), client)
        # Loopback keeps order: everything above was handled before this arrives.
        assert await replies.next() == good
        assert replies.got == [good]

        # The same reply again is not waited for any more.
        await fake.send(encode_reply(KEY, good, "lb1", ts), client)
        backend.send(Request(Op.RENEW, "web", 2, 3.0, 4))
        data, _ = await asyncio.wait_for(fake.recv(), WAIT)
        second = decode_request(KEY, data)
        assert second.ts > ts
        renewed = Reply("web", 2, Result.RENEWED, epoch=4, ttl=3.0)
        await fake.send(encode_reply(KEY, renewed, "lb1", second.ts), client)
        assert await replies.next() == renewed
        assert replies.got == [good, renewed]

        c = backend.counters
        assert c["drop.unexpected-reply"] == 4
        for reason in ("wrong-node", "bad-mac", "bad-magic", "bad-kind", "wrong-source"):
            assert c[f"drop.{reason}"] == 1, reason
        assert (c["sent"], c["received"], c["reply.granted"], c["reply.renewed"]) == (2, 11, 1, 1)
        await backend.close()
        fake.close()
        other.close()

    asyncio.run(scenario())


def test_requests_of_different_leases_with_the_same_req_id_are_both_answered() -> None:
    # Each lease's core numbers its own requests from 1: a mass takeover sends many "id 1"s.
    async def scenario() -> None:
        fake = await asyncio_dgram.bind(("127.0.0.1", 0))
        backend = EmbeddedBackend(fake.sockname[:2], KEY, "lb1")
        replies = Replies()
        await backend.start(replies)
        leases = [f"vi{i}" for i in range(5)]
        for lease in leases:
            backend.send(Request(Op.ACQUIRE, lease, 1, 3.0))
        received = [await asyncio.wait_for(fake.recv(), WAIT) for _ in leases]
        for data, client in received:
            wire = decode_request(KEY, data)
            granted = Reply(wire.request.lease, 1, Result.GRANTED, epoch=1, ttl=3.0)
            await fake.send(encode_reply(KEY, granted, "lb1", wire.ts), client)

        async def all_handled() -> None:
            while len(replies.got) + backend.counters["drop.unexpected-reply"] < len(leases):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_handled(), WAIT)
        assert sorted(r.lease for r in replies.got) == leases
        assert backend.counters["drop.unexpected-reply"] == 0
        await backend.close()
        fake.close()

    asyncio.run(scenario())


def test_send_never_raises() -> None:
    async def scenario() -> None:
        backend = EmbeddedBackend(("127.0.0.1", 9), KEY, "lb1")
        backend.send(Request(Op.ACQUIRE, "web", 1, 3.0))  # not started
        assert backend.counters["not-open"] == 1
        await backend.start(Replies())
        backend.send(Request(Op.ACQUIRE, "bad name", 2, 3.0))
        assert backend.counters["encode-error"] == 1
        await backend.close()
        backend.send(Request(Op.ACQUIRE, "web", 3, 3.0))
        assert backend.counters["not-open"] == 2

    asyncio.run(scenario())
    # Outside any event loop, too.
    backend = EmbeddedBackend(("127.0.0.1", 9), KEY, "lb1")
    backend.send(Request(Op.ACQUIRE, "web", 1, 3.0))
    assert backend.counters["not-open"] == 1


def test_unusable_witness_address_is_counted_and_retried_without_raising() -> None:
    async def scenario() -> None:
        # A name that fails before any DNS query: a 64-character label.
        backend = EmbeddedBackend(("w" * 64 + ".invalid", 5405), KEY, "lb1")
        await backend.start(Replies())
        assert backend.counters["open-error"] == 1
        backend.send(Request(Op.ACQUIRE, "web", 1, 3.0))
        assert backend.counters["not-open"] == 1
        await asyncio.sleep(1.5)  # one retry of the open (interval 1 s), still failing
        assert backend.counters["open-error"] >= 2
        await backend.close()

    asyncio.run(scenario())


def test_port_out_of_range_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="70000"):
        EmbeddedBackend(("127.0.0.1", 70000), KEY, "lb1")
