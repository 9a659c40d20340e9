"""The guard's netlink request and its message protocol, without a kernel (the namespace test
is tests/integration/test_guard.py)."""

from __future__ import annotations

import socket

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from vipd.net.guard_proc import deladdr_message, record


@pytest.mark.parametrize(
    ("family", "address", "prefixlen", "attrs"),
    [
        (socket.AF_INET, "192.0.2.100", 24, ("IFA_LOCAL", "IFA_ADDRESS")),
        (socket.AF_INET, "198.51.100.7", 32, ("IFA_LOCAL", "IFA_ADDRESS")),
        (socket.AF_INET6, "2001:db8::100", 64, ("IFA_ADDRESS",)),
    ],
)
def test_deladdr_message_encodes_as_pyroute2_does(
    family: int, address: str, prefixlen: int, attrs: tuple[str, ...]
) -> None:
    oracle = ifaddrmsg()
    oracle["family"], oracle["prefixlen"], oracle["index"] = family, prefixlen, 7
    oracle["attrs"] = [(name, address) for name in attrs]
    oracle["header"]["type"] = 21  # RTM_DELADDR
    oracle["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    oracle["header"]["sequence_number"] = 3
    oracle.encode()
    entry = record(family, prefixlen, 7, socket.inet_pton(family, address))
    assert deladdr_message(entry, 3) == bytes(oracle.data)
