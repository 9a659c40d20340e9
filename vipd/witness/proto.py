"""Wire format of the embedded witness (``vipd witness``). Pure: no I/O.

One UDP datagram per request or reply, at most :data:`MAX_DATAGRAM` bytes::

    0      2        3       4                36
    | "VW" | version | kind | HMAC-SHA256 (32) | JSON body (UTF-8) ... |

``kind`` is ``Q`` (request, node -> witness) or ``R`` (reply, witness -> node), so a datagram can
never be taken for one going the other way. The MAC is HMAC-SHA256 under the pair's shared key
over everything but the MAC itself (the 4 header bytes, then the body). The body is one compact
JSON object:

- request: ``{"op", "lease", "node", "id", "ttl", "epoch", "ts"}``
- reply: ``{"lease", "node", "id", "ts", "result", "epoch", "ttl", "remaining", "holder",
  "error"}``; ``node``, ``id`` and ``ts`` echo the request's.

Decoding anything that is not a well-formed, authenticated datagram raises :class:`ProtoError`
and nothing else; its ``reason`` (one of :data:`REASONS`) is meant as a counter label.

Replay protection. ``ts`` is the sender's wall clock in nanoseconds, made strictly increasing per
process (:class:`Timestamps`). The witness accepts a request only if ``ts`` is within a window
(default 30 s) of its own wall clock and greater than the last ``ts`` it accepted from that node
for that lease (:class:`ReplayGuard`; keying by lease too costs no protection, since a request
only acts on its own lease, and spares a node with several instances spurious drops when their
datagrams are reordered). The client accepts a reply only if it is addressed to its node and
echoes the ``id`` and ``ts`` of a request it is still waiting for, on the same lease.

Residual risks (documented, accepted):

- The witness does not persist the last timestamps. After a witness restart, a request captured
  in the last window (30 s) can be replayed once. What that can do is bounded by the lease
  semantics: a replayed ``acquire`` or ``renew`` can make the witness grant or extend a lease for
  a node that did not ask (the other node is refused for up to one TTL longer: a delay, never two
  holders, because only the replayed node is named holder and it does not hold the VIP without
  its own grant); a replayed ``release`` names an epoch, and an epoch once released is never
  handed out again, so it cannot drop a lease granted later.
- A node whose wall clock is more than the window away from the witness's gets no answers (its
  requests are dropped as ``stale`` and logged at the witness). A wall clock stepped backwards on
  a node keeps its timestamps increasing, so they run ahead of real time until the clock catches
  up; more than the window ahead, they are dropped as ``stale`` too. Keep clocks synchronised.
- Both nodes share one key: a node that leaks it can impersonate the other and the witness.
- Datagrams are authenticated, not encrypted: lease and node names are visible on the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from vipd.witness.base import Op, Reply, Request, Result

MAGIC: Final = b"VW"
VERSION: Final = 1
KIND_REQUEST: Final = b"Q"
KIND_REPLY: Final = b"R"
HEADER_LEN: Final = 4
MAC_LEN: Final = 32
MAX_DATAGRAM: Final = 1024
MIN_KEY_LEN: Final = 16
MAX_NAME_LEN: Final = 64
MAX_ERROR_LEN: Final = 200
MAX_INT: Final = 2**63 - 1
MAX_SECONDS: Final = 1e6  # ttl/remaining beyond this is nonsense
DEFAULT_WINDOW_NS: Final = 30 * 10**9

REASONS: Final = (
    "oversized",  # longer than MAX_DATAGRAM
    "truncated",  # shorter than the header and MAC
    "bad-magic",  # not a vipd witness datagram
    "bad-version",  # a version we do not speak
    "bad-kind",  # a reply where a request belongs, or the other way round
    "bad-mac",  # not authenticated under our key
    "bad-json",  # authenticated, but the body is not a JSON object
    "bad-field",  # a field missing, of the wrong type or out of range
    "stale",  # timestamp outside the window around our clock
    "replay",  # timestamp not newer than the last one accepted from that node
)


class ProtoError(Exception):
    """A datagram that must be dropped. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class KeyFileError(Exception):
    """The shared key file cannot be used; the message names the file."""


