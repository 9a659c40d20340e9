"""Fuzzing every parser that reads untrusted bytes (issue 6), with Hypothesis.

The only outcome allowed for garbage is the parser's documented error, never another exception:

- VRRP adverts (:func:`vipd.vrrp.packet.decode`, :func:`~vipd.vrrp.packet.parse_ipv4`):
  :class:`~vipd.vrrp.packet.PacketError` (the daemon drops and counts it by ``reason``);
- embedded witness datagrams (:func:`vipd.witness.proto.decode_request`,
  :func:`~vipd.witness.proto.decode_reply`) and the peer channel (:func:`vipd.fence.peer.decode`):
  :class:`~vipd.witness.proto.ProtoError` with a reason from ``REASONS``;
- control socket requests (:func:`vipd.control.parse`, then
  :meth:`vipd.control.ControlServer.answer` with a stub daemon): an answer dict, an error answer
  (``{"ok": false, "error": str}``) for anything but a well-formed known command, and garbage
  never reaches the daemon;
- configuration text (:func:`vipd.config.parse_config`): :class:`~vipd.config.ConfigError`.

Inputs are built three ways: raw random bytes; valid messages with bytes flipped, cut or
appended; and, for the authenticated formats, well-MAC'd datagrams around random bodies, so the
fuzzing reaches past the HMAC check into the JSON and field checks. The longer, coverage-guided
runs are the atheris targets under ``fuzz/`` (see fuzz/README.md). Keep this file fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vipd import config as config_mod
from vipd.config import ConfigError, DaemonConfig, parse_config
from vipd.control import COMMANDS, ControlError, ControlServer, parse
from vipd.fence import peer
from vipd.vrrp import packet
from vipd.vrrp.packet import Advert, ChecksumMode, PacketError
from vipd.witness import proto
from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.proto import ProtoError

KEY = b"fuzz-key-0123456789abcdef"
TS = 1_700_000_000_000_000_000
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- helpers

ipv4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes flipped, a slice cut out or garbage inserted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut" and data:
            i = draw(st.integers(0, len(data) - 1))
            j = draw(st.integers(i, min(len(data), i + 8)))
            del data[i:j]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def seal(payload: bytes, kind: bytes, key: bytes = KEY) -> bytes:
    """A datagram with a valid MAC around any payload: only a key holder could send it, but the
    decoders must still refuse it cleanly."""
    head = proto.MAGIC + bytes([proto.VERSION]) + kind
    return head + hmac.digest(key, head + payload, hashlib.sha256) + payload


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
# Bodies close to real ones: the real field names, each with a value of any JSON type.
REQUEST_FIELDS = ("op", "lease", "node", "id", "ttl", "epoch", "ts")
REPLY_FIELDS = (
    "lease",
    "node",
    "id",
    "ts",
    "result",
    "epoch",
    "ttl",
    "remaining",
    "holder",
    "error",
)
PEER_FIELDS = ("lease", "node", "seq", "primary", "promise", "ready")
plausible = (
    json_values
    | st.sampled_from([*[str(o) for o in Op], *[str(r) for r in Result]])
    | st.sampled_from(["web", "lb1", "", " ", "a" * 65, "192.0.2.1", "::1", "fe80::1%eth0"])
    | st.sampled_from([0, -1, 2**63 - 1, 2**63, 1e999, -1e999, 1e6, 1e6 + 1, True, 3.5])
)


def bodies(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(fields) | st.text(max_size=6), plausible, max_size=len(fields) + 2
    )


def payloads(fields: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    as_json = bodies(fields).map(lambda b: json.dumps(b).encode())
    return (
        as_json
        | st.binary(max_size=200)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.sampled_from([b"NaN", b"Infinity", b'{"a": NaN}', b"[" * 5000, b'"\\ud800"'])
    )


# --------------------------------------------------------------------------- VRRP adverts


def vrrp_decodes_or_packet_error(
    message: bytes, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, ttl: int
) -> None:
    for mode in ChecksumMode:
        try:
            advert = packet.decode(message, src, dst, ttl, mode)
        except PacketError as exc:
            assert exc.reason and isinstance(exc.reason, str)
        else:
            assert isinstance(advert, Advert)


@FAST
@given(st.binary(max_size=80), ipv4 | ipv6, ipv4 | ipv6, st.integers(0, 255))
def test_vrrp_decode_random_bytes(message: bytes, src: Any, dst: Any, ttl: int) -> None:
    vrrp_decodes_or_packet_error(message, src, dst, ttl)


@st.composite
def valid_adverts(draw: st.DrawFn) -> tuple[bytes, Any, Any]:
    v6 = draw(st.booleans())
    addr = ipv6 if v6 else ipv4
    advert = Advert(
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        max_adver_int=draw(st.integers(1, packet.MAX_ADVER_INT_CS)),
        addresses=tuple(draw(st.lists(addr, max_size=4))),
    )
    src = draw(addr)
    dst = packet.GROUP_V6 if v6 else packet.GROUP_V4
    return packet.encode(advert, src, dst), src, dst


@FAST
@given(st.data())
def test_vrrp_decode_mutated_adverts(data: st.DataObject) -> None:
    message, src, dst = data.draw(valid_adverts())
    assert isinstance(packet.decode(message, src, dst, packet.TTL), Advert)
    vrrp_decodes_or_packet_error(data.draw(mutated(message)), src, dst, packet.TTL)


@FAST
@given(st.binary(max_size=120))
def test_parse_ipv4_random_datagrams(datagram: bytes) -> None:
    ipv4_parses_or_packet_error(datagram)


def ipv4_parses_or_packet_error(datagram: bytes) -> None:
    try:
        src, dst, ttl, payload = packet.parse_ipv4(datagram)
    except PacketError:
        return
    vrrp_decodes_or_packet_error(payload, src, dst, ttl)


@FAST
@given(st.data())
def test_parse_ipv4_mutated_datagrams(data: st.DataObject) -> None:
    message, src, dst = data.draw(valid_adverts())
    assume(isinstance(src, IPv4Address))
    datagram = packet.ipv4_header(src, dst, len(message)) + message
    ipv4_parses_or_packet_error(data.draw(mutated(datagram)))


# --------------------------------------------------------------------------- witness wire format


def witness_decodes_or_proto_error(data: bytes) -> None:
    for decode in (proto.decode_request, proto.decode_reply):
        try:
            decode(KEY, data)
        except ProtoError as exc:
            assert exc.reason in proto.REASONS


@FAST
@given(st.binary(max_size=1100))
def test_witness_decode_random_bytes(data: bytes) -> None:
    witness_decodes_or_proto_error(data)


@FAST
@given(st.sampled_from([proto.KIND_REQUEST, proto.KIND_REPLY]), payloads(REQUEST_FIELDS))
def test_witness_decode_authenticated_garbage_requests(kind: bytes, payload: bytes) -> None:
    witness_decodes_or_proto_error(seal(payload, kind))


@FAST
@given(payloads(REPLY_FIELDS))
def test_witness_decode_authenticated_garbage_replies(payload: bytes) -> None:
    witness_decodes_or_proto_error(seal(payload, proto.KIND_REPLY))


@FAST
@given(st.data())
def test_witness_decode_mutated_valid_datagrams(data: st.DataObject) -> None:
    request = Request(Op.ACQUIRE, "web", 7, 3.5, 0)
    reply = Reply("web", 7, Result.REFUSED, epoch=4, remaining=1.5, holder="lb2")
    base = data.draw(
        st.sampled_from(
            [
                proto.encode_request(KEY, request, "lb1", TS),
                proto.encode_reply(KEY, reply, "lb1", TS),
            ]
        )
    )
    witness_decodes_or_proto_error(data.draw(mutated(base)))


# --------------------------------------------------------------------------- peer channel


def peer_decodes_or_proto_error(data: bytes) -> None:
    try:
        message = peer.decode(KEY, data)
    except ProtoError as exc:
        assert exc.reason in proto.REASONS
    else:
        assert isinstance(message, peer.Ping | peer.Confirm)


@FAST
@given(st.binary(max_size=300))
def test_peer_decode_random_bytes(data: bytes) -> None:
    peer_decodes_or_proto_error(data)


@FAST
@given(
    st.sampled_from([peer.KIND_PING, peer.KIND_CONFIRM, b"Q", b"R", b"X"]), payloads(PEER_FIELDS)
)
def test_peer_decode_authenticated_garbage(kind: bytes, payload: bytes) -> None:
    peer_decodes_or_proto_error(seal(payload, kind))


@FAST
@given(st.data())
def test_peer_decode_mutated_valid_datagrams(data: st.DataObject) -> None:
    base = data.draw(
        st.sampled_from(
            [
                peer.encode_ping(KEY, peer.Ping("web", "lb1", 5, IPv4Address("192.0.2.11"))),
                peer.encode_confirm(KEY, peer.Confirm("web", "lb2", 5, 0.3, True)),
            ]
        )
    )
    peer_decodes_or_proto_error(data.draw(mutated(base)))


# --------------------------------------------------------------------------- control socket


class StubDaemon:
    """Stands in for the daemon: records what reached it, refuses unknown instances the way the
    daemon does (ControlError, answered as an error)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def status(self) -> dict[str, Any]:
        self.calls.append(("status", ()))
        return {"node": "stub", "instances": []}

    async def failover(self, instance: str | None, force: bool, timeout: float) -> Any:
        self.calls.append(("failover", (instance, force, timeout)))
        assert instance is None or isinstance(instance, str)
        assert isinstance(force, bool) and 0 < timeout <= 600
        if instance not in (None, "web"):
            raise ControlError(f"no instance {instance!r}")
        return {"instance": "web", "handed_over": True}

    def maintenance(self, on: bool, instance: str | None) -> Any:
        self.calls.append(("maintenance", (on, instance)))
        assert isinstance(on, bool)
        if instance not in (None, "web"):
            raise ControlError(f"no instance {instance!r}")
        return {"maintenance": on}

    async def reload(self) -> Any:
        self.calls.append(("reload", ()))
        return {"reloaded": True}

    async def events(self) -> AsyncIterator[dict[str, Any]]:  # not reached: streams only
        yield {"event": "none"}


