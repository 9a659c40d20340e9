"""Frame builders, checked field by field against scapy's dissectors."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from vipd.announce.frames import (
    announcement_frames,
    format_mac,
    garp_frames,
    icmpv6_checksum,
    parse_mac,
    unsolicited_na,
    vmac_for,
)

MAC = bytes.fromhex("020000c0ffee")
MAC_STR = "02:00:00:c0:ff:ee"

macs = st.binary(min_size=6, max_size=6)
v4 = st.ip_addresses(v=4).filter(lambda a: isinstance(a, IPv4Address))
v6 = st.ip_addresses(v=6).filter(lambda a: isinstance(a, IPv6Address))


def _check_garp(frames: list[bytes], mac: bytes, vip: IPv4Address) -> None:
    assert len(frames) == 2
    want = [(1, "00:00:00:00:00:00"), (2, "ff:ff:ff:ff:ff:ff")]
    for frame, (op, hwdst) in zip(frames, want, strict=True):
        pkt = Ether(frame)
        assert pkt.dst == "ff:ff:ff:ff:ff:ff"
        assert pkt.src == format_mac(mac)
        assert pkt.type == 0x0806
        arp = pkt[ARP]
        assert arp.hwtype == 1
        assert arp.ptype == 0x0800
        assert arp.hwlen == 6
        assert arp.plen == 4
        assert arp.op == op
        assert arp.hwsrc == format_mac(mac)
        assert arp.psrc == str(vip)
        assert arp.hwdst == hwdst
        assert arp.pdst == str(vip)
        # Nothing trailing: scapy would put leftovers into a Padding/Raw layer.
        assert len(frame) == 42
        assert bytes(pkt) == frame


def _check_na(frame: bytes, mac: bytes, vip: IPv6Address, router: bool = True) -> None:
    pkt = Ether(frame)
    assert pkt.dst == "33:33:00:00:00:01"
    assert pkt.src == format_mac(mac)
    assert pkt.type == 0x86DD
    ip6 = pkt[IPv6]
    assert ip6.version == 6
    assert ip6.tc == 0
    assert ip6.fl == 0
    assert IPv6Address(ip6.src) == vip
    assert ip6.dst == "ff02::1"
    assert ip6.hlim == 255
    assert ip6.nh == 58
    assert ip6.plen == 32
    na = pkt[ICMPv6ND_NA]
    assert na.type == 136
    assert na.code == 0
    flags = (na.R, na.S, na.O)
    assert flags == (int(router), 0, 1)
    assert IPv6Address(na.tgt) == vip
    opt = pkt[ICMPv6NDOptDstLLAddr]
    assert opt.type == 2
    assert opt.len == 1
    assert opt.lladdr == format_mac(mac)
    assert len(frame) == 14 + 40 + 32
    # Let scapy recompute the checksum from scratch and compare.
    rebuilt = pkt.copy()
    del rebuilt[ICMPv6ND_NA].cksum
    assert Ether(bytes(rebuilt))[ICMPv6ND_NA].cksum == na.cksum
    assert bytes(rebuilt) == frame


def test_garp_frames_fields() -> None:
    vip = IPv4Address("192.0.2.10")
    _check_garp(garp_frames(MAC, vip), MAC, vip)


def test_garp_exact_bytes() -> None:
    request, reply = garp_frames(MAC, IPv4Address("192.0.2.10"))
    assert request == bytes.fromhex(
        "ffffffffffff" "020000c0ffee" "0806"
        "0001" "0800" "06" "04" "0001"
        "020000c0ffee" "c000020a" "000000000000" "c000020a"
    )  # fmt: skip
    assert reply[:20] == request[:20]
    assert reply[20:22] == b"\x00\x02"
    assert reply[32:38] == b"\xff" * 6


def test_unsolicited_na_fields() -> None:
    vip = IPv6Address("2001:db8::10")
    _check_na(unsolicited_na(MAC, vip), MAC, vip)


def test_unsolicited_na_without_router_flag() -> None:
    vip = IPv6Address("2001:db8::10")
    frame = unsolicited_na(MAC, vip, router=False)
    _check_na(frame, MAC, vip, router=False)


def test_unsolicited_na_matches_scapy_built_packet() -> None:
    vip = IPv6Address("2001:db8:1::abcd")
    ref = (
        Ether(dst="33:33:00:00:00:01", src=MAC_STR)
        / IPv6(src=str(vip), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(R=1, S=0, O=1, tgt=str(vip))
        / ICMPv6NDOptDstLLAddr(lladdr=MAC_STR)
    )
    assert unsolicited_na(MAC, vip) == bytes(ref)


def test_icmpv6_checksum_verifies() -> None:
    # Summing a packet including its correct checksum must give 0xffff (RFC 1071).
    vip = IPv6Address("2001:db8::10")
    frame = unsolicited_na(MAC, vip)
    icmp = frame[14 + 40 :]
    assert icmpv6_checksum(vip, IPv6Address("ff02::1"), icmp) == 0


def test_icmpv6_checksum_zero_is_not_mangled() -> None:
    # pseudo-header (all-zero addresses) sums to len + 58; top it up to 0xffff so
    # the complement is 0, which ICMPv6 (unlike UDP) transmits as 0.
    icmp = bytearray(4)
    icmp[2:4] = (0xFFFF - (4 + 58)).to_bytes(2, "big")
    assert icmpv6_checksum(IPv6Address("::"), IPv6Address("::"), bytes(icmp)) == 0


def test_announcement_frames_order_and_count() -> None:
    vips: list[IPv4Address | IPv6Address] = [
        IPv4Address("192.0.2.1"),
        IPv6Address("2001:db8::1"),
        IPv4Address("198.51.100.7"),
    ]
    frames = announcement_frames(MAC, vips)
    assert len(frames) == 5
    _check_garp(frames[0:2], MAC, IPv4Address("192.0.2.1"))
    _check_na(frames[2], MAC, IPv6Address("2001:db8::1"))
    _check_garp(frames[3:5], MAC, IPv4Address("198.51.100.7"))
    assert announcement_frames(MAC, []) == []


def test_announcement_frames_accepts_generator() -> None:
    frames = announcement_frames(MAC, (IPv4Address(f"203.0.113.{i}") for i in range(1, 4)))
    assert len(frames) == 6


@pytest.mark.parametrize("bad", [b"", b"\x00" * 5, b"\x00" * 7])
def test_bad_mac_rejected(bad: bytes) -> None:
    with pytest.raises(ValueError):
        garp_frames(bad, IPv4Address("192.0.2.1"))
    with pytest.raises(ValueError):
        unsolicited_na(bad, IPv6Address("2001:db8::1"))


def test_wrong_family_rejected() -> None:
    with pytest.raises(TypeError):
        garp_frames(MAC, IPv6Address("2001:db8::1"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unsolicited_na(MAC, IPv4Address("192.0.2.1"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        announcement_frames(MAC, ["192.0.2.1"])  # type: ignore[list-item]


def test_parse_and_format_mac() -> None:
    assert parse_mac(MAC_STR) == MAC
    assert parse_mac("02-00-00-C0-FF-EE") == MAC
    assert parse_mac(" 02:00:00:c0:ff:ee\n") == MAC
    assert format_mac(MAC) == MAC_STR
    assert format_mac(bytes.fromhex("00005e000101")) == "00:00:5e:00:01:01"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "02:00:00:c0:ff",
        "02:00:00:c0:ff:ee:01",
        "2:0:0:c0:ff:ee",
        "zz:00:00:c0:ff:ee",
        "0200.00c0.ffee",
        "+2:00:00:c0:ff:ee",
        "02:0 :00:c0:ff:ee",
    ],
)
def test_parse_mac_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_mac(bad)


def test_format_mac_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        format_mac(b"\x01\x02")


def test_vmac_for() -> None:
    assert vmac_for(1, 4) == bytes.fromhex("00005e000101")
    assert vmac_for(255, 4) == bytes.fromhex("00005e0001ff")
    assert vmac_for(42, 6) == bytes.fromhex("00005e00022a")
    assert vmac_for(42, socket.AF_INET) == vmac_for(42, 4)
    assert vmac_for(42, socket.AF_INET6) == vmac_for(42, 6)
    assert format_mac(vmac_for(7, 6)) == "00:00:5e:00:02:07"


@pytest.mark.parametrize(("vrid", "family"), [(0, 4), (256, 4), (-1, 6), (1, 5), (1, 0)])
def test_vmac_for_rejects(vrid: int, family: int) -> None:
    with pytest.raises(ValueError):
        vmac_for(vrid, family)


@given(mac=macs, vip=v4)
def test_garp_property(mac: bytes, vip: IPv4Address) -> None:
    _check_garp(garp_frames(mac, vip), mac, vip)


@given(mac=macs, vip=v6, router=st.booleans())
def test_na_property(mac: bytes, vip: IPv6Address, router: bool) -> None:
    _check_na(unsolicited_na(mac, vip, router=router), mac, vip, router=router)


@given(mac=macs)
def test_mac_roundtrip_property(mac: bytes) -> None:
    assert parse_mac(format_mac(mac)) == mac
    assert parse_mac(format_mac(mac).upper()) == mac


@given(mac=macs, vips=st.lists(st.one_of(v4, v6), max_size=8))
def test_announcement_property(mac: bytes, vips: list[IPv4Address | IPv6Address]) -> None:
    frames = announcement_frames(mac, vips)
    assert len(frames) == sum(2 if v.version == 4 else 1 for v in vips)
    i = 0
    for vip in vips:
        if isinstance(vip, IPv4Address):
            _check_garp(frames[i : i + 2], mac, vip)
            i += 2
        else:
            _check_na(frames[i], mac, vip)
            i += 1


@given(vrid=st.integers(1, 255), family=st.sampled_from([4, 6]))
def test_vmac_property(vrid: int, family: int) -> None:
    mac = vmac_for(vrid, family)
    assert mac[:4] == b"\x00\x00\x5e\x00"
    assert mac[4] == (1 if family == 4 else 2)
    assert mac[5] == vrid
