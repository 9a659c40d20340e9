"""Pure builders of the Ethernet frames that announce a virtual IP.

When a VIP moves to this host, every neighbour still caches the old owner's MAC
for it.  The new master therefore sends:

* for IPv4, a gratuitous ARP *request* and a gratuitous ARP *reply* (sender IP =
  target IP = VIP).  Some devices (older switches, some firewalls) only update
  their cache from replies, others only from requests; MetalLB and keepalived
  send both for that reason;
* for IPv6, an unsolicited Neighbor Advertisement (RFC 4861 section 7.2.6) to
  all-nodes with the Override flag set, so caches replace the old entry.

Everything here is pure: bytes in, bytes out, no sockets.  The frames are handed
to :class:`vipd.net.packet.FrameSender`, which writes them to an AF_PACKET
socket unchanged.  Only :mod:`struct` and :mod:`ipaddress` are used so the
module can be tested exhaustively without privileges.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

__all__ = [
    "BROADCAST_MAC",
    "ETH_P_ARP",
    "ETH_P_IPV6",
    "ZERO_MAC",
    "announcement_frames",
    "format_mac",
    "garp_frames",
    "icmpv6_checksum",
    "parse_mac",
    "unsolicited_na",
    "vmac_for",
]

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

# 33:33 + low 32 bits of ff02::1 (RFC 2464 section 7).
_ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
_ALL_NODES = IPv6Address("ff02::1")

_ARP_HTYPE_ETHERNET = 1
_ARP_PTYPE_IPV4 = 0x0800
_ARP_OP_REQUEST = 1
_ARP_OP_REPLY = 2

_IPPROTO_ICMPV6 = 58
_ND_NEIGHBOR_ADVERT = 136
_ND_OPT_TARGET_LL_ADDR = 2
_NA_FLAG_ROUTER = 0x80000000
_NA_FLAG_SOLICITED = 0x40000000
_NA_FLAG_OVERRIDE = 0x20000000

# RFC 5798 section 7.3: 00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID} for IPv6.
_VRRP_OUI_PREFIX = b"\x00\x00\x5e\x00"


_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _check_mac(mac: bytes) -> bytes:
    """Reject anything but 6 bytes, so a bad MAC fails loudly, not on the wire."""
    if not isinstance(mac, bytes | bytearray) or len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {mac!r}")
    return bytes(mac)


def parse_mac(s: str) -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff`` (or ``-`` separated, any case) into 6 bytes.

    Raises ValueError for anything else, so a typo in the config fails at load
    time instead of producing frames with a garbage source address.
    """
    parts = s.strip().replace("-", ":").split(":")
    if len(parts) != 6 or any(len(p) != 2 or not set(p) <= _HEXDIGITS for p in parts):
        raise ValueError(f"not a MAC address: {s!r}")
    return bytes(int(p, 16) for p in parts)


def format_mac(b: bytes) -> str:
    """Format 6 bytes as lower-case ``aa:bb:cc:dd:ee:ff`` (the form ``ip link`` prints)."""
    return ":".join(f"{octet:02x}" for octet in _check_mac(b))


def vmac_for(vrid: int, family: int) -> bytes:
    """Return the RFC 5798 virtual router MAC for ``vrid``.

    ``family`` is 4 or 6 (``socket.AF_INET``/``socket.AF_INET6`` are accepted
    too): 00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6.
    """
    if isinstance(vrid, bool) or not 1 <= vrid <= 255:
        raise ValueError(f"VRID must be 1..255, got {vrid!r}")
    if family in (4, socket.AF_INET):
        kind = 1
    elif family in (6, socket.AF_INET6):
        kind = 2
    else:
        raise ValueError(f"family must be 4 or 6, got {family!r}")
    return _VRRP_OUI_PREFIX + bytes((kind, vrid))


