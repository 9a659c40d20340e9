"""atheris (libFuzzer) targets for every parser of untrusted bytes; the long-running companion of
tests/unit/test_fuzz.py. See fuzz/README.md.

    python fuzz/targets.py TARGET [CORPUS_DIR] [libFuzzer options, e.g. -max_total_time=60]

TARGET is one of vrrp, witness, peer, control, config. Each feeds the input to its parser and
accepts only the parser's documented error; anything else propagates, and libFuzzer reports it
as a crash and writes the input to ``crash-*`` for replay (``python fuzz/targets.py TARGET
crash-FILE``). With a CORPUS_DIR that is empty, valid examples are written into it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import sys
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports():
    from vipd import control
    from vipd.config import ConfigError, parse_config
    from vipd.fence import peer
    from vipd.vrrp import packet
    from vipd.witness import proto
    from vipd.witness.base import Op, Reply, Request, Result

KEY = b"fuzz-key-0123456789abcdef"
TS = 1_700_000_000_000_000_000


def seal(payload: bytes, kind: bytes) -> bytes:
    head = proto.MAGIC + bytes([proto.VERSION]) + kind
    return head + hmac.digest(KEY, head + payload, hashlib.sha256) + payload


def authenticated(data: bytes, kinds: bytes) -> bytes:
    """First byte odd: MAC the rest as a datagram of one of ``kinds`` (reach the JSON and field
    checks behind the MAC); even: the rest as it is."""
    if len(data) >= 2 and data[0] & 1:
        i = data[1] % len(kinds)
        return seal(data[2:], kinds[i : i + 1])
    return data[1:]


# --------------------------------------------------------------------------- targets


def vrrp(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    v6 = fdp.ConsumeBool()
    ttl = 255 if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 255)
    mode = (
        packet.ChecksumMode.MESSAGE_ONLY if fdp.ConsumeBool() else packet.ChecksumMode.PSEUDO_HEADER
    )
    if v6:
        src: Any = IPv6Address(fdp.ConsumeBytes(16).ljust(16, b"\0"))
        dst: Any = packet.GROUP_V6 if fdp.ConsumeBool() else IPv4Address("192.0.2.1")
    else:
        src = IPv4Address(fdp.ConsumeBytes(4).ljust(4, b"\0"))
        dst = packet.GROUP_V4
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    with contextlib.suppress(packet.PacketError):
        packet.decode(rest, src, dst, ttl, mode)
    try:
        s, d, t, payload = packet.parse_ipv4(rest)
        packet.decode(payload, s, d, t, mode)
    except packet.PacketError:
        pass


def witness(data: bytes) -> None:
    datagram = authenticated(data, proto.KIND_REQUEST + proto.KIND_REPLY)
    for decode in (proto.decode_request, proto.decode_reply):
        try:
            decode(KEY, datagram)
        except proto.ProtoError as exc:
            assert exc.reason in proto.REASONS, exc.reason


def peer_channel(data: bytes) -> None:
    datagram = authenticated(data, peer.KIND_PING + peer.KIND_CONFIRM)
    try:
        message = peer.decode(KEY, datagram)
    except proto.ProtoError as exc:
        assert exc.reason in proto.REASONS, exc.reason
    else:
        assert isinstance(message, peer.Ping | peer.Confirm)


class StubDaemon:
    def status(self) -> dict[str, Any]:
        return {"node": "stub", "instances": []}

    async def failover(self, instance: str | None, force: bool, timeout: float) -> Any:
        if instance not in (None, "web"):
            raise control.ControlError(f"no instance {instance!r}")
        return {"handed_over": True}

    def maintenance(self, on: bool, instance: str | None) -> Any:
        if instance not in (None, "web"):
            raise control.ControlError(f"no instance {instance!r}")
        return {"maintenance": on}

    async def reload(self) -> Any:
        return {"reloaded": True}

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        yield {"event": "none"}


_loop = asyncio.new_event_loop()
_server = control.ControlServer("/nonexistent/vipd.sock", StubDaemon())


def control_request(data: bytes) -> None:
    request = control.parse(data)
    if isinstance(request, str):
        return
    assert request["cmd"] in control.COMMANDS
    if request["cmd"] == "events":
        return
    answer = _loop.run_until_complete(_server.answer(request))
    assert isinstance(answer.get("ok"), bool)


def config(data: bytes) -> None:
    try:
        parse_config(data.decode("utf-8", "replace"), "fuzz.toml")
    except ConfigError as exc:
        assert exc.issues


TARGETS: dict[str, Callable[[bytes], None]] = {
    "vrrp": vrrp,
    "witness": witness,
    "peer": peer_channel,
    "control": control_request,
    "config": config,
}


# --------------------------------------------------------------------------- seeds


def seeds(target: str) -> list[bytes]:
    if target == "vrrp":
        adv = packet.Advert(51, 150, 100, (IPv4Address("192.0.2.100"),))
        src = IPv4Address("192.0.2.11")
        msg = packet.encode(adv, src, packet.GROUP_V4)
        head = b"\x00\x01\x00" + src.packed  # v4, ttl 255, pseudo-header, src
        return [head + msg, head + packet.ipv4_header(src, packet.GROUP_V4, len(msg)) + msg]
    if target == "witness":
        req = proto.encode_request(KEY, Request(Op.ACQUIRE, "web", 7, 3.5, 0), "lb1", TS)
        rep = proto.encode_reply(KEY, Reply("web", 7, Result.GRANTED, 3, 3.5), "lb1", TS)
        return [b"\x00" + req, b"\x00" + rep, b"\x01\x00" + req[36:], b"\x01\x01" + rep[36:]]
    if target == "peer":
        ping = peer.encode_ping(KEY, peer.Ping("web", "lb1", 5, IPv4Address("192.0.2.11")))
        conf = peer.encode_confirm(KEY, peer.Confirm("web", "lb2", 5, 0.3, True))
        return [b"\x00" + ping, b"\x00" + conf, b"\x01\x00" + ping[36:], b"\x01\x01" + conf[36:]]
    if target == "control":
        return [
            b'{"cmd": "status"}\n',
            b'{"cmd": "failover", "instance": "web", "force": false, "timeout": 30}\n',
            b'{"cmd": "maintenance", "on": true, "instance": null}\n',
            b'{"cmd": "reload"}\n',
        ]
    return [
        b'[daemon]\nnode_name = "lb1"\n\n[[instance]]\nname = "web"\ninterface = "eth0"\n'
        b'vrid = 51\npriority = 150\nadvert_interval = 0.1\nvips = ["192.0.2.100/24"]\n'
    ]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [CORPUS] [libFuzzer options]")
    target = sys.argv.pop(1)
    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None and corpus.is_dir() and not any(corpus.iterdir()):
        for i, seed in enumerate(seeds(target)):
            (corpus / f"seed-{i}").write_bytes(seed)
    fn = TARGETS[target]
    for seed in seeds(target):
        fn(seed)  # the seeds themselves must pass
    atheris.Setup(sys.argv, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
