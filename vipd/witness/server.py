"""``vipd witness``: the embedded witness, a small UDP service granting fencing leases.

::

    vipd witness --listen 192.0.2.1:5405 --state /var/lib/vipd/witness.json \\
        --key-file /etc/vipd/witness.key --lease web --lease db

Three parts, so the lease logic can be tested without sockets or real time:

- :class:`StateFile`: the epochs (and the holder and TTL of each current lease), written
  atomically (temp file, fsync, rename, fsync of the directory) after every batch of requests
  that granted a lease to a new holder or released one, never for renewals alone. A missing
  file is a fresh start; a file that cannot be read or parsed stops the witness (epochs must
  never be reset). A lock file next to it keeps a second witness off the same state.
- :class:`LeaseTable`: the semantics of :mod:`vipd.witness.base`, on an injected clock
  (CLOCK_BOOTTIME in the service). A lease the state file says is held is treated as held for its
  full TTL from start-up: its holder may still believe it holds it, so nobody else gets it early,
  and the holder's renewals keep working.
- :class:`WitnessServer`: datagrams in, datagrams out (:mod:`vipd.witness.proto`), counters,
  logs; each wake-up reads what the socket holds and answers it as one batch. Anything that is
  not an authenticated, fresh, well-formed request is dropped and counted (``drop.<reason>``),
  never answered, never raised.

Counters (among them ``batches`` answered and ``state-writes`` made) are logged as one ``stats``
event on SIGUSR1 and at exit; each drop is also logged (``datagram-dropped``, with its reason; at
most 10 per reason per 10 s). SIGTERM/SIGINT exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import fcntl
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.proto import (
    DEFAULT_WINDOW_NS,
    MAX_DATAGRAM,
    MAX_SECONDS,
    KeyFileError,
    ProtoError,
    RateLimit,
    ReplayGuard,
    decode_request,
    encode_reply,
    load_key,
    valid_name,
)

log = structlog.get_logger("vipd.witness")

# Datagrams answered together: their replies wait for the batch's one write of the state.
MAX_BATCH: Final = 64
MIN_TTL: Final = 0.05  # seconds; requests are clamped into [MIN_TTL, MAX_TTL]
MAX_TTL: Final = 60.0
STATE_VERSION: Final = 1


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# ---- persistent state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """What survives a restart, per lease: the last epoch handed out (never reused), and who
    holds it with which TTL ("" once released)."""

    epoch: int = 0
    holder: str = ""
    ttl: float = 0.0


class StateError(Exception):
    """The state file cannot be used; the message names the file and the problem."""


class StateFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take an exclusive lock (``FILE.lock``) for as long as this process lives."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"state file {self.path}: cannot open {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError(
                f"state file {self.path}: in use by another vipd witness ({lock_path} is locked)"
            ) from None
        self._lock_fd = fd

    def load(self) -> dict[str, Record]:
        """The saved records; {} if the file does not exist. Raises StateError otherwise."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(f"cannot read it: {exc}") from exc
        if not text.strip():
            raise self._error("it is empty")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._error(f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise self._error(f'expected an object with "version": {STATE_VERSION}')
        leases = data.get("leases")
        if not isinstance(leases, dict):
            raise self._error('"leases" must be an object')
        records = {}
        for name, raw in leases.items():
            if not valid_name(name):
                raise self._error(f"lease name {name!r} is not valid")
            records[name] = self._record(name, raw)
        return records

    def _record(self, name: str, raw: object) -> Record:
        if not isinstance(raw, dict):
            raise self._error(f"leases.{name} must be an object")
        epoch, holder, ttl = raw.get("epoch"), raw.get("holder"), raw.get("ttl")
        if type(epoch) is not int or epoch < 0:
            raise self._error(f"leases.{name}.epoch must be an integer >= 0, got {epoch!r}")
        if not (holder == "" or valid_name(holder)):
            raise self._error(f"leases.{name}.holder must be a node name or '', got {holder!r}")
        if holder and epoch == 0:
            raise self._error(f"leases.{name} has holder {holder!r} but epoch 0")
        if not (isinstance(ttl, int | float) and type(ttl) is not bool and 0 <= ttl <= MAX_SECONDS):
            raise self._error(f"leases.{name}.ttl must be seconds >= 0, got {ttl!r}")
        assert isinstance(holder, str)
        return Record(epoch=epoch, holder=holder, ttl=float(ttl))

    def _error(self, what: str) -> StateError:
        return StateError(
            f"state file {self.path}: {what}; refusing to start, because starting afresh could "
            "hand out an epoch again (restore the file, or fix it keeping the epochs)"
        )

    def save(self, records: Mapping[str, Record]) -> None:
        """Atomically replace the file; durable when this returns. Raises OSError."""
        body = {
            "version": STATE_VERSION,
            "leases": {name: dataclasses.asdict(r) for name, r in sorted(records.items())},
        }
        data = (json.dumps(body, indent=1) + "\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ---- the lease table ------------------------------------------------------------------------


@dataclass(slots=True)
class _Lease:
    epoch: int = 0  # the current (or last) holder's epoch: the highest ever handed out
    holder: str = ""  # "" when never granted or released
    ttl: float = 0.0  # the largest TTL applied to this holding (what the state file has)
    expiry: float = 0.0  # on the table's clock


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: Reply
    event: str  # for the log: lease-granted, lease-renewed, lease-refused, lease-released, ...
    detail: str = ""
    pending: bool = False  # the reply rests on a change the next commit must make durable


class LeaseTable:
    """Leases by name, on the clock ``now`` (seconds, monotonic, counting suspend).

    Requests come in batches (:meth:`handle_batch`; :meth:`handle` is a batch of one). A change
    that must survive a restart (a grant to a new holder, a release, a TTL above the saved one)
    is made in memory at once, so the rest of the batch sees it, and ``persist`` is called once
    for the whole batch afterwards, with every record: group commit, one write and its fsyncs
    however many leases changed (50 leases taken over at once used to queue behind 50 writes,
    docs/chaos.md finding 13). ``persist`` raises OSError if the records are not durable. Then
    the changes that await it are undone and every reply that rested on one of them (a grant,
    a renewal or a re-grant of a lease changed in the batch) becomes an error: nothing is
    granted that is not durable. A release stays done in memory whatever the disk says (a stale
    file only lengthens the restart grace).
    """

    def __init__(
        self,
        names: Iterable[str],
        records: Mapping[str, Record],
        persist: Callable[[Mapping[str, Record]], None],
        now: Callable[[], float],
        min_ttl: float = MIN_TTL,
        max_ttl: float = MAX_TTL,
    ) -> None:
        self.served = frozenset(names)
        self._persist = persist
        self._now = now
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        start = now()
        self._leases: dict[str, _Lease] = {}
        # Leases the file knows but we do not serve stay in it: their epochs must not be lost.
        for name in self.served | set(records):
            r = records.get(name, Record())
            expiry = start + r.ttl if r.holder else 0.0  # restart grace: held for its full ttl
            self._leases[name] = _Lease(r.epoch, r.holder, r.ttl, expiry)
        # Since the last write: the leases changed in a way the write must confirm, as they
        # were before; and whether a release is still to be written.
        self._unconfirmed: dict[str, _Lease] = {}
        self._released = False
        self.writes = 0  # of the state, that succeeded

    def records(self) -> dict[str, Record]:
        return {n: Record(x.epoch, x.holder, x.ttl) for n, x in self._leases.items()}

    def save(self) -> None:
        """Write every record now (at start-up: creates the file). Raises OSError."""
        self._persist(self.records())
        self.writes += 1

    def view(self, name: str) -> tuple[str, int, float]:
        """(holder, epoch, seconds left) of a served lease; holder "" when not held."""
        lease = self._leases[name]
        left = lease.expiry - self._now()
        return (lease.holder, lease.epoch, left) if lease.holder and left > 0 else ("", 0, 0.0)

    def handle(self, req: Request, node: str) -> Outcome:
        return self.handle_batch([(req, node)])[0]

    def handle_batch(self, batch: Iterable[tuple[Request, str]]) -> list[Outcome]:
        """The outcome of each (request, node) in order, durable when this returns."""
        outcomes = [self._outcome(req, node) for req, node in batch]
        error = self._commit()
        return [_after_failed_write(o, error) for o in outcomes] if error else outcomes

    def _commit(self) -> str:
        """Write the batch's changes, if any; "" on success, else the error (and the changes
        that awaited the write are undone)."""
        if not (self._unconfirmed or self._released):
            return ""
        try:
            self.save()
        except OSError as exc:
            self._leases.update(self._unconfirmed)
            return f"cannot write the state file: {exc}"
        finally:
            self._unconfirmed.clear()
            self._released = False
        return ""

    def _change(self, name: str, lease: _Lease) -> _Lease:
        """Put ``lease`` in place of ``name``'s; the batch's write must confirm it."""
        self._unconfirmed.setdefault(name, self._leases[name])
        self._leases[name] = lease
        return lease

    def _outcome(self, req: Request, node: str) -> Outcome:
        outcome = self._handle(req, node)
        if outcome.reply.result in (Result.GRANTED, Result.RENEWED):
            # Rests on a change of this lease not yet written? Then it waits for the write.
            pending = req.lease in self._unconfirmed
            return dataclasses.replace(outcome, pending=pending) if pending else outcome
        return outcome

    def _handle(self, req: Request, node: str) -> Outcome:
        lease = self._leases.get(req.lease) if req.lease in self.served else None
        if lease is None:
            reply = Reply(req.lease, req.req_id, Result.ERROR, error=f"unknown lease {req.lease}")
            return Outcome(reply, "unknown-lease")
        if req.op is Op.ACQUIRE:
            return self._acquire(req, node, lease)
        if req.op is Op.RENEW:
            return self._renew(req, node, lease)
        return self._release(req, node, lease)

    def _clamp(self, ttl: float) -> float:
        return min(max(ttl, self.min_ttl), self.max_ttl)

    def _acquire(self, req: Request, node: str, lease: _Lease) -> Outcome:
        now = self._now()
        ttl = self._clamp(req.ttl)
        live = bool(lease.holder) and now < lease.expiry
        if live and lease.holder != node:
            return self._refuse(req, lease, now)
        if live:  # node already holds it: same epoch, longer
            return self._extend(req, lease, ttl, Result.GRANTED, "lease-granted", "held")
        # Nobody holds an unexpired lease: a new holding, a new epoch, durable before we answer.
        new = self._change(req.lease, _Lease(lease.epoch + 1, node, ttl, now + ttl))
        reply = Reply(req.lease, req.req_id, Result.GRANTED, epoch=new.epoch, ttl=ttl)
        previous = f"after {lease.holder} (epoch {lease.epoch})" if lease.holder else "free"
        return Outcome(reply, "lease-granted", f"new epoch, {previous}")

    def _renew(self, req: Request, node: str, lease: _Lease) -> Outcome:
        # Still ours if nobody else was granted it since and we did not release it, even if it
        # expired meanwhile.
        if lease.holder != node or lease.epoch != req.epoch:
            return self._refuse(req, lease, self._now())
        return self._extend(req, lease, self._clamp(req.ttl), Result.RENEWED, "lease-renewed", "")

    def _extend(
        self, req: Request, lease: _Lease, ttl: float, result: Result, event: str, detail: str
    ) -> Outcome:
        if ttl > lease.ttl:  # the restart grace must cover the longest TTL we promised
            lease = self._change(req.lease, dataclasses.replace(lease, ttl=ttl))
        # Never shorten: the holder may count on the expiry an earlier reply promised.
        lease.expiry = max(lease.expiry, self._now() + ttl)
        reply = Reply(req.lease, req.req_id, result, epoch=lease.epoch, ttl=ttl)
        return Outcome(reply, event, detail)

    def _release(self, req: Request, node: str, lease: _Lease) -> Outcome:
        reply = Reply(req.lease, req.req_id, Result.RELEASED, epoch=req.epoch)
        if lease.holder != node or lease.epoch != req.epoch:
            return Outcome(reply, "lease-release-ignored", "not the holder of this epoch")
        # Released at once whatever the disk says: a stale file only lengthens the restart grace.
        self._leases[req.lease] = _Lease(lease.epoch, "", 0.0, 0.0)
        self._unconfirmed.pop(req.lease, None)
        self._released = True
        return Outcome(reply, "lease-released")

    def _refuse(self, req: Request, lease: _Lease, now: float) -> Outcome:
        holder, epoch, left = (lease.holder, lease.epoch, max(0.0, lease.expiry - now))
        if not holder:
            epoch = 0
        reply = Reply(
            req.lease, req.req_id, Result.REFUSED, epoch=epoch, remaining=left, holder=holder
        )
        return Outcome(reply, "lease-refused")


def _after_failed_write(outcome: Outcome, error: str) -> Outcome:
    if outcome.pending:
        r = outcome.reply
        failed = Reply(r.lease, r.req_id, Result.ERROR, error="witness cannot save its state")
        return Outcome(failed, "state-write-failed", error)
    if outcome.event == "lease-released":
        return dataclasses.replace(outcome, detail=error)
    return outcome


# ---- the service ----------------------------------------------------------------------------


Address = tuple[Any, ...]


class WitnessServer:
    def __init__(
        self,
        key: bytes,
        table: LeaseTable,
        guard: ReplayGuard | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self.key = key
        self.table = table
        self.guard = guard or ReplayGuard()
        self.counters: Counter[str] = Counter()
        self._wall_ns = wall_ns
        self._clock = clock
        self._log_limit = RateLimit()

    def handle(self, data: bytes, addr: Address) -> bytes | None:
        """One datagram in; the reply to send back, or None (dropped)."""
        replies = self.handle_batch([(data, addr)])
        return replies[0][0] if replies else None

    def handle_batch(
        self, datagrams: Iterable[tuple[bytes, Address]]
    ) -> list[tuple[bytes, Address]]:
        """Datagrams in; the replies to send back, with their addresses (a dropped datagram has
        none). The table writes its state once for the whole batch, before this returns."""
        accepted = []
        for data, addr in datagrams:
            self.counters["rx"] += 1
            try:
                wire = decode_request(self.key, data)
                self.guard.check(wire.node, wire.request.lease, wire.ts, self._wall_ns())
            except ProtoError as exc:
                self.drop(exc.reason, addr, exc.detail)
                continue
            self.counters[f"request.{wire.request.op}"] += 1
            accepted.append((wire, addr))
        if not accepted:
            return []
        self.counters["batches"] += 1
        outcomes = self.table.handle_batch((wire.request, wire.node) for wire, _ in accepted)
        replies = []
        for (wire, addr), outcome in zip(accepted, outcomes, strict=True):
            reply = outcome.reply
            self.counters[f"reply.{reply.result}"] += 1
            if outcome.event in ("unknown-lease", "state-write-failed"):
                self.counters[outcome.event] += 1
            self._log(outcome, wire.request, wire.node, addr)
            try:
                replies.append((encode_reply(self.key, reply, wire.node, wire.ts), addr))
            except ValueError as exc:  # cannot happen with what the table produces; never raise
                self.counters["encode-error"] += 1
                log.error("encode-error", error=str(exc))
        return replies

    def drop(self, reason: str, addr: Address, detail: str = "") -> None:
        self.counters[f"drop.{reason}"] += 1
        if self._log_limit.allow(reason, self._clock()):
            log.warning("datagram-dropped", reason=reason, peer=_peer(addr), detail=detail)

    def _log(self, outcome: Outcome, req: Request, node: str, addr: Address) -> None:
        r = outcome.reply
        fields: dict[str, Any] = {"lease": req.lease, "node": node, "peer": _peer(addr)}
        if outcome.event in ("lease-granted", "lease-renewed"):
            fields.update(epoch=r.epoch, ttl=r.ttl, req_id=req.req_id)
            if outcome.detail:
                fields["detail"] = outcome.detail
            # Renewals (and re-grants to the holder) come every advert interval: debug only.
            level = "info" if outcome.detail.startswith("new epoch") else "debug"
            getattr(log, level)(outcome.event, **fields)
        elif outcome.event == "lease-refused":
            log.info(
                outcome.event,
                op=str(req.op),
                epoch=req.epoch,
                holder=r.holder,
                holder_epoch=r.epoch,
                remaining=round(r.remaining, 3),
                **fields,
            )
        elif outcome.event.startswith("lease-release"):
            log.info(outcome.event, epoch=req.epoch, detail=outcome.detail, **fields)
        else:
            log.warning(
                outcome.event, op=str(req.op), error=r.error, detail=outcome.detail, **fields
            )

    def log_stats(self, event: str = "stats") -> None:
        leases = {}
        for name in sorted(self.table.served):
            holder, epoch, left = self.table.view(name)
            leases[name] = {"holder": holder, "epoch": epoch, "remaining": round(left, 3)}
        counters = dict(self.counters, **{"state-writes": self.table.writes})
        log.info(event, counters=dict(sorted(counters.items())), leases=leases)

    def readable(self, sock: socket.socket) -> None:
        """Answer what ``sock`` (non-blocking, bound) holds, up to :data:`MAX_BATCH` datagrams,
        as one batch: the datagrams that arrived while the last batch's state was being written
        share the next write (group commit).

        Replies go out with MSG_CONFIRM: an authenticated, fresh request just came from that
        address, the proof of reachability the kernel's neighbour cache wants, so the entry for
        each node stays REACHABLE instead of being re-probed every 15-45 s. On a lossy link
        the probes can all be lost, and the replies would then wait unsent for a broadcast ARP
        to get through, longer than a lease lasts (docs/chaos.md finding 7)."""
        batch: list[tuple[bytes, Address]] = []
        while len(batch) < MAX_BATCH:
            try:
                batch.append(sock.recvfrom(MAX_DATAGRAM + 1))  # longer: dropped as oversized
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. an ICMP error for an earlier reply
                self.counters["recv-error"] += 1
                if self._log_limit.allow("recv-error", self._clock()):
                    log.warning("recv-error", error=str(exc))
                break
        for reply, addr in self.handle_batch(batch):
            try:
                sock.sendto(reply, socket.MSG_CONFIRM, addr)
            except OSError as exc:  # a full buffer too: the node asks again
                self._send_error(addr, exc)
            else:
                self.counters["tx"] += 1

    def _send_error(self, addr: Address, exc: OSError) -> None:
        self.counters["send-error"] += 1
        if self._log_limit.allow("send-error", self._clock()):
            log.warning("send-error", peer=_peer(addr), error=str(exc))


def _peer(addr: Address) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"


# ---- command line ---------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6ADDR]:PORT``."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT or [ADDR]:PORT, got {value!r}")
    return host, int(port)


def lease_name(value: str) -> str:
    if not valid_name(value):
        raise argparse.ArgumentTypeError(
            f"a lease name is 1..64 printable characters without spaces, got {value!r}"
        )
    return value


def add_witness_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", required=True, type=parse_listen, metavar="ADDR:PORT", help="UDP address"
    )
    parser.add_argument("--state", required=True, metavar="FILE", help="epochs are kept here")
    parser.add_argument("--key-file", required=True, metavar="FILE", help="shared HMAC key")
    parser.add_argument(
        "--lease",
        required=True,
        action="append",
        type=lease_name,
        metavar="NAME",
        help="a lease name to serve (repeat for several)",
    )
    parser.add_argument(
        "--replay-window",
        type=float,
        default=DEFAULT_WINDOW_NS / 1e9,
        metavar="SECONDS",
        help="accept request timestamps this close to our wall clock (default 30)",
    )
    parser.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )


def run_witness(args: argparse.Namespace) -> int:
    from vipd.log import setup_logging

    setup_logging(args.log_format, args.log_level)
    try:
        key = load_key(args.key_file)
        state = StateFile(args.state)
        state.lock()
        records = state.load()
        table = LeaseTable(args.lease, records, state.save, boottime)
        try:
            table.save()
        except OSError as exc:
            raise StateError(f"state file {args.state}: cannot write it: {exc}") from exc
    except (KeyFileError, StateError) as exc:
        print(f"vipd witness: {exc}", file=sys.stderr)
        return 1
    window_ns = int(args.replay_window * 1e9)
    server = WitnessServer(key, table, ReplayGuard(window_ns))
    try:
        asyncio.run(_main(server, args.listen, args.state))
    except OSError as exc:
        host, port = args.listen
        print(f"vipd witness: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _bind(listen: tuple[str, int]) -> socket.socket:
    host, port = listen
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _main(server: WitnessServer, listen: tuple[str, int], state_path: str) -> None:
    loop = asyncio.get_running_loop()
    sock = _bind(listen)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, server.log_stats)
    host, port = sock.getsockname()[:2]
    for name, record in sorted(server.table.records().items()):
        if record.holder and name in server.table.served:
            log.info(
                "lease-restored",
                lease=name,
                holder=record.holder,
                epoch=record.epoch,
                grace=record.ttl,
            )
    log.info(
        "listening", host=host, port=port, leases=sorted(server.table.served), state=state_path
    )
    loop.add_reader(sock, server.readable, sock)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(sock)
        sock.close()
    server.log_stats()
    log.info("stopped")