def _ethernet(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """Ethernet II header (no VLAN tag: the kernel adds one for VLAN devices)."""
    return dst + src + struct.pack("!H", ethertype)


def _arp(op: int, mac: bytes, vip: IPv4Address, target_mac: bytes) -> bytes:
    """Ethernet/IPv4 ARP payload (RFC 826) with sender IP = target IP = ``vip``."""
    return struct.pack(
        "!HHBBH6s4s6s4s",
        _ARP_HTYPE_ETHERNET,
        _ARP_PTYPE_IPV4,
        6,
        4,
        op,
        mac,
        vip.packed,
        target_mac,
        vip.packed,
    )


def garp_frames(mac: bytes, vip: IPv4Address) -> list[bytes]:
    """Return ``[gratuitous ARP request, gratuitous ARP reply]`` for ``vip``.

    Both go to the Ethernet broadcast address, from ``mac``, with sender IP =
    target IP = ``vip``.  The request has target MAC 00:00:00:00:00:00 (as RFC
    5227 ARP announcements do); the reply has target MAC ff:ff:ff:ff:ff:ff.
    Frames are 42 bytes: the NIC pads them to the Ethernet minimum, exactly as
    it does for the kernel's own ARP packets.
    """
    mac = _check_mac(mac)
    if not isinstance(vip, IPv4Address):
        raise TypeError(f"garp_frames needs an IPv4Address, got {vip!r}")
    eth = _ethernet(BROADCAST_MAC, mac, ETH_P_ARP)
    return [
        eth + _arp(_ARP_OP_REQUEST, mac, vip, ZERO_MAC),
        eth + _arp(_ARP_OP_REPLY, mac, vip, BROADCAST_MAC),
    ]


def _ones_complement_sum(data: bytes) -> int:
    """16-bit one's complement sum (RFC 1071), odd lengths padded with a zero byte."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += int(word)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum(src: IPv6Address, dst: IPv6Address, icmp: bytes) -> int:
    """ICMPv6 checksum (RFC 4443 section 2.3) over the IPv6 pseudo-header and ``icmp``.

    ``icmp`` must carry zero in its checksum field.
    """
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(icmp), _IPPROTO_ICMPV6)
    # Unlike UDP, ICMPv6 gives 0 no special meaning, so it is sent as is (as the
    # kernel and scapy do).
    return ~_ones_complement_sum(pseudo + icmp) & 0xFFFF


def unsolicited_na(mac: bytes, vip: IPv6Address, *, router: bool = True) -> bytes:
    """Return an unsolicited Neighbor Advertisement for ``vip`` (RFC 4861 7.2.6).

    Ethernet 33:33:00:00:00:01 <- ``mac``; IPv6 ``vip`` -> ff02::1, hop limit 255
    (receivers drop ND with any other hop limit); ICMPv6 type 136 code 0 with
    flags R=``router`` (default 1, a VIP is normally a gateway), S=0 (it was not
    solicited), O=1 (override the cached link-layer address); target ``vip``;
    option 2 (target link-layer address) = ``mac``.
    """
    mac = _check_mac(mac)
    if not isinstance(vip, IPv6Address):
        raise TypeError(f"unsolicited_na needs an IPv6Address, got {vip!r}")
    flags = _NA_FLAG_OVERRIDE | (_NA_FLAG_ROUTER if router else 0)
    option = struct.pack("!BB6s", _ND_OPT_TARGET_LL_ADDR, 1, mac)  # length in units of 8 bytes
    body = struct.pack("!I16s", flags, vip.packed) + option
    unsummed = struct.pack("!BBH", _ND_NEIGHBOR_ADVERT, 0, 0) + body
    checksum = icmpv6_checksum(vip, _ALL_NODES, unsummed)
    icmp = struct.pack("!BBH", _ND_NEIGHBOR_ADVERT, 0, checksum) + body
    ipv6 = struct.pack(
        "!IHBB16s16s",
        6 << 28,  # version 6, traffic class 0, flow label 0
        len(icmp),
        _IPPROTO_ICMPV6,
        255,
        vip.packed,
        _ALL_NODES.packed,
    )
    return _ethernet(_ALL_NODES_MAC, mac, ETH_P_IPV6) + ipv6 + icmp


def announcement_frames(
    mac: bytes, vips: Iterable[IPv4Address | IPv6Address], *, router: bool = True
) -> list[bytes]:
    """All frames announcing ``vips`` at ``mac``, in VIP order.

    Two gratuitous ARP frames per IPv4 VIP, one unsolicited NA per IPv6 VIP.
    """
    frames: list[bytes] = []
    for vip in vips:
        if isinstance(vip, IPv4Address):
            frames.extend(garp_frames(mac, vip))
        elif isinstance(vip, IPv6Address):
            frames.append(unsolicited_na(mac, vip, router=router))
        else:
            raise TypeError(f"not an IPv4Address/IPv6Address: {vip!r}")
    return frames
