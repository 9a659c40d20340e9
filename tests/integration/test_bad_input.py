"""Malformed adverts sent at a running pair are dropped and counted, and change no state."""

from __future__ import annotations

import json
import random
import sys
import time
from ipaddress import IPv4Address

import pytest

from vipd.lab.pair import Pair, wait_until
from vipd.vrrp.packet import Advert, encode

from .conftest import PairFactory

pytestmark = pytest.mark.netns

CLIENT = "192.0.2.50"
GROUP = "224.0.0.18"

SENDER = r"""
import json, sys
from scapy.all import Ether, IP, Raw, sendp
for ttl, hexpayload in json.loads(sys.argv[1]):
    ip = IP(src=sys.argv[2], dst=sys.argv[3], ttl=ttl, proto=112)
    frame = Ether(dst="01:00:5e:00:00:12") / ip / Raw(bytes.fromhex(hexpayload))
    sendp(frame, iface="eth0", verbose=False)
"""


def send_raw(pair: Pair, packets: list[tuple[int, bytes]]) -> None:
    spec = json.dumps([(ttl, p.hex()) for ttl, p in packets])
    pair.client.run(sys.executable, "-c", SENDER, spec, CLIENT, GROUP)


def good(priority: int = 254, vrid: int = 51) -> bytes:
    advert = Advert(vrid, priority, 100, (IPv4Address("192.0.2.100"),))
    return encode(advert, IPv4Address(CLIENT), IPv4Address(GROUP))


def test_malformed_adverts_are_dropped_counted_and_change_nothing(
    make_pair: PairFactory,
) -> None:
    pair = make_pair()
    pair.start()
    wait_until(lambda: pair.holders() == ["n1"], 10)
    wait_until(lambda: pair.nodes["n2"].instance()["master_priority"] == 150, 10)
    valid = good()  # priority 254 from the client: would preempt n1 if it were accepted
    bad_checksum = valid[:6] + bytes([valid[6] ^ 0xFF, valid[7]]) + valid[8:]
    cases = {
        "ttl": (64, valid),
        "checksum": (255, bad_checksum),
        "version": (255, bytes([0x21]) + valid[1:]),
        "type": (255, bytes([0x32]) + valid[1:]),
        "truncated": (255, valid[:5]),
        "length": (255, valid[:3] + bytes([2]) + valid[4:]),  # count 2, one address
    }
    send_raw(pair, [case for case in cases.values() for _ in range(3)])
    time.sleep(0.5)
    for name in ("n1", "n2"):
        inst = pair.nodes[name].instance()
        counters = inst["counters"]
        for reason in cases:
            assert counters.get(f"drop:{reason}", 0) == 3, (name, reason, counters)
    assert pair.nodes["n1"].instance()["state"] == "master"
    n2 = pair.nodes["n2"].instance()
    assert (n2["state"], n2["master"], n2["master_priority"]) == ("backup", "192.0.2.11", 150)
    assert pair.holders() == ["n1"]


def test_garbage_flood_keeps_the_daemons_running(make_pair: PairFactory) -> None:
    pair = make_pair()
    pair.start()
    wait_until(lambda: pair.holders() == ["n1"], 10)
    rng = random.Random(5798)
    junk = []
    for _ in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        if rng.random() < 0.5 and len(body) >= 2:
            body = bytes([0x31, 51]) + body[2:]  # aim at the configured VRID
        junk.append((255, body))
    send_raw(pair, junk)
    junk_unknown = [(255, good(vrid=99))]  # a well-formed advert for a VRID nobody runs
    send_raw(pair, junk_unknown)
    time.sleep(0.5)
    for node in pair.nodes.values():
        assert node.proc is not None and node.proc.poll() is None, node.log()
        status = node.status()
        drops = sum(
            v for k, v in status["instances"][0]["counters"].items() if k.startswith("drop:")
        )
        assert drops + sum(status["drops"].values()) >= 300
        assert status["drops"].get("unknown-vrid", 0) >= 1
    assert pair.holders() == ["n1"]
    assert "Traceback" not in pair.nodes["n1"].log()
