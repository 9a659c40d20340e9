"""VRRPv3 advertisement codec (RFC 5798 section 5, receive checks of section 7.1).

Pure: bytes and addresses in, an :class:`Advert` or bytes out. Nothing here reads a socket or a
clock. Every way a packet from the network can be wrong surfaces as :class:`PacketError` with a
short, stable ``reason`` that the daemon uses as a counter label; no other exception escapes
:func:`decode` for any input.

The IPv4 checksum is ambiguous in RFC 5798: keepalived and FRR include the IPv4 pseudo-header
(the default here, for interoperability), RFC 9568 and several vendors checksum the VRRP
message alone. IPv6 always uses the pseudo-header (RFC 5798 section 5.2.8).
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

PROTO_VRRP = 112
VERSION = 3
TYPE_ADVERTISEMENT = 1
HEADER_LEN = 8
TTL = 255
MAX_ADVER_INT_CS = 0x0FFF  # 12 bits of centiseconds (RFC 5798 section 5.2.7)
MAX_ADDRESSES = 255  # the Count IPvX Addr field is one octet

GROUP_V4 = IPv4Address("224.0.0.18")
GROUP_V6 = IPv6Address("ff02::12")

_HEADER = struct.Struct("!BBBBHH")


class ChecksumMode(enum.Enum):
    """How the IPv4 checksum is computed; IPv6 always includes the pseudo-header."""

    PSEUDO_HEADER = "pseudo-header"
    MESSAGE_ONLY = "message-only"


class PacketError(Exception):
    """A received packet failed a check; ``reason`` names which (a metric label)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRPv3 advertisement, as sent or as received (after all checks passed)."""

    vrid: int
    priority: int
    max_adver_int: int  # centiseconds
    addresses: tuple[IPAddress, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid must be 1..255, got {self.vrid}")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority must be 0..255, got {self.priority}")
        if not 1 <= self.max_adver_int <= MAX_ADVER_INT_CS:
            raise ValueError(f"max_adver_int must be 1..{MAX_ADVER_INT_CS} cs")
        if len(self.addresses) > MAX_ADDRESSES:
            raise ValueError(f"at most {MAX_ADDRESSES} addresses fit in one advert")
        if len({a.version for a in self.addresses}) > 1:
            raise ValueError("an advert carries addresses of one family only")


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 one's-complement checksum of ``data`` (plus an already summed prefix)."""
    return ~_fold(initial + _sum16(data)) & 0xFFFF


def _pseudo_header_sum(src: IPAddress, dst: IPAddress, length: int) -> int:
    if isinstance(src, IPv4Address):
        return _sum16(src.packed + dst.packed + struct.pack("!BBH", 0, PROTO_VRRP, length))
    return _sum16(src.packed + dst.packed + struct.pack("!IxxxB", length, PROTO_VRRP))


def vrrp_checksum(
    message: bytes,
    src: IPAddress,
    dst: IPAddress,
    mode: ChecksumMode = ChecksumMode.PSEUDO_HEADER,
) -> int:
    """Checksum of a VRRP message whose checksum field is zero (or verify: 0 means valid)."""
    if isinstance(src, IPv4Address) and mode is ChecksumMode.MESSAGE_ONLY:
        return internet_checksum(message)
    return internet_checksum(message, _pseudo_header_sum(src, dst, len(message)))


def encode(
    advert: Advert,
    src: IPAddress,
    dst: IPAddress,
    mode: ChecksumMode = ChecksumMode.PSEUDO_HEADER,
) -> bytes:
    """The VRRP message (no IP header) for ``advert`` sent from ``src`` to ``dst``."""
    if any(a.version != src.version for a in advert.addresses) or src.version != dst.version:
        raise ValueError("source, destination and advertised addresses must share a family")
    body = b"".join(a.packed for a in advert.addresses)
    header = _HEADER.pack(
        (VERSION << 4) | TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(advert.addresses),
        advert.max_adver_int & MAX_ADVER_INT_CS,
        0,
    )
    message = header + body
    checksum = vrrp_checksum(message, src, dst, mode)
    return message[:6] + struct.pack("!H", checksum) + body


