"""Which neighbour entries have been trying to resolve for too long: one RTM_GETNEIGH dump on a
plain netlink socket, read with struct.

pyroute2 decodes every attribute of every entry of a dump into Python objects: about 120 us an
entry here, so 120 ms for a 1000-entry table, while the event loop waited, and a takeover
flushes several times (docs/chaos.md finding 10). The flush needs three fields of the few
entries that are INCOMPLETE; this reads the fixed header of each entry and the attributes of
those few only (the deletions stay pyroute2's: vipd.net.addrs). The parser is pure, so it is
unit-tested on synthetic dumps.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass

from vipd.net.nlmsg import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR,
    NLMSGHDR,
    RTATTR,
    U32,
)

_NDMSG = struct.Struct("=BxxxiHBB")  # family, (padding), ifindex, state, flags, type
_CACHEINFO = struct.Struct("=IIII")  # confirmed, used, updated (USER_HZ ticks ago), refcnt

_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
_NDA_DST, _NDA_CACHEINFO, _NDA_FLAGS_EXT = 1, 3, 15
_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})

NUD_INCOMPLETE = 0x01
NTF_EXT_LEARNED = 0x10
NTF_EXT_MANAGED = 0x01  # in NDA_FLAGS_EXT
USER_HZ = os.sysconf("SC_CLK_TCK")  # the unit of NDA_CACHEINFO's ages
_RECV_SIZE = 1 << 17  # above the largest skb a dump fills


@dataclass(frozen=True)
class Neighbour:
    family: int
    ifindex: int
    address: str


def dump_request(seq: int) -> bytes:
    """RTM_GETNEIGH, NLM_F_DUMP, both families."""
    body = _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), _RTM_GETNEIGH, flags, seq, 0) + body


def parse_unresolved(
    data: bytes, seq: int, indexes: Collection[int], min_age: float, out: list[Neighbour]
) -> bool:
    """Add to ``out`` the entries of one datagram of the dump that are on ``indexes``, have
    been INCOMPLETE for ``min_age`` seconds or more, and were neither learned from nor are
    managed by something else. True once the dump is complete. An error from the kernel
    raises OSError; a message that does not parse raises ValueError."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _, msg_seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink message at byte {offset}")
        body, end = offset + NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3
        if msg_seq != seq:
            continue
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            if end - body < NLMSGERR.size:
                raise ValueError(f"truncated netlink error at byte {body}")
            code = -NLMSGERR.unpack_from(data, body)[0]
            if code:
                raise OSError(code, f"neighbour dump: {os.strerror(code)}")
            continue
        if kind != _RTM_NEWNEIGH or end - body < _NDMSG.size:
            continue
        family, ifindex, state, flags, _ = _NDMSG.unpack_from(data, body)
        if (
            family not in _FAMILIES  # an unspecified dump has the bridges' FDB entries too
            or ifindex not in indexes
            or not state & NUD_INCOMPLETE
            or flags & NTF_EXT_LEARNED
        ):
            continue
        entry = _unresolved(data, body + _NDMSG.size, end, family, ifindex, min_age)
        if entry is not None:
            out.append(entry)
    return False


def _unresolved(
    data: bytes, offset: int, end: int, family: int, ifindex: int, min_age: float
) -> Neighbour | None:
    dst = updated = None
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > end:
            raise ValueError(f"truncated neighbour attribute at byte {offset}")
        value = data[offset + RTATTR.size : offset + length]
        offset += (length + 3) & ~3
        kind &= 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if kind == _NDA_DST:
            dst = value
        elif kind == _NDA_CACHEINFO and len(value) >= _CACHEINFO.size:
            updated = _CACHEINFO.unpack_from(value)[2]
        elif (
            kind == _NDA_FLAGS_EXT
            and len(value) >= U32.size
            and U32.unpack_from(value)[0] & NTF_EXT_MANAGED
        ):
            return None
    if dst is None or updated is None or updated / USER_HZ < min_age:
        return None
    return Neighbour(family, ifindex, socket.inet_ntop(family, dst))


def unresolved_neighbours(indexes: Collection[int], min_age: float) -> list[Neighbour]:
    """Dump the calling thread's namespace's neighbour table and return what
    :func:`parse_unresolved` keeps of it."""
    out: list[Neighbour] = []
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    ) as sock:
        sock.bind((0, 0))
        seq = 1
        sock.send(dump_request(seq))
        while True:
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise OSError(errno.EIO, "neighbour dump: the kernel closed the socket")
            if parse_unresolved(data, seq, indexes, min_age, out):
                return out