def load_key(path: str | Path) -> bytes:
    """The shared key: the file's contents with surrounding whitespace stripped."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: cannot read: {exc.strerror or exc}") from exc
    if not key:
        raise KeyFileError(f"key file {path}: is empty")
    if len(key) < MIN_KEY_LEN:
        raise KeyFileError(
            f"key file {path}: key is {len(key)} bytes, need at least {MIN_KEY_LEN} "
            "(e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
        )
    return key


def valid_name(value: object) -> bool:
    """Lease and node names: 1..64 printable characters, no whitespace."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_NAME_LEN
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


@dataclass(frozen=True, slots=True)
class WireRequest:
    request: Request
    node: str
    ts: int


@dataclass(frozen=True, slots=True)
class WireReply:
    reply: Reply
    node: str
    ts: int


# ---- encoding -------------------------------------------------------------------------------


def _seal(key: bytes, kind: bytes, body: dict[str, Any]) -> bytes:
    header = MAGIC + bytes([VERSION]) + kind
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    data = header + hmac.digest(key, header + payload, hashlib.sha256) + payload
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"datagram would be {len(data)} bytes, more than {MAX_DATAGRAM}")
    return data


def encode_request(key: bytes, request: Request, node: str, ts: int) -> bytes:
    """Raises ValueError if a field cannot be sent (what is encoded always decodes)."""
    body = {
        "op": str(request.op),
        "lease": request.lease,
        "node": node,
        "id": request.req_id,
        "ttl": float(request.ttl),
        "epoch": request.epoch,
        "ts": ts,
    }
    try:
        _check_request(body)
    except ProtoError as exc:
        raise ValueError(f"cannot encode request: {exc.detail}") from None
    return _seal(key, KIND_REQUEST, body)


def encode_reply(key: bytes, reply: Reply, node: str, ts: int) -> bytes:
    """Raises ValueError if a field cannot be sent; a long error text is cut short."""
    body = {
        "lease": reply.lease,
        "node": node,
        "id": reply.req_id,
        "ts": ts,
        "result": str(reply.result),
        "epoch": reply.epoch,
        "ttl": round(float(reply.ttl), 6),
        "remaining": round(float(reply.remaining), 6),
        "holder": reply.holder,
        "error": "".join(c if c.isprintable() else " " for c in reply.error[:MAX_ERROR_LEN]),
    }
    try:
        _check_reply(body)
    except ProtoError as exc:
        raise ValueError(f"cannot encode reply: {exc.detail}") from None
    return _seal(key, KIND_REPLY, body)


# ---- decoding -------------------------------------------------------------------------------


def _open(key: bytes, kind: bytes, data: bytes) -> dict[str, Any]:
    """Check framing and MAC; return the JSON body as a dict."""
    if len(data) > MAX_DATAGRAM:
        raise ProtoError("oversized", f"{len(data)} bytes")
    if len(data) < len(MAGIC):
        raise ProtoError("truncated", f"{len(data)} bytes")
    if data[: len(MAGIC)] != MAGIC:
        raise ProtoError("bad-magic")
    if len(data) < HEADER_LEN + MAC_LEN:
        raise ProtoError("truncated", f"{len(data)} bytes")
    if data[2] != VERSION:
        raise ProtoError("bad-version", str(data[2]))
    if data[3:4] != kind:
        raise ProtoError("bad-kind", repr(data[3:4]))
    header, mac, payload = (
        data[:HEADER_LEN],
        data[HEADER_LEN : HEADER_LEN + MAC_LEN],
        data[HEADER_LEN + MAC_LEN :],
    )
    if not hmac.compare_digest(mac, hmac.digest(key, header + payload, hashlib.sha256)):
        raise ProtoError("bad-mac")
    try:
        body = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
        raise ProtoError("bad-json", type(exc).__name__) from None
    if not isinstance(body, dict):
        raise ProtoError("bad-json", "not an object")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def decode_request(key: bytes, data: bytes) -> WireRequest:
    body = _open(key, KIND_REQUEST, data)
    _check_request(body)
    request = Request(
        op=Op(body["op"]),
        lease=body["lease"],
        req_id=body["id"],
        ttl=float(body["ttl"]),
        epoch=body["epoch"],
    )
    return WireRequest(request, body["node"], body["ts"])