def decode(
    message: bytes,
    src: IPAddress,
    dst: IPAddress,
    ttl: int,
    mode: ChecksumMode = ChecksumMode.PSEUDO_HEADER,
) -> Advert:
    """Validate a received VRRP message per RFC 5798 section 7.1 and return the advert.

    ``ttl`` is the IPv4 TTL or IPv6 hop limit the packet arrived with. The VRID check (is this
    VRID configured here?) belongs to the caller, who knows the instances; address-list
    mismatches are a misconfiguration to log, not a reason to drop (section 7.1, item 8).
    """
    if ttl != TTL:
        raise PacketError("ttl", f"TTL/hop limit {ttl}, must be {TTL}")
    if len(message) < HEADER_LEN:
        raise PacketError("truncated", f"{len(message)} bytes, header is {HEADER_LEN}")
    ver_type, vrid, priority, count, rsvd_int, _ = _HEADER.unpack_from(message)
    if ver_type >> 4 != VERSION:
        raise PacketError("version", f"version {ver_type >> 4}")
    if ver_type & 0x0F != TYPE_ADVERTISEMENT:
        raise PacketError("type", f"type {ver_type & 0x0F}")
    if src.version != dst.version:
        raise PacketError("family", "source and destination families differ")
    size = 4 if isinstance(src, IPv4Address) else 16
    if len(message) != HEADER_LEN + count * size:
        raise PacketError("length", f"{len(message)} bytes for {count} IPv{src.version} addresses")
    if vrid == 0:
        raise PacketError("vrid", "VRID 0")
    if vrrp_checksum(message, src, dst, mode) != 0:
        raise PacketError("checksum", f"bad checksum 0x{message[6]:02x}{message[7]:02x}")
    max_adver_int = rsvd_int & MAX_ADVER_INT_CS
    if max_adver_int == 0:
        raise PacketError("interval", "Max Adver Int 0")
    make = _ipv4 if size == 4 else _ipv6
    addresses = tuple(
        make(message[HEADER_LEN + i * size : HEADER_LEN + (i + 1) * size]) for i in range(count)
    )
    return Advert(vrid, priority, max_adver_int, addresses)


# The same few addresses arrive in every advert: building ipaddress objects from their bytes is
# a measurable share of a backup's CPU at short intervals, so remember them (bounded).
@functools.lru_cache(maxsize=4096)
def _ipv4(raw: bytes) -> IPv4Address:
    return IPv4Address(raw)


@functools.lru_cache(maxsize=4096)
def _ipv6(raw: bytes) -> IPv6Address:
    return IPv6Address(raw)


def parse_ipv4(datagram: bytes) -> tuple[IPv4Address, IPv4Address, int, bytes]:
    """Split a raw IPv4 datagram (as a SOCK_RAW socket returns it): src, dst, TTL, payload."""
    if len(datagram) < 20:
        raise PacketError("truncated", "shorter than an IPv4 header")
    ihl = (datagram[0] & 0x0F) * 4
    if datagram[0] >> 4 != 4 or ihl < 20 or len(datagram) < ihl:
        raise PacketError("truncated", "bad IPv4 header")
    total = struct.unpack_from("!H", datagram, 2)[0]
    if total < ihl or total > len(datagram):
        raise PacketError("truncated", f"IPv4 total length {total}, have {len(datagram)}")
    if datagram[9] != PROTO_VRRP:
        raise PacketError("protocol", f"IP protocol {datagram[9]}")
    return (
        _ipv4(datagram[12:16]),
        _ipv4(datagram[16:20]),
        datagram[8],
        datagram[ihl:total],
    )


@functools.lru_cache(maxsize=1024)
def ipv4_header(src: IPv4Address, dst: IPv4Address, payload_len: int) -> bytes:
    """An IPv4 header for a VRRP message (TTL 255, DSCP CS6 like keepalived); the kernel
    fills in the ID and header checksum when they are zero (IP_HDRINCL)."""
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xC0,
        20 + payload_len,
        0,
        0,
        TTL,
        PROTO_VRRP,
        0,
        src.packed,
        dst.packed,
    )
