"""The one interface every witness backend (embedded, etcd) provides to the lease core.

The lease core (:mod:`vipd.fence.lease`) decides what to ask and when; a backend only carries a
:class:`Request` to the witness and hands the :class:`Reply` back through the callback given to
:meth:`Backend.start`. A backend never raises into the daemon: a lost request is simply never
answered (the core retransmits), and a witness that answers with nonsense is logged and counted.

Semantics every backend must give, per lease name (one lease per instance):

- ``acquire(node, ttl)``: granted when nobody holds an unexpired lease, or when ``node`` already
  holds it. A grant to a new holder (after expiry or release) gets a strictly greater epoch than
  any epoch ever handed out for this lease, and that epoch is durable before the reply is sent.
  Otherwise refused, with the holder, its epoch and the seconds until its lease expires.
- ``renew(node, epoch)``: renewed (same epoch, expiry pushed to now + ttl at the witness) while
  ``node`` holds ``epoch`` and nobody else was granted the lease since; a backend that cannot
  renew an expired lease (etcd) may answer ``granted`` with a new epoch instead. Otherwise
  refused: the node has been fenced.
- ``release(node, epoch)``: the lease is dropped at once if ``node`` holds ``epoch``; always
  answered ``released`` (idempotent).
- The ``ttl`` in a granted/renewed reply is the one the witness applied (etcd rounds up to whole
  seconds); the witness never expires a lease sooner than ``ttl`` after it received the request.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Op(enum.StrEnum):
    ACQUIRE = "acquire"
    RENEW = "renew"
    RELEASE = "release"


class Result(enum.StrEnum):
    GRANTED = "granted"
    RENEWED = "renewed"
    RELEASED = "released"
    REFUSED = "refused"
    ERROR = "error"  # the witness cannot serve this request (unknown lease, bad key, ...)


@dataclass(frozen=True, slots=True)
class Request:
    op: Op
    lease: str  # the lease name; both nodes of a pair use the same one
    req_id: int  # chosen by the lease core, unique per node run; echoed in the reply
    ttl: float = 0.0  # seconds wanted (acquire, renew)
    epoch: int = 0  # the epoch held (renew, release)


@dataclass(frozen=True, slots=True)
class Reply:
    lease: str
    req_id: int
    result: Result
    epoch: int = 0  # granted/renewed: ours; refused: the current holder's (0: none)
    ttl: float = 0.0  # granted/renewed: the TTL the witness applied
    remaining: float = 0.0  # refused: seconds until the holder's lease expires at the witness
    holder: str = ""  # refused: who holds it
    error: str = ""  # error: why, for the log


ReplyCallback = Callable[[Reply], None]


class Backend(Protocol):
    """A witness client. ``node`` (the daemon's node name) identifies this node to the witness."""

    name: str  # "embedded" or "etcd", for logs, status and metrics
    counters: Counter[str]  # requests, replies, drops, hedges...: shown by ``vipctl status``

    async def start(self, on_reply: ReplyCallback) -> None:
        """Open sockets or connections; ``on_reply`` is called in the event loop."""

    def send(self, request: Request) -> None:
        """Send without waiting; the reply (if any) arrives through ``on_reply``."""

    async def close(self) -> None: ...