def decode_reply(key: bytes, data: bytes) -> WireReply:
    body = _open(key, KIND_REPLY, data)
    _check_reply(body)
    reply = Reply(
        lease=body["lease"],
        req_id=body["id"],
        result=Result(body["result"]),
        epoch=body["epoch"],
        ttl=float(body["ttl"]),
        remaining=float(body["remaining"]),
        holder=body["holder"],
        error=body["error"],
    )
    return WireReply(reply, body["node"], body["ts"])


_OPS: Final = frozenset(str(op) for op in Op)
_RESULTS: Final = frozenset(str(result) for result in Result)


def _check_request(body: dict[str, Any]) -> None:
    _field(body, "op", lambda v: isinstance(v, str) and v in _OPS)
    _field(body, "lease", valid_name)
    _field(body, "node", valid_name)
    _field(body, "id", _is_count)
    _field(body, "ttl", _is_seconds)
    _field(body, "epoch", _is_count)
    _field(body, "ts", _is_count)


def _check_reply(body: dict[str, Any]) -> None:
    _field(body, "lease", valid_name)
    _field(body, "node", valid_name)
    _field(body, "id", _is_count)
    _field(body, "ts", _is_count)
    _field(body, "result", lambda v: isinstance(v, str) and v in _RESULTS)
    _field(body, "epoch", _is_count)
    _field(body, "ttl", _is_seconds)
    _field(body, "remaining", _is_seconds)
    _field(body, "holder", lambda v: v == "" or valid_name(v))
    _field(
        body, "error", lambda v: isinstance(v, str) and len(v) <= MAX_ERROR_LEN and v.isprintable()
    )


def _field(body: dict[str, Any], name: str, ok: Callable[[Any], bool]) -> None:
    if name not in body:
        raise ProtoError("bad-field", f"{name} missing")
    if not ok(body[name]):
        raise ProtoError("bad-field", f"{name}={body[name]!r:.80}")


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


def _is_seconds(value: object) -> bool:
    # The range check also rules out inf and nan (JSON "1e999" parses to inf).
    return isinstance(value, int | float) and type(value) is not bool and 0 <= value <= MAX_SECONDS


# ---- replay protection ----------------------------------------------------------------------


class Timestamps:
    """Request timestamps: wall clock nanoseconds, strictly increasing for this object."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns) -> None:
        self._wall_ns = wall_ns
        self._last = 0

    def next(self) -> int:
        self._last = max(self._wall_ns(), self._last + 1)
        return self._last


class ReplayGuard:
    """The witness's side: accept each (node, lease) timestamp once, in increasing order, and
    only near our own wall clock."""

    _PRUNE_AT = 4096  # entries; older than the window they protect nothing and can go

    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS) -> None:
        self.window_ns = window_ns
        self._last: dict[tuple[str, str], int] = {}

    def check(self, node: str, lease: str, ts: int, now_ns: int) -> None:
        """Record ``ts`` as accepted, or raise ProtoError("stale"/"replay")."""
        if abs(ts - now_ns) > self.window_ns:
            raise ProtoError("stale", f"{(ts - now_ns) / 1e9:+.3f} s from our clock")
        last = self._last.get((node, lease), 0)
        if ts <= last:
            raise ProtoError("replay", f"{(last - ts) / 1e9:.6f} s older than the last")
        self._last[(node, lease)] = ts
        if len(self._last) > self._PRUNE_AT:
            # A timestamp at or below an entry older than the window is stale anyway.
            horizon = now_ns - self.window_ns
            self._last = {k: v for k, v in self._last.items() if v >= horizon}


class RateLimit:
    """At most ``burst`` events per ``period`` seconds per key (for logging drops under a flood;
    the counters still count every one)."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._windows: dict[str, tuple[float, int]] = {}

    def allow(self, key: str, now: float) -> bool:
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.period:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        return count < self.burst
