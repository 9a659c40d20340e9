"""The client side of the embedded witness: a :class:`~vipd.witness.base.Backend` that carries
requests to ``vipd witness`` over UDP (asyncio-dgram) in the format of :mod:`vipd.witness.proto`.

It never retransmits (the lease core does) and never raises into the daemon: a request it cannot
send, and a datagram that is not a verified reply to a request it is waiting for, are counted in
:attr:`EmbeddedBackend.counters` and logged (at most 10 per kind per 10 s).

A reply is delivered only if it is authenticated, comes from the witness's address, names this
node, and echoes the ``req_id``, lease and timestamp of a request sent and not yet answered; each
request is answered at most once. The socket is unconnected, so the kernel picks the source
address per datagram (a VIP moving on or off this host does not strand the socket).

While the witness answers, requests go out with MSG_CONFIRM: a verified reply is the proof of
reachability the kernel's neighbour cache wants, so the witness's ARP/ND entry stays REACHABLE
instead of going stale every 15-45 s and being probed again. Probes are frames too: on a lossy
link (docs/chaos.md finding 7) all three could be lost, and the entry would sit unresolved for a
second with every renewal queued behind it, long enough for the lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter, OrderedDict
from typing import Any, Final

import asyncio_dgram
import structlog

from vipd.witness.base import Reply, ReplyCallback, Request, Result
from vipd.witness.proto import (
    ProtoError,
    RateLimit,
    Timestamps,
    decode_reply,
    encode_request,
)

log = structlog.get_logger("vipd.witness.embedded")

# One per process: every request this process sends gets a greater timestamp than the last.
_TIMESTAMPS: Final = Timestamps()

_MAX_PENDING: Final = 64  # requests per lease waiting for a reply; the oldest are forgotten
_MAX_IN_FLIGHT: Final = 64  # sends handed to the loop and not yet done
_REOPEN_INTERVAL: Final = 1.0  # seconds between attempts to open the socket
_CONFIRM_FOR: Final = 1.0  # seconds after a verified reply that sends carry MSG_CONFIRM


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, address: tuple[str, int], key: bytes, node: str) -> None:
        if not 0 < address[1] < 65536:
            raise ValueError(f"witness port must be 1..65535, got {address[1]}")
        self.address = address
        self.key = key
        self.node = node
        # sent, received, reply.<result>, drop.<reason>, send-error, not-open, ... (for status)
        self.counters: Counter[str] = Counter()
        self._on_reply: ReplyCallback | None = None
        self._stream: Any = None  # asyncio_dgram.DatagramServer once open
        self._confirming: socket.socket | None = None  # the same socket, for MSG_CONFIRM sends
        self._confirm_until = 0.0  # time.monotonic() of the last verified reply + _CONFIRM_FOR
        self._peer: tuple[Any, ...] = ()  # the witness's resolved (host, port)
        # Requests waiting for a reply: lease -> req_id -> ts. Each lease's core numbers its own
        # requests, so a req_id alone does not name one (docs/chaos.md finding 13).
        self._pending: dict[str, OrderedDict[int, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: asyncio.Task[None] | None = None
        self._log_limit = RateLimit()
        self._closed = False

    # ---- Backend ---------------------------------------------------------------------------
    async def start(self, on_reply: ReplyCallback) -> None:
        self._on_reply = on_reply
        opened = await self._open()
        self._background = asyncio.create_task(self._receive() if opened else self._reopen())

    def send(self, request: Request) -> None:
        stream = self._stream
        if stream is None:
            self._problem("not-open", "witness socket not open; request not sent")
            return
        if len(self._tasks) >= _MAX_IN_FLIGHT:
            self._problem("send-backlog", "too many sends in flight; request not sent")
            return
        ts = _TIMESTAMPS.next()
        try:
            data = encode_request(self.key, request, self.node, ts)
        except ValueError as exc:
            self._problem("encode-error", str(exc))
            return
        try:
            task = asyncio.get_running_loop().create_task(self._send(stream, data))
        except RuntimeError as exc:  # no running loop: a caller bug, still never raise
            self._problem("send-error", str(exc))
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        waiting = self._pending.setdefault(request.lease, OrderedDict())
        waiting[request.req_id] = ts
        waiting.move_to_end(request.req_id)
        while len(waiting) > _MAX_PENDING:
            waiting.popitem(last=False)

    async def close(self) -> None:
        self._closed = True
        if self._tasks:  # let the last requests (a release at shutdown) go out
            await asyncio.wait(list(self._tasks), timeout=0.5)
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        for task in list(self._tasks):
            task.cancel()
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._confirming is not None:
            self._confirming.close()
            self._confirming = None
        self._pending.clear()

    # ---- internals -------------------------------------------------------------------------
    async def _open(self) -> bool:
        host, port = self.address
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            stream = await asyncio_dgram.bind((wildcard, 0))
        except (OSError, ValueError) as exc:  # ValueError: a name getaddrinfo cannot encode
            self._problem("open-error", f"cannot open a socket to {host}:{port}: {exc}")
            return False
        # asyncio's transport sends without flags: a second handle on the same socket does.
        self._confirming = socket.socket(fileno=os.dup(stream.socket.fileno()))
        self._peer = tuple(sockaddr[:2])
        self._stream = stream
        log.info("witness-socket-open", witness=f"{host}:{port}", local=stream.sockname[:2])
        return True

    async def _reopen(self) -> None:
        while self._stream is None and not self._closed:
            await asyncio.sleep(_REOPEN_INTERVAL)
            await self._open()
        await self._receive()

    async def _send(self, stream: Any, data: bytes) -> None:
        # asyncio-dgram raises an error the socket reported earlier (e.g. EPERM from a firewall
        # for the last datagram) from the next call: count those first, then send this one.
        while True:
            try:
                _ = stream.exception
                break
            except OSError as exc:
                self._problem("send-error", str(exc))
        if self._confirming is not None and time.monotonic() < self._confirm_until:
            try:
                self._confirming.sendto(data, socket.MSG_CONFIRM, self._peer)
            except BlockingIOError:
                pass  # the socket's buffer is full: queue it in the transport below
            except OSError as exc:
                self._problem("send-error", str(exc))
                return
            else:
                self.counters["sent"] += 1
                return
        try:
            await stream.send(data, self._peer)
        except (OSError, asyncio_dgram.TransportClosed) as exc:
            self._problem("send-error", str(exc) or type(exc).__name__)
        else:
            self.counters["sent"] += 1

    async def _receive(self) -> None:
        stream = self._stream
        while stream is not None:
            try:
                data, addr = await stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError as exc:
                self._problem("socket-error", str(exc))
                continue
            self._datagram(data, addr)

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.counters["received"] += 1
        if tuple(addr[:2]) != self._peer:
            self._drop("wrong-source", f"from {addr[0]}:{addr[1]}")
            return
        try:
            wire = decode_reply(self.key, data)
        except ProtoError as exc:
            self._drop(exc.reason, exc.detail)
            return
        reply = wire.reply
        if wire.node != self.node:
            self._drop("wrong-node", f"reply for node {wire.node}")
            return
        waiting = self._pending.get(reply.lease)
        if waiting is None or waiting.get(reply.req_id) != wire.ts:
            self._drop("unexpected-reply", f"req_id {reply.req_id} lease {reply.lease}")
            return
        del waiting[reply.req_id]
        self._confirm_until = time.monotonic() + _CONFIRM_FOR
        self.counters[f"reply.{reply.result}"] += 1
        if reply.result is Result.ERROR:
            log.warning("witness-error", lease=reply.lease, req_id=reply.req_id, error=reply.error)
        self._deliver(reply)

    def _deliver(self, reply: Reply) -> None:
        assert self._on_reply is not None
        try:
            self._on_reply(reply)
        except Exception:  # a bug in the callback must not stop us receiving
            self.counters["callback-error"] += 1
            log.exception("witness-reply-callback-failed", lease=reply.lease)

    def _drop(self, reason: str, detail: str) -> None:
        self.counters[f"drop.{reason}"] += 1
        if self._log_limit.allow(f"drop.{reason}", time.monotonic()):
            log.warning("witness-reply-dropped", reason=reason, detail=detail)

    def _problem(self, counter: str, message: str) -> None:
        self.counters[counter] += 1
        if self._log_limit.allow(counter, time.monotonic()):
            log.warning("witness-" + counter, error=message)
