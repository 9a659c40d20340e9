"""vipd.net.neighbours: the RTM_GETNEIGH dump parser, on dumps built here with struct (the
integration test in tests/integration/test_addrs.py runs it against the kernel)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from vipd.net.neighbours import (
    NTF_EXT_LEARNED,
    NTF_EXT_MANAGED,
    NUD_INCOMPLETE,
    USER_HZ,
    Neighbour,
    dump_request,
    parse_unresolved,
)

SEQ = 7
NUD_REACHABLE = 0x02


def attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def message(kind: int, body: bytes, seq: int = SEQ) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, kind, 2, seq, 0) + body + b"\0" * (-length % 4)


def neigh(
    address: str,
    ifindex: int = 2,
    state: int = NUD_INCOMPLETE,
    flags: int = 0,
    age: float = 1.0,
    flags_ext: int | None = None,
    seq: int = SEQ,
) -> bytes:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    body = struct.pack("=BxxxiHBB", family, ifindex, state, flags, 1)
    body += attr(1, socket.inet_pton(family, address))
    body += attr(3, struct.pack("=IIII", 0, 0, round(age * USER_HZ), 1))
    if flags_ext is not None:
        body += attr(15, struct.pack("=I", flags_ext))
    return message(28, body, seq)


DONE = message(3, struct.pack("=i", 0))


def bridge_fdb_entry() -> bytes:
    """What an AF_UNSPEC dump also returns: a bridge's FDB entry (AF_BRIDGE; a VXLAN one names
    its remote in NDA_DST), here with the INCOMPLETE bit set, so the family alone rules it
    out."""
    body = struct.pack("=BxxxiHBB", socket.AF_BRIDGE, 2, NUD_INCOMPLETE, 0, 0)
    body += attr(2, bytes(6)) + attr(1, socket.inet_pton(socket.AF_INET, "192.0.2.99"))
    body += attr(3, struct.pack("=IIII", 0, 0, 10 * USER_HZ, 1))
    return message(28, body)


def parse(data: bytes, indexes: tuple[int, ...] = (2,), min_age: float = 0.1) -> list[Neighbour]:
    out: list[Neighbour] = []
    assert parse_unresolved(data, SEQ, indexes, min_age, out)
    return out


def test_the_request_is_a_dump_of_both_families() -> None:
    request = dump_request(SEQ)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), 30, 0x301, SEQ)
    assert request[16] == socket.AF_UNSPEC


def test_only_old_enough_incomplete_entries_on_the_interfaces_asked_for() -> None:
    dump = b"".join(
        [
            neigh("192.0.2.77"),
            neigh("2001:db8::77"),
            neigh("192.0.2.78", state=NUD_REACHABLE),
            neigh("192.0.2.79", ifindex=3),
            neigh("192.0.2.80", age=0.05),  # a resolution under way
            neigh("192.0.2.81", flags=NTF_EXT_LEARNED),
            neigh("192.0.2.82", flags_ext=NTF_EXT_MANAGED),
            neigh("192.0.2.83", flags_ext=0),
            bridge_fdb_entry(),
            DONE,
        ]
    )
    assert parse(dump) == [
        Neighbour(socket.AF_INET, 2, "192.0.2.77"),
        Neighbour(socket.AF_INET6, 2, "2001:db8::77"),
        Neighbour(socket.AF_INET, 2, "192.0.2.83"),
    ]
    assert [n.address for n in parse(dump, indexes=(2, 3))][2] == "192.0.2.79"


def test_the_dump_spans_datagrams_until_done_and_other_requests_are_skipped() -> None:
    out: list[Neighbour] = []
    first = neigh("192.0.2.77") + neigh("192.0.2.90", seq=SEQ + 1)
    assert not parse_unresolved(first, SEQ, {2}, 0.1, out)
    assert parse_unresolved(neigh("192.0.2.78") + DONE, SEQ, {2}, 0.1, out)
    assert [n.address for n in out] == ["192.0.2.77", "192.0.2.78"]


def test_the_kernel_refusing_the_dump_is_an_oserror() -> None:
    error = message(2, struct.pack("=i", -errno.EPERM) + dump_request(SEQ)[:16])
    with pytest.raises(OSError) as caught:
        parse_unresolved(error, SEQ, {2}, 0.1, [])
    assert caught.value.errno == errno.EPERM


@pytest.mark.parametrize(
    "data",
    [
        neigh("192.0.2.77")[:-3],  # the message runs past the datagram
        struct.pack("=IHHII", 8, 28, 2, SEQ, 0),  # shorter than its own header
        message(28, struct.pack("=BxxxiHBB", 2, 2, NUD_INCOMPLETE, 0, 1) + b"\x40\x00\x01\x00"),
        message(2, b"\xff\xff"),  # an error shorter than its errno
    ],
)
def test_a_message_that_does_not_parse_is_a_valueerror(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_unresolved(data, SEQ, {2}, 0.1, [])