def handle(line: bytes) -> dict[str, Any]:
    """What the server answers to one request line (``events`` only acknowledged: it streams)."""
    daemon = StubDaemon()
    server = ControlServer("/nonexistent/vipd.sock", daemon)
    request = parse(line)
    if isinstance(request, str):
        answer: dict[str, Any] = {"ok": False, "error": request}
        assert daemon.calls == []  # garbage never reaches the daemon
    elif request["cmd"] == "events":
        answer = {"ok": True, "result": "streaming"}
    else:
        assert request["cmd"] in COMMANDS
        answer = asyncio.run(server.answer(request))
    assert isinstance(answer.get("ok"), bool)
    if answer["ok"]:
        assert "result" in answer
    else:
        assert isinstance(answer.get("error"), str) and answer["error"]
    json.dumps(answer)  # what the server writes back must be encodable
    return answer


@FAST
@given(st.binary(max_size=300))
def test_control_random_bytes(line: bytes) -> None:
    handle(line)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["cmd", "instance", "force", "timeout", "on"]) | st.text(max_size=6),
        plausible | st.sampled_from([*COMMANDS, "STATUS", "", "web", 30, 0, 601, -1]),
        max_size=5,
    )
    | json_values
)
def test_control_random_json(request: Any) -> None:
    answer = handle(json.dumps(request).encode() + b"\n")
    if not (isinstance(request, dict) and request.get("cmd") in COMMANDS):
        assert answer["ok"] is False


