"""VRRPv3 codec: pinned vectors (shared/design/vrrp-notes.md), RFC 5798 section 7.1 checks,
and scapy's VRRPv3 layer as an independent oracle."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRPv3

from vipd.vrrp.packet import (
    Advert,
    ChecksumMode,
    PacketError,
    decode,
    encode,
    ipv4_header,
    parse_ipv4,
)

PSEUDO = ChecksumMode.PSEUDO_HEADER
MSG = ChecksumMode.MESSAGE_ONLY

# (src, dst, vrid, priority, interval cs, addresses, mode, hex) from vrrp-notes.md
VECTORS = [
    ("20.0.0.3", "224.0.0.18", 2, 254, 1, ["20.0.1.2", "20.0.1.3"], PSEUDO,
     "3102fe020001b25e1400010214000103"),
    ("20.0.0.3", "224.0.0.18", 2, 254, 1, ["20.0.1.2", "20.0.1.3"], MSG,
     "3102fe020001a6f41400010214000103"),
    ("2001:db8::1", "ff02::12", 2, 254, 1, ["2001:db8::2", "2001:db8::3"], PSEUDO,
     "3102fe020001481b20010db800000000000000000000000220010db8000000000000000000000003"),
    ("192.0.2.251", "224.0.0.18", 10, 200, 100, ["192.0.2.1", "192.0.2.2"], PSEUDO,
     "310ac8020064defbc0000201c0000202"),
    ("192.0.2.251", "224.0.0.18", 10, 200, 100, ["192.0.2.1", "192.0.2.2"], MSG,
     "310ac8020064828ac0000201c0000202"),
    ("192.0.2.251", "224.0.0.18", 10, 0, 100, ["192.0.2.1", "192.0.2.2"], PSEUDO,
     "310a00020064a6fcc0000201c0000202"),
    ("fe80::c8", "ff02::12", 10, 100, 100, ["fe80::1", "2001:db8::1"], PSEUDO,
     "310a640200643f5dfe80000000000000000000000000000120010db8000000000000000000000001"),
]  # fmt: skip


@pytest.mark.parametrize("src,dst,vrid,prio,cs,addrs,mode,hexstr", VECTORS)
def test_vectors_encode_and_decode(
    src: str, dst: str, vrid: int, prio: int, cs: int, addrs: list[str], mode: ChecksumMode,
    hexstr: str,
) -> None:  # fmt: skip
    advert = Advert(vrid, prio, cs, tuple(ip_address(a) for a in addrs))
    wire = encode(advert, ip_address(src), ip_address(dst), mode)
    assert wire.hex() == hexstr
    assert decode(wire, ip_address(src), ip_address(dst), 255, mode) == advert


def test_malformed_vector_count_without_address_is_discarded() -> None:
    # vrrp-notes.md: "count 1, no address: must be discarded"
    with pytest.raises(PacketError) as err:
        decode(
            bytes.fromhex("3101640100646a1f"),
            IPv4Address("192.0.2.1"),
            IPv4Address("224.0.0.18"),
            255,
        )
    assert err.value.reason == "length"


V4_SRC, V4_DST = IPv4Address("192.0.2.251"), IPv4Address("224.0.0.18")
GOOD = bytes.fromhex("310ac8020064defbc0000201c0000202")


@pytest.mark.parametrize(
    "mutate,ttl,reason",
    [
        (lambda b: b, 254, "ttl"),  # RFC 5798 7.1: TTL must be 255
        (lambda b: b, 1, "ttl"),
        (lambda b: bytes([0x21]) + b[1:], 255, "version"),  # VRRPv2
        (lambda b: bytes([0x32]) + b[1:], 255, "type"),  # type 2
        (lambda b: b[:7], 255, "truncated"),
        (lambda b: b[:-1], 255, "length"),  # count says 2, 7 bytes of addresses
        (lambda b: b + b"\x00" * 4, 255, "length"),
        (lambda b: b[:6] + b"\x00\x00" + b[8:], 255, "checksum"),
        (lambda b: b[:-1] + b"\x03", 255, "checksum"),
    ],
)
def test_receive_checks(mutate: object, ttl: int, reason: str) -> None:
    assert callable(mutate)
    with pytest.raises(PacketError) as err:
        decode(mutate(GOOD), V4_SRC, V4_DST, ttl)
    assert err.value.reason == reason


def test_checksum_mode_mismatch_is_a_checksum_error() -> None:
    with pytest.raises(PacketError) as err:
        decode(GOOD, V4_SRC, V4_DST, 255, MSG)
    assert err.value.reason == "checksum"


def test_pseudo_header_binds_the_source_address() -> None:
    with pytest.raises(PacketError) as err:
        decode(GOOD, IPv4Address("192.0.2.252"), V4_DST, 255)
    assert err.value.reason == "checksum"


def test_ipv4_header_roundtrip() -> None:
    datagram = ipv4_header(V4_SRC, V4_DST, len(GOOD)) + GOOD
    src, dst, ttl, payload = parse_ipv4(datagram)
    assert (src, dst, ttl, payload) == (V4_SRC, V4_DST, 255, GOOD)
    parsed = IP(datagram)
    assert parsed.proto == 112 and parsed.ttl == 255 and parsed.len == len(datagram)


v4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@given(
    vrid=st.integers(1, 255),
    prio=st.integers(0, 255),
    cs=st.integers(1, 4095),
    src=v4,
    addrs=st.lists(v4, min_size=0, max_size=20),
    mode=st.sampled_from(list(ChecksumMode)),
)
def test_ipv4_matches_scapy(
    vrid: int, prio: int, cs: int, src: IPv4Address, addrs: list[IPv4Address], mode: ChecksumMode
) -> None:
    advert = Advert(vrid, prio, cs, tuple(addrs))
    ours = encode(advert, src, V4_DST, mode)
    theirs = VRRPv3(
        vrid=vrid, priority=prio, adv=cs, ipcount=len(addrs), addrlist=[str(a) for a in addrs]
    )
    if mode is PSEUDO:
        wire = bytes(IP(src=str(src), dst=str(V4_DST), ttl=255) / theirs)[20:]
        assert ours == wire
    else:
        parsed = VRRPv3(ours)
        assert (parsed.vrid, parsed.priority, parsed.adv, parsed.ipcount) == (
            vrid,
            prio,
            cs,
            len(addrs),
        )
    assert decode(ours, src, V4_DST, 255, mode) == advert


@given(
    vrid=st.integers(1, 255),
    prio=st.integers(0, 255),
    cs=st.integers(1, 4095),
    src=v6,
    addrs=st.lists(v6, min_size=0, max_size=10),
)
def test_ipv6_matches_scapy(
    vrid: int, prio: int, cs: int, src: IPv6Address, addrs: list[IPv6Address]
) -> None:
    dst = IPv6Address("ff02::12")
    advert = Advert(vrid, prio, cs, tuple(addrs))
    ours = encode(advert, src, dst)
    theirs = VRRPv3(
        vrid=vrid, priority=prio, adv=cs, ipcount=len(addrs), addrlist=[str(a) for a in addrs]
    )
    assert ours == bytes(IPv6(src=str(src), dst=str(dst), hlim=255) / theirs)[40:]
    assert decode(ours, src, dst, 255) == advert


@given(
    data=st.binary(max_size=600), ttl=st.integers(0, 255), mode=st.sampled_from(list(ChecksumMode))
)
def test_garbage_only_ever_raises_packet_error(data: bytes, ttl: int, mode: ChecksumMode) -> None:
    for src, dst in ((V4_SRC, V4_DST), (IPv6Address("fe80::1"), IPv6Address("ff02::12"))):
        with contextlib.suppress(PacketError):
            decode(data, src, dst, ttl, mode)


@given(data=st.binary(max_size=600))
def test_ipv4_datagram_garbage_only_raises_packet_error(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        parse_ipv4(data)
