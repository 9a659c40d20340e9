"""The peer channel of the hold-with-peer policy: wire format, pure (no I/O).

A master pings its peers once per advert interval; a backup that follows that master answers
with a confirmation carrying its promise (:meth:`vipd.vrrp.machine.Machine.promise`): the
seconds during which it will certainly not ask the witness for the lease. The master holds the
VIP past its lease only on such promises (:meth:`vipd.fence.lease.LeaseClient.peer_confirmed`).

Datagrams use the embedded witness's framing (:mod:`vipd.witness.proto`: magic, version, kind,
HMAC-SHA256 under the shared key, a JSON body) with their own kinds, ``P`` (ping) and ``C``
(confirm), so neither can be taken for a witness message. Replays are harmless: a confirmation
counts only if it echoes the ``seq`` of a ping the master sent and has not yet had answered, and
``seq`` starts at a random value in each run; a replayed ping only makes a backup state a
promise that is true anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final

from vipd.witness.proto import (
    MAX_SECONDS,
    ProtoError,
    valid_name,
)
from vipd.witness.proto import _open as open_body
from vipd.witness.proto import _seal as seal

KIND_PING: Final = b"P"
KIND_CONFIRM: Final = b"C"
KIND_TAKEOVER: Final = b"T"
_MAX_SEQ: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Ping:
    lease: str
    node: str
    seq: int
    primary: IPv4Address | IPv6Address  # the master's VRRP source address


@dataclass(frozen=True, slots=True)
class Confirm:
    lease: str
    node: str
    seq: int
    promise: float  # seconds
    ready: bool  # a backup, not in FAULT: it would take over a handover (vipctl failover)


@dataclass(frozen=True, slots=True)
class Takeover:
    """Planned handover: the master has dropped the VIP and released the lease; the peer
    should take over now rather than wait for its timers."""

    lease: str
    node: str
    seq: int
    primary: IPv4Address | IPv6Address  # the old master's VRRP source address


def encode_takeover(key: bytes, takeover: Takeover) -> bytes:
    body = {
        "lease": takeover.lease,
        "node": takeover.node,
        "seq": takeover.seq,
        "primary": str(takeover.primary),
    }
    return seal(key, KIND_TAKEOVER, body)


def encode_ping(key: bytes, ping: Ping) -> bytes:
    body = {"lease": ping.lease, "node": ping.node, "seq": ping.seq, "primary": str(ping.primary)}
    return seal(key, KIND_PING, body)


def encode_confirm(key: bytes, confirm: Confirm) -> bytes:
    body = {
        "lease": confirm.lease,
        "node": confirm.node,
        "seq": confirm.seq,
        "promise": round(confirm.promise, 6),
        "ready": confirm.ready,
    }
    return seal(key, KIND_CONFIRM, body)


def decode(key: bytes, data: bytes) -> Ping | Confirm | Takeover:
    """Raises ProtoError (and nothing else) for anything but an authentic peer message."""
    kind = data[3:4] if len(data) >= 4 else b""
    if kind not in (KIND_PING, KIND_CONFIRM, KIND_TAKEOVER):
        kind = KIND_PING  # let the framing checks name what is wrong
    body = open_body(key, kind, data)
    lease, node, seq = _get(body, "lease"), _get(body, "node"), _get(body, "seq")
    if not (valid_name(lease) and valid_name(node)):
        raise ProtoError("bad-field", "lease or node")
    if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        raise ProtoError("bad-field", "seq")
    if kind in (KIND_PING, KIND_TAKEOVER):
        value = _get(body, "primary")
        try:
            primary = ip_address(value if isinstance(value, str) else "")
        except ValueError:
            raise ProtoError("bad-field", "primary") from None
        return (Ping if kind == KIND_PING else Takeover)(lease, node, seq, primary)
    promise = _get(body, "promise")
    if not isinstance(promise, int | float) or type(promise) is bool:
        raise ProtoError("bad-field", "promise")
    if not 0 <= promise <= MAX_SECONDS:
        raise ProtoError("bad-field", "promise")
    ready = _get(body, "ready")
    if not isinstance(ready, bool):
        raise ProtoError("bad-field", "ready")
    return Confirm(lease, node, seq, float(promise), ready)


def _get(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise ProtoError("bad-field", f"{name} missing")
    return body[name]