@FAST
@given(st.sampled_from([b"[", b"{", b'{"cmd":', b'{"a":']), st.integers(1, 60_000))
def test_control_deeply_nested_json_gets_an_error_answer(opener: bytes, depth: int) -> None:
    assert handle(opener * depth + b"\n")["ok"] is False


def test_control_known_command_answers() -> None:
    assert handle(b'{"cmd": "status"}\n') == {
        "ok": True,
        "result": {"node": "stub", "instances": []},
    }
    assert handle(b'{"cmd": "failover", "instance": "nope"}\n')["ok"] is False


# --------------------------------------------------------------------------- configuration


def parses_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.issues
        for issue in exc.issues:
            str(issue)
    else:
        assert isinstance(config, DaemonConfig)


toml_scalars = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.floats(allow_nan=True).map(lambda f: repr(f).replace("inf", "inf").lower()),
    st.sampled_from(["true", "false", "nan", "inf", "-inf", "1979-05-27T07:32:00Z", "0x1f"]),
    st.text(max_size=30).map(json.dumps),  # a basic string (JSON escapes are TOML escapes)
    st.sampled_from(
        [
            '"eth0"',
            '"192.0.2.100/24"',
            '"2001:db8::100/64"',
            '"192.0.2.11"',
            '"192.0.2.10:7480"',
            '"http://192.0.2.10:2379"',
            '"embedded"',
            '"etcd"',
            '"hold-with-peer"',
            '"/run/vipd/vipd.sock"',
            '"/nonexistent/key"',
            '"a/b"',
            '"eth0%x"',
            '"224.0.0.18/4"',
            '"::/0"',
            "'lit'",
            "0.1",
            "0.001",
            "1",
            "255",
            "256",
        ]
    ),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=4,
)


