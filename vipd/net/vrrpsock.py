"""Raw IP sockets for VRRP (protocol 112), one per interface and address family.

asyncio's datagram endpoints refuse SOCK_RAW, so the daemon registers :meth:`VrrpSocket.fileno`
with ``loop.add_reader`` and calls :meth:`VrrpSocket.receive` until it returns ``None``.

IPv4 is sent with IP_HDRINCL so the source address (which the pseudo-header checksum covers)
and the TTL of 255 (RFC 5798 section 5.1.1.3) are ours, not the routing table's. IPv6 sets the
source per packet with IPV6_PKTINFO and reads the hop limit and destination from ancillary
data; the checksum is computed and verified by the codec rather than the kernel
(IPV6_CHECKSUM), so a bad one is counted instead of vanishing silently.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from vipd.vrrp.packet import (
    GROUP_V4,
    GROUP_V6,
    PROTO_VRRP,
    TTL,
    PacketError,
    ipv4_header,
    parse_ipv4,
)

IPAddress = IPv4Address | IPv6Address

_RECV_SIZE = 65535
_CMSG_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)


class Received(NamedTuple):  # a tuple: one per packet on the hot path
    src: IPAddress
    dst: IPAddress
    ttl: int
    payload: bytes


class Datagram(NamedTuple):
    data: bytes  # IPv4: with its IP header (IP_HDRINCL); IPv6: the VRRP message
    ancillary: list[tuple[int, int, bytes]]  # IPv6: the source address and interface
    address: tuple[str, int] | tuple[str, int, int, int]


class VrrpSocket:
    """A non-blocking raw VRRP socket bound to one interface.

    It joins the VRRP group on the interface (RFC 5798 section 5.1.1.2 / 5.1.2.2) only when
    told to (:meth:`join_group`): a socket that only unicast peers use needs no membership.
    """

    def __init__(self, ifname: str, ifindex: int, family: int) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.family = family
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        sock = socket.socket(af, socket.SOCK_RAW, PROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if family == 4:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
                mreqn = struct.pack("@4s4si", b"\0" * 4, b"\0" * 4, ifindex)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, TTL)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.joined = False

    def join_group(self) -> None:
        """Join the VRRP group on the interface, once (a multicast instance needs it; the
        membership lasts as long as the socket)."""
        if self.joined:
            return
        if self.family == 4:
            join = struct.pack("@4s4si", GROUP_V4.packed, b"\0" * 4, self.ifindex)
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, join)
        else:
            join6 = struct.pack("@16sI", GROUP_V6.packed, self.ifindex)
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, join6)
        self.joined = True

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def prepare(self, message: bytes, src: IPAddress, dst: IPAddress) -> Datagram:
        """Everything :meth:`send` needs for ``message`` from ``src`` to ``dst``: built once
        per advert content, so the hot path only hands bytes to the kernel."""
        if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
            return Datagram(ipv4_header(src, dst, len(message)) + message, [], (str(dst), 0))
        pktinfo = src.packed + struct.pack("@I", self.ifindex)
        return Datagram(
            message,
            [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)],
            (str(dst), 0, 0, self.ifindex),
        )

    def send(self, datagram: Datagram) -> None:
        """Send one prepared VRRP message; OSError (ENOBUFS, ENETDOWN...) is the caller's to
        count."""
        if self.family == 4:
            self._sock.sendto(datagram.data, datagram.address)
        else:
            self._sock.sendmsg([datagram.data], datagram.ancillary, 0, datagram.address)

    def receive(self) -> Received | None:
        """One datagram, or None when the socket is drained. Malformed IP framing raises
        :class:`PacketError` (counted by the caller); the VRRP message itself is not checked
        here."""
        try:
            if self.family == 4:
                datagram = self._sock.recv(_RECV_SIZE)
                src4, dst4, ttl, payload = parse_ipv4(datagram)
                return Received(src4, dst4, ttl, payload)
            data, ancdata, _flags, addr = self._sock.recvmsg(_RECV_SIZE, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return None
        hoplimit = -1
        dst6: IPv6Address | None = None
        for level, kind, value in ancdata:
            if level != socket.IPPROTO_IPV6:
                continue
            if kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                hoplimit = struct.unpack("@i", value[:4])[0]
            elif kind == socket.IPV6_PKTINFO and len(value) >= 16:
                dst6 = IPv6Address(value[:16])
        if dst6 is None:
            raise PacketError("truncated", "no IPV6_PKTINFO")
        src6 = IPv6Address(addr[0].split("%", 1)[0])
        return Received(src6, dst6, hoplimit, data)
