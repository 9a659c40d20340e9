"""Adding and removing one address: RTM_NEWADDR / RTM_DELADDR on a plain netlink socket, built
with struct, the kernel's answer read the same way.

pyroute2 builds each request through its filter pipeline and nlmsg encoder and waits for the
answer by running an event loop of its own: about 0.8 ms of CPU per address here, on the
thread the daemon's event loop hands it to. A host taking over 100 instances spent about
100 ms adding its VIPs before the last instance's first advert (95-113 ms for 100, idle),
and a fenced master renews every VIP's kernel lifetime about every 0.7 s (fencing.md S4).
These two messages are fixed: a header, four or five attributes and an acknowledgement.
Everything else stays pyroute2's (vipd.net.addrs). The encoder and the answer's parser are
pure, so they are unit-tested; tests/integration/test_addrs.py checks what the kernel makes
of them.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Interface, IPv6Interface

from vipd.net.nlmsg import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGERR,
    NLMSGHDR,
    RTATTR,
    U32,
)

_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, ifindex
_CACHEINFO = struct.Struct("=IIII")  # preferred, valid (seconds), created, updated

RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 3, 4, 6, 8
INFINITY_LIFE_TIME = 0xFFFFFFFF
_RECV_SIZE = 8192  # an acknowledgement, or an error with the request echoed


def _attr(kind: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def address_request(
    kind: int,
    seq: int,
    index: int,
    vip: IPv4Interface | IPv6Interface,
    *,
    broadcast: bool = False,
    label: str | None = None,
    lifetime: int = INFINITY_LIFE_TIME,
    flags: int = 0,
) -> bytes:
    """RTM_NEWADDR (create or replace: an existing address gets the new lifetime) or
    RTM_DELADDR for ``vip`` on interface ``index``, as ``ip address replace|del`` sends it:
    the address as both IFA_LOCAL and IFA_ADDRESS. For RTM_NEWADDR: the subnet's broadcast
    address when ``broadcast`` (IPv4), ``label`` (IPv4), ``lifetime`` seconds as valid and
    preferred lifetime, ``flags`` (IFA_F_*) in the header and as IFA_FLAGS."""
    family = socket.AF_INET if isinstance(vip, IPv4Interface) else socket.AF_INET6
    packed = vip.ip.packed
    attrs = [_attr(IFA_LOCAL, packed), _attr(IFA_ADDRESS, packed)]
    nl_flags = NLM_F_REQUEST | NLM_F_ACK
    if kind == RTM_NEWADDR:
        nl_flags |= NLM_F_CREATE | NLM_F_REPLACE
        if broadcast:
            attrs.append(_attr(IFA_BROADCAST, vip.network.broadcast_address.packed))
        if label is not None:
            attrs.append(_attr(IFA_LABEL, label.encode() + b"\0"))
        attrs.append(_attr(IFA_CACHEINFO, _CACHEINFO.pack(lifetime, lifetime, 0, 0)))
        if flags:
            attrs.append(_attr(IFA_FLAGS, U32.pack(flags)))
    elif kind != RTM_DELADDR:
        raise ValueError(f"not an address request: message type {kind}")
    body = _IFADDRMSG.pack(family, vip.network.prefixlen, flags & 0xFF, 0, index) + b"".join(attrs)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, nl_flags, seq, 0) + body


def parse_ack(data: bytes, seq: int) -> int | None:
    """The kernel's answer to request ``seq`` in one datagram: 0 when it was carried out, else
    its errno; None when the datagram holds no answer to ``seq``. A message that does not
    parse raises ValueError."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _, msg_seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink message at byte {offset}")
        body = offset + NLMSGHDR.size
        if kind == NLMSG_ERROR and msg_seq == seq:
            if length - NLMSGHDR.size < NLMSGERR.size:
                raise ValueError(f"truncated netlink error at byte {body}")
            return -int(NLMSGERR.unpack_from(data, body)[0])
        offset += (length + 3) & ~3
    return None


class AddressSocket:
    """A NETLINK_ROUTE socket for address requests, in the network namespace of the thread that
    creates it (a socket keeps its namespace). One request at a time: send, then read until its
    acknowledgement (the kernel answers an address request before the send returns)."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self._sock.bind((0, 0))
        self._seq = itertools.count(1)

    def request(self, build: Callable[[int], bytes]) -> None:
        """Send the request ``build(seq)`` makes (an :func:`address_request`) and wait for its
        answer; the kernel's refusal raises OSError with its errno."""
        seq = next(self._seq)
        self._sock.send(build(seq))
        while True:
            data = self._sock.recv(_RECV_SIZE)
            if not data:
                raise OSError(errno.EIO, "netlink: the kernel closed the socket")
            try:
                code = parse_ack(data, seq)
            except ValueError as exc:  # the kernel's own message: not expected, never raised
                raise OSError(errno.EIO, f"netlink: {exc}") from exc
            if code is None:
                continue  # the answer to an earlier request that was given up on
            if code:
                raise OSError(code, os.strerror(code))
            return

    def close(self) -> None:
        self._sock.close()