def toml_table(keys: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    key = st.sampled_from(keys) | st.sampled_from(["bogus", "vrid ", '"vrid"', "a.b"])
    line = st.tuples(key, toml_values).map(lambda kv: f"{kv[0]} = {kv[1]}")
    return st.lists(line, max_size=len(keys))


@st.composite
def toml_configs(draw: st.DrawFn) -> str:
    """TOML-ish documents over vipd's real tables and keys with random values, sometimes with a
    line of junk: most are valid TOML and reach the semantic checks."""
    parts: list[str] = []
    if draw(st.booleans()):
        parts += ["[daemon]", *draw(toml_table(config_mod._DAEMON_KEYS))]
    if draw(st.booleans()):
        parts += ["[witness]", *draw(toml_table(config_mod._WITNESS_KEYS))]
    for _ in range(draw(st.integers(0, 3))):
        parts += ["[[instance]]", *draw(toml_table(config_mod._INSTANCE_KEYS))]
    if draw(st.integers(0, 4)) == 0:
        junk = draw(st.sampled_from(["[", "[[instance]", "x = ", "= 1", "[daemon]", '"', "\x00"]))
        parts.insert(draw(st.integers(0, len(parts))), junk)
    return "\n".join(parts) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(toml_configs())
def test_config_random_toml(text: str) -> None:
    parses_or_config_error(text)


@FAST
@given(st.text(max_size=300))
def test_config_random_text(text: str) -> None:
    parses_or_config_error(text)


VALID = """\
[daemon]
node_name = "lb1"

[[instance]]
name = "web"
interface = "eth0"
vrid = 51
priority = 150
advert_interval = 0.1
vips = ["192.0.2.100/24"]
"""


@FAST
@given(st.data())
def test_config_mutated_valid_text(data: st.DataObject) -> None:
    assert isinstance(parse_config(VALID), DaemonConfig)
    raw = data.draw(mutated(VALID.encode()))
    parses_or_config_error(raw.decode("utf-8", "replace"))


def test_config_deep_nesting_is_a_config_error() -> None:
    parses_or_config_error("x = " + "[" * 5000 + "]" * 5000 + "\n")
    parses_or_config_error("x = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n")
