"""The embedded witness's wire format: round trips, every rejection reason, fuzzing, replay guard,
key loading."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vipd.witness import proto
from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.proto import (
    KeyFileError,
    ProtoError,
    RateLimit,
    ReplayGuard,
    Timestamps,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    load_key,
)

KEY = b"k" * 32
TS = 1_700_000_000_000_000_000


def seal(payload: bytes, kind: bytes = b"Q", key: bytes = KEY, header: bytes = b"VW\x01") -> bytes:
    """A datagram with a valid MAC around any payload (what only a key holder can make)."""
    head = header + kind
    return head + hmac.digest(key, head + payload, hashlib.sha256) + payload


def request_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "op": "acquire",
        "lease": "web",
        "node": "lb1",
        "id": 7,
        "ttl": 3.5,
        "epoch": 0,
        "ts": TS,
    }
    body.update(changes)
    return body


def reason(data: bytes, decode: Any = decode_request) -> str:
    with pytest.raises(ProtoError) as info:
        decode(KEY, data)
    return info.value.reason


# ---- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(Op))
def test_request_round_trip(op: Op) -> None:
    request = Request(op=op, lease="web", req_id=12345, ttl=3.25, epoch=42)
    data = encode_request(KEY, request, "lb-1.example", TS)
    assert data[:4] == b"VW\x01Q"
    wire = decode_request(KEY, data)
    assert wire.request == request
    assert (wire.node, wire.ts) == ("lb-1.example", TS)


@pytest.mark.parametrize("result", list(Result))
def test_reply_round_trip(result: Result) -> None:
    reply = Reply(
        lease="web",
        req_id=9,
        result=result,
        epoch=3,
        ttl=1.5,
        remaining=0.75,
        holder="lb2",
        error="unknown lease x",
    )
    wire = decode_reply(KEY, encode_reply(KEY, reply, "lb1", TS))
    assert wire.reply == reply
    assert (wire.node, wire.ts) == ("lb1", TS)


def test_reply_error_text_is_cut_and_made_printable() -> None:
    reply = Reply("web", 1, Result.ERROR, error="line one\nline two" + "x" * 500)
    wire = decode_reply(KEY, encode_reply(KEY, reply, "lb1", TS))
    assert wire.reply.error.startswith("line one line two")
    assert len(wire.reply.error) == proto.MAX_ERROR_LEN


def test_largest_names_fit_in_a_datagram() -> None:
    name = "n" * proto.MAX_NAME_LEN
    big = proto.MAX_INT
    request = Request(Op.RENEW, name, big, proto.MAX_SECONDS, big)
    assert len(encode_request(KEY, request, name, big)) <= proto.MAX_DATAGRAM
    reply = Reply(name, big, Result.ERROR, big, 1e6, 1e6, name, "e" * 500)
    assert len(encode_reply(KEY, reply, name, big)) <= proto.MAX_DATAGRAM


@pytest.mark.parametrize(
    "request_, node",
    [
        (Request(Op.ACQUIRE, "web", 1), "has space"),
        (Request(Op.ACQUIRE, "", 1), "lb1"),
        (Request(Op.ACQUIRE, "web", -1), "lb1"),
        (Request(Op.ACQUIRE, "web", 1, ttl=float("nan")), "lb1"),
        (Request(Op.ACQUIRE, "web", 1, epoch=2**63), "lb1"),
    ],
)
def test_encode_refuses_what_would_not_decode(request_: Request, node: str) -> None:
    with pytest.raises(ValueError):
        encode_request(KEY, request_, node, TS)


# ---- every rejection reason -----------------------------------------------------------------


def test_oversized() -> None:
    assert reason(b"VW\x01Q" + b"x" * 1021) == "oversized"


@pytest.mark.parametrize("data", [b"", b"V", b"VW\x01Q", b"VW\x01Q" + b"m" * 31])
def test_truncated(data: bytes) -> None:
    assert reason(data) == "truncated"


def test_bad_magic() -> None:
    good = encode_request(KEY, Request(Op.ACQUIRE, "web", 1, 3.0), "lb1", TS)
    assert reason(b"XW" + good[2:]) == "bad-magic"


def test_bad_version() -> None:
    assert reason(seal(json.dumps(request_body()).encode(), header=b"VW\x02")) == "bad-version"


def test_bad_kind_a_reply_is_not_a_request_and_back() -> None:
    reply = encode_reply(KEY, Reply("web", 1, Result.RELEASED), "lb1", TS)
    assert reason(reply, decode_request) == "bad-kind"
    request = encode_request(KEY, Request(Op.ACQUIRE, "web", 1, 3.0), "lb1", TS)
    assert reason(request, decode_reply) == "bad-kind"


def test_bad_mac_wrong_key() -> None:
    data = encode_request(b"other key, 16+ bytes", Request(Op.ACQUIRE, "web", 1, 3.0), "lb1", TS)
    assert reason(data) == "bad-mac"


def test_bad_mac_any_changed_byte_after_the_magic() -> None:
    data = encode_request(KEY, Request(Op.RENEW, "web", 1, 3.0, 4), "lb1", TS)
    for i in range(2, len(data)):
        changed = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        assert reason(changed) in ("bad-mac", "bad-version", "bad-kind"), i


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[1,2]", b'"text"', b'{"ttl": NaN}', b"\xff\xfe{}", b"[" * 900],
)
def test_bad_json(payload: bytes) -> None:
    assert reason(seal(payload)) == "bad-json"


@pytest.mark.parametrize(
    "changes",
    [
        {"op": "steal"},
        {"op": ["acquire"]},
        {"lease": ""},
        {"lease": "has space"},
        {"lease": "x" * 65},
        {"node": 7},
        {"node": "tab\there"},
        {"id": True},
        {"id": -1},
        {"id": 1.0},
        {"id": 2**63},
        {"ttl": "3"},
        {"ttl": -0.5},
        {"ttl": 1e7},
        {"ttl": 10**400},
        {"epoch": None},
        {"ts": "now"},
    ],
)
def test_bad_field(changes: dict[str, Any]) -> None:
    assert reason(seal(json.dumps(request_body(**changes)).encode())) == "bad-field"


@pytest.mark.parametrize("missing", ["op", "lease", "node", "id", "ttl", "epoch", "ts"])
def test_bad_field_missing(missing: str) -> None:
    body = request_body()
    del body[missing]
    assert reason(seal(json.dumps(body).encode())) == "bad-field"


def test_infinite_ttl_spelled_as_a_huge_float_is_a_bad_field() -> None:
    payload = json.dumps(request_body(ttl=1.0)).replace('"ttl": 1.0', '"ttl": 1e999')
    assert reason(seal(payload.encode())) == "bad-field"


def test_bad_reply_fields() -> None:
    good = json.loads(encode_reply(KEY, Reply("web", 1, Result.GRANTED, 2, 3.0), "lb1", TS)[36:])
    for field, value in [("result", "maybe"), ("holder", "a b"), ("error", "\x00"), ("ttl", -1)]:
        body = dict(good, **{field: value})
        assert reason(seal(json.dumps(body).encode(), b"R"), decode_reply) == "bad-field", field


# ---- fuzzing: garbage only ever raises ProtoError -------------------------------------------


@given(st.binary(max_size=1100))
def test_fuzz_garbage(data: bytes) -> None:
    for decode in (decode_request, decode_reply):
        with pytest.raises(ProtoError) as info:
            decode(KEY, data)
        assert info.value.reason in proto.REASONS


@given(st.binary(max_size=1100), st.sampled_from([b"VW\x01Q", b"VW\x01R"]))
def test_fuzz_garbage_behind_a_valid_header(tail: bytes, header: bytes) -> None:
    for decode in (decode_request, decode_reply):
        with pytest.raises(ProtoError):
            decode(KEY, header + tail)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ("op", "lease", "node", "id", "ttl", "epoch", "ts", "result", "remaining", "holder")
field_values = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | st.sampled_from(["acquire", "renew", "release", "granted", "lb1"])
        for name in (*FIELDS, "error")
    },
)


@given(field_values)
def test_fuzz_authenticated_bodies(body: dict[str, Any]) -> None:
    """A key holder sending nonsense: decoding succeeds with valid types, or raises ProtoError."""
    payload = json.dumps(body).encode()
    for kind, decode in ((b"Q", decode_request), (b"R", decode_reply)):
        data = seal(payload, kind)
        try:
            wire = decode(KEY, data)
        except ProtoError as exc:
            assert exc.reason in proto.REASONS
            continue
        assert isinstance(wire.node, str) and isinstance(wire.ts, int)


def test_every_truncation_of_a_valid_datagram_is_rejected() -> None:
    data = encode_request(KEY, Request(Op.ACQUIRE, "web", 5, 3.0), "lb1", TS)
    for cut in range(len(data)):
        with pytest.raises(ProtoError):
            decode_request(KEY, data[:cut])


# ---- replay protection ----------------------------------------------------------------------


def test_timestamps_strictly_increase_even_if_the_wall_clock_goes_back() -> None:
    wall = iter([100, 100, 50, 200])
    stamps = Timestamps(lambda: next(wall))
    assert [stamps.next() for _ in range(4)] == [100, 101, 102, 200]


def test_replay_guard_accepts_each_timestamp_once_in_order() -> None:
    guard = ReplayGuard(window_ns=30 * 10**9)
    guard.check("lb1", "web", TS, TS)
    guard.check("lb1", "web", TS + 1, TS)
    for old in (TS + 1, TS):
        with pytest.raises(ProtoError) as info:
            guard.check("lb1", "web", old, TS)
        assert info.value.reason == "replay"
    # Other nodes and other leases have their own sequence.
    guard.check("lb2", "web", TS, TS)
    guard.check("lb1", "db", TS, TS)


@pytest.mark.parametrize("offset_s", [-31, 31])
def test_replay_guard_rejects_timestamps_outside_the_window(offset_s: int) -> None:
    guard = ReplayGuard(window_ns=30 * 10**9)
    with pytest.raises(ProtoError) as info:
        guard.check("lb1", "web", TS + offset_s * 10**9, TS)
    assert info.value.reason == "stale"
    guard.check("lb1", "web", TS + 29 * 10**9, TS)  # inside: fine


def test_replay_guard_pruning_never_readmits_a_replay() -> None:
    guard = ReplayGuard(window_ns=10)
    guard.check("lb1", "web", 1000, 1000)
    for i in range(ReplayGuard._PRUNE_AT + 1):  # many nodes, later: prunes lb1's old entry
        guard.check(f"n{i}", "web", 2000, 2000)
    with pytest.raises(ProtoError) as info:
        guard.check("lb1", "web", 1000, 2000)
    assert info.value.reason == "stale"
    with pytest.raises(ProtoError) as info:
        guard.check("n0", "web", 2000, 2000)
    assert info.value.reason == "replay"


def test_rate_limit() -> None:
    limit = RateLimit(burst=2, period=10.0)
    assert [limit.allow("x", 0.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("y", 1.0)
    assert limit.allow("x", 10.0)


# ---- key file -------------------------------------------------------------------------------


def test_load_key_strips_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"  0123456789abcdef0123\n")
    assert load_key(path) == b"0123456789abcdef0123"


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "is empty"), (b" \n", "is empty"), (b"short\n", "5 bytes")]
)
def test_load_key_rejects_empty_or_short(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as info:
        load_key(path)
    assert str(path) in str(info.value)


def test_load_key_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read") as info:
        load_key(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
