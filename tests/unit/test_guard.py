"""The guard's netlink request and its message protocol, without a kernel (the namespace test
is tests/integration/test_guard.py)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from vipd.net.guard_proc import deladdr_message, frame, frames, log_line, record


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


def test_frames_come_off_the_stream_whole_however_it_is_cut() -> None:
    v4 = record(socket.AF_INET, 24, 2, socket.inet_pton(socket.AF_INET, "192.0.2.100"))
    v6 = record(socket.AF_INET6, 64, 2, socket.inet_pton(socket.AF_INET6, "2001:db8::100"))
    stream = frame(b"+", v4) + frame(b"+", v6) + frame(b"-", v4)
    for cut in range(len(stream) + 1):
        buffer = bytearray()
        got = []
        for chunk in (stream[:cut], stream[cut:]):
            buffer += chunk
            got += frames(buffer)
        assert got == [(b"+", v4), (b"+", v6), (b"-", v4)]
        assert not buffer


def test_log_lines_are_json_whatever_the_text() -> None:
    text = 'a "quoted" \\ path\twith\ncontrol \x01 chars and ünïcode'
    line = log_line("vip-guard-remove-failed", vip="2001:db8::1/64", error=text, ifindex=7)
    assert "\n" not in line
    assert json.loads(line) == {
        "event": "vip-guard-remove-failed",
        "logger": "vipd.guard",
        "pid": os.getpid(),
        "vip": "2001:db8::1/64",
        "error": text,
        "ifindex": 7,
    }
