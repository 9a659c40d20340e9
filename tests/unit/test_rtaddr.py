"""The address requests vipd builds itself (vipd.net.rtaddr), read back by pyroute2's decoder as
the oracle, and the parser of the kernel's answers. What the kernel makes of the requests is
tests/integration/test_addrs.py's."""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import ip_interface
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from vipd.net.rtaddr import (
    INFINITY_LIFE_TIME,
    RTM_DELADDR,
    RTM_NEWADDR,
    address_request,
    parse_ack,
)

NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400


def decoded(data: bytes) -> Any:
    msg = ifaddrmsg(data)
    msg.decode()
    assert msg["header"]["length"] == len(data)
    return msg


def test_an_ipv4_vip_with_broadcast_label_and_lifetime() -> None:
    vip = ip_interface("192.0.2.100/24")
    msg = decoded(
        address_request(RTM_NEWADDR, 7, 3, vip, broadcast=True, label="eth0:vip", lifetime=2)
    )
    header = msg["header"]
    assert (header["type"], header["sequence_number"]) == (RTM_NEWADDR, 7)
    assert header["flags"] == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    assert (msg["family"], msg["prefixlen"], msg["flags"], msg["index"]) == (
        socket.AF_INET,
        24,
        0,
        3,
    )
    assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == "192.0.2.100"
    assert msg.get_attr("IFA_BROADCAST") == "192.0.2.255"
    assert msg.get_attr("IFA_LABEL") == "eth0:vip"
    cache = msg.get_attr("IFA_CACHEINFO")
    assert (cache["ifa_preferred"], cache["ifa_valid"]) == (2, 2)
    assert msg.get_attr("IFA_FLAGS") is None


def test_an_ipv6_vip_without_dad_for_ever() -> None:
    vip = ip_interface("2001:db8::100/64")
    msg = decoded(address_request(RTM_NEWADDR, 1, 9, vip, flags=0x02))
    assert (msg["family"], msg["prefixlen"], msg["flags"], msg["index"]) == (
        socket.AF_INET6,
        64,
        0x02,
        9,
    )
    assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == "2001:db8::100"
    assert msg.get_attr("IFA_FLAGS") == 0x02
    assert msg.get_attr("IFA_BROADCAST") is None and msg.get_attr("IFA_LABEL") is None
    cache = msg.get_attr("IFA_CACHEINFO")
    assert cache["ifa_valid"] == cache["ifa_preferred"] == INFINITY_LIFE_TIME


def test_a_deletion_names_the_address_only() -> None:
    msg = decoded(address_request(RTM_DELADDR, 4, 2, ip_interface("198.51.100.7/32"), lifetime=5))
    assert msg["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK
    assert msg["prefixlen"] == 32
    assert [name for name, _ in msg["attrs"]] == ["IFA_LOCAL", "IFA_ADDRESS"]
    with pytest.raises(ValueError):
        address_request(18, 1, 1, ip_interface("192.0.2.1/24"))


def answer(seq: int, code: int, kind: int = 2) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 16, RTM_NEWADDR, 5, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def test_the_kernel_answers() -> None:
    assert parse_ack(answer(3, 0), 3) == 0
    assert parse_ack(answer(3, errno.EADDRNOTAVAIL), 3) == errno.EADDRNOTAVAIL
    assert parse_ack(answer(2, 0), 3) is None  # an earlier request's
    assert parse_ack(answer(2, errno.EEXIST) + answer(3, errno.ENODEV), 3) == errno.ENODEV
    assert parse_ack(b"", 3) is None
    with pytest.raises(ValueError, match="truncated"):
        parse_ack(answer(3, 0)[:20], 3)
    short_error = struct.pack("=IHHII", 18, 2, 0, 3, 0) + b"\0\0"
    with pytest.raises(ValueError, match="truncated netlink error"):
        parse_ack(short_error, 3)


@given(st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_garbage_is_no_answer_or_a_value_error(data: bytes, seq: int) -> None:
    try:
        code = parse_ack(data, seq)
    except ValueError:
        return
    assert code is None or isinstance(code, int)
