"""The etcd v3 witness backend: leases on a real etcd cluster, through its JSON gateway.

It talks to etcd's gRPC-JSON gateway over HTTP(S) with ``httpx`` (no gRPC dependency): POST
``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/grant``, ``/v3/lease/keepalive``,
``/v3/lease/revoke`` and ``/v3/lease/timetolive``, keys and values base64, int64 fields as JSON
strings. etcd 3.4 serves the gateway under ``/v3/`` and ``/v3beta/`` (``/v3alpha/`` is 404);
3.5 and later serve only ``/v3/``, so ``/v3/`` is used.

Data model
----------
One etcd key per lease name: ``prefix + name`` (default ``/vipd/lease/<name>``). Its value is
the holder's node name, and it is attached to an etcd lease owned by the holder, so etcd deletes
it when that lease expires or is revoked. The **epoch is the key's create_revision**: every new
holder creates the key anew, and etcd revisions only ever go up (compaction does not reset them;
only wiping the cluster's data does), so a new holder's epoch is strictly greater than every
earlier one. A create is committed (Raft, fsync'd on a quorum) before etcd answers, so the epoch
is durable before the reply is sent.

Mapping of the :mod:`vipd.witness.base` operations
--------------------------------------------------
``acquire(node, ttl)``
    1. ``lease/grant`` with TTL = ``ceil(ttl)`` seconds; etcd may raise it to its minimum (see
       below) and the TTL it applied is what the reply reports.
    2. ``kv/txn``: if ``create_revision(key) == 0`` (no key) put ``key = node`` with the new lease
       and read it back: **granted**, epoch = its create_revision.
    3. Otherwise the txn's failure branch returns the key. If its value is ``node`` (we hold it
       already: a retransmit, or a restarted daemon whose old lease still runs) a second txn
       moves the key to the new lease, guarded by ``value == node`` and the same create_revision
       (so the epoch is kept), and the old lease is revoked: **granted** with the old epoch and a
       full fresh TTL. If the guard fails (the key changed meanwhile) step 2 is tried again.
    4. Held by another node: **refused** with holder = the value, epoch = its create_revision and
       ``remaining`` from ``lease/timetolive`` of the holder's lease; the lease made in step 1 is
       revoked.

``renew(node, epoch)``
    ``kv/range`` the key first (so no remembered state is needed: it works the same after a
    daemon restart), then:

    - key held by another node: **refused** (holder, its epoch, remaining): we were fenced;
    - key held by us: ``lease/keepalive`` of the lease the key is attached to. TTL > 0: **renewed**
      with that TTL if the key's create_revision is ``epoch``; if we hold it under another
      epoch, **granted** with that epoch (ours, but not the one asked about).
    - keepalive answers TTL <= 0 (the lease expired at etcd; it can never be renewed again), or
      there is no key at all: **choice: re-acquire** as above and answer **granted** with the
      new epoch (or refused if another node got there first). This is as safe as any acquire:
      etcd expired our lease no sooner than ``ttl`` after we sent the last renewal, so the
      caller's own deadline (computed from that send time) had passed by then, and anyone who
      held the key in between did so after it. Refusing instead would take the VIP down after
      every witness outage longer than the TTL (e.g. one ridden out with the peer's
      confirmation), the fail-closed behaviour the design rules out. If the key was still there
      (an expired lease whose deletion etcd had not applied yet) and we move it to a new lease,
      the epoch is unchanged and the answer is **renewed**.

    etcd renews a lease to the TTL it was granted with; a different ``ttl`` in a renew request is
    only used when a re-acquire is needed. The reply's ``ttl`` is always what etcd applied.

``release(node, epoch)``
    A txn deletes the key only if ``value == node`` and ``create_revision == epoch`` (a release
    can never delete a key that another node has acquired since), then the lease it was attached
    to is revoked (as is the lease remembered for that epoch). Always answered **released**, once
    etcd was reached.

Not reachable
    Every HTTP call tries the current endpoint, then each other one once; a transport error,
    timeout, HTTP 5xx or a gRPC "unavailable"-class code (no leader, leader changed, timed out)
    moves to the next endpoint, which stays current for later calls. When every endpoint failed,
    or the whole operation took longer than ``timeout * (len(endpoints) + 2)``, the request gets
    **no reply** (the lease core treats silence as loss and retransmits); counted as
    ``unreachable`` and logged (a warning on the first failure, debug after, info on recovery).
    Other etcd errors (permission denied, invalid argument, ...) are answered ``error``.

Requests in flight
    At most one request per (lease, op) is in flight: a retransmit that arrives while the first
    is unanswered is dropped (counted ``dropped_in_flight``); the core accepts the reply to any of
    its outstanding request ids. Requests for one lease run one after another, in the order sent,
    so a release sent after an acquire is applied after it.

Hedged renewals
    The exception: a renewal retransmitted while the first has been unanswered for
    ``HEDGE_AFTER`` is also sent as a bare keepalive of the lease this node holds, outside the
    queue, on another connection, up to ``MAX_HEDGES`` at a time (counted ``hedges``). One lost
    TCP segment stalls a request for a retransmission timeout (200 ms at least, doubling), and
    with 30 % loss on the node's link most renewals lost one: the lease ran out although etcd
    was reachable (docs/chaos.md, finding 3). A hedge only extends a lease this node still holds
    at the epoch the core asked about, never acquires, and its reply carries its own request id,
    so the core counts the new deadline from the hedge's send time.

Never sooner than promised
    etcd's leader expires a lease no sooner than its TTL after the last grant or keepalive it
    applied, and that is after we sent the request, so ``sent + ttl`` is a safe bound for the
    caller's own deadline. An expired lease cannot be renewed (etcd answers TTL <= 0 and deletes
    its keys within its 0.5 s revoke sweep); a new Raft leader extends every lease by an election
    timeout, never shortens one, and a restarted etcd restores leases with a fresh TTL.

TTL floor
    etcd leases are whole seconds: ``ttl`` is rounded up (1.2 s -> 2 s). etcd also raises every
    TTL to its minimum, ``ceil(1.5 * election timeout)``: with the default Raft timing (heartbeat
    100 ms, election 1000 ms) etcd 3.4 grants 2 s for a 1 s request (measured with 3.4.23);
    1 s with a 500 ms election timeout or shorter. So with etcd the lease, and with it the
    timeout-driven failover when a master dies without releasing, cannot be shorter than 1-2 s;
    ``remaining`` in a refusal is etcd's whole-second time-to-live (rounded down) plus 1, an upper
    bound.

Not supported (yet): etcd authentication (a token) and client certificates; ``https://``
endpoints with a server certificate the system trusts work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from vipd.witness.base import Op, Reply, ReplyCallback, Request, Result

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "EtcdBackend"]

log = structlog.get_logger("vipd.witness.etcd")

DEFAULT_PREFIX = "/vipd/lease/"
#: Seconds per HTTP request to one endpoint.
DEFAULT_TIMEOUT = 1.0
API = "/v3"

# gRPC codes that mean "this member cannot serve now, another may": cancelled, unknown,
# deadline exceeded, resource exhausted, aborted, unavailable.
_RETRY_CODES = frozenset({1, 2, 4, 8, 10, 14})
_NOT_FOUND = 5
_UNAVAILABLE = 14
# How often acquire re-reads the key if it keeps changing under us.
_ACQUIRE_ATTEMPTS = 3
#: A renewal unanswered for this long (s) is hedged (see "Hedged renewals"): below the TCP
#: retransmission timeout's 200 ms floor.
HEDGE_AFTER = 0.15
#: At most this many hedges of one lease in flight.
MAX_HEDGES = 2


class _Unreachable(Exception):
    """No endpoint answered this call."""


class _EtcdError(Exception):
    """etcd answered with an error that another endpoint would give too."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class _BadResponse(Exception):
    """etcd's answer did not have the expected shape."""


@dataclass(frozen=True, slots=True)
class _KV:
    value: str
    create_revision: int
    lease: int


@dataclass(slots=True)
class _Held:
    lease_id: int
    epoch: int
    ttl: float


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode("ascii")


def _unb64(data: Any) -> str:
    if not isinstance(data, str):
        return ""
    return base64.b64decode(data).decode(errors="replace")


def _int(obj: dict[str, Any], field: str) -> int:
    """An int64 field of a gateway answer: a JSON string, absent when zero."""
    value = obj.get(field, 0)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise _BadResponse(f"{field}={value!r} is not an integer") from exc


def _kv(obj: Any) -> _KV | None:
    """The first key of a range response (None if there is none)."""
    if not isinstance(obj, dict):
        raise _BadResponse("range response is not an object")
    kvs = obj.get("kvs") or []
    if not kvs:
        return None
    kv = kvs[0]
    if not isinstance(kv, dict):
        raise _BadResponse("kv is not an object")
    return _KV(_unb64(kv.get("value", "")), _int(kv, "create_revision"), _int(kv, "lease"))


class EtcdBackend:
    """A :class:`vipd.witness.base.Backend` on an etcd v3 cluster (see the module docstring).

    ``endpoints`` are client URLs (``http://host:2379``) of one etcd cluster; ``node`` is this
    daemon's node name (the value of the keys it holds); ``timeout`` is per HTTP request to one
    endpoint.
    """

    name = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        node: str,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd backend needs at least one endpoint")
        for url in endpoints:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"etcd endpoint {url!r}: want http://HOST:PORT or https://...")
        if not node:
            raise ValueError("etcd backend needs a node name")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoints = [url.rstrip("/") for url in endpoints]
        self.node = node
        self.prefix = prefix
        self.timeout = timeout
        #: Upper bound on one whole operation (several HTTP calls, endpoint failover included).
        self.op_timeout = timeout * (len(self.endpoints) + 2)
        self.counters: Counter[str] = Counter()
        #: None until the first request; then whether the last one reached etcd.
        self.reachable: bool | None = None
        self._current = 0
        self._client: httpx.AsyncClient | None = None
        self._warm_up: asyncio.Task[None] | None = None
        self._on_reply: ReplyCallback | None = None
        self._in_flight: dict[tuple[str, Op], asyncio.Task[None]] = {}
        # lease -> when its newest renewal or hedge started, and its hedges in flight
        self._renew_started: dict[str, float] = {}
        self._hedges: dict[str, set[asyncio.Task[None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: dict[str, _Held] = {}
        self._log = log.bind(backend="etcd", node=node)

    # -- Backend interface --------------------------------------------------------------------

    async def start(self, on_reply: ReplyCallback) -> None:
        self._on_reply = on_reply
        if self._client is None:
            # trust_env=False: no HTTP(S)_PROXY from the environment between us and the witness.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), trust_env=False)
            # A process's first request pays for httpx's lazy set-up and a connection (50-100
            # ms more, measured): pay it now rather than in the first takeover.
            self._warm_up = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(_Unreachable, _EtcdError, _BadResponse):
            await self._call("/maintenance/status", {})

    def send(self, request: Request) -> None:
        try:
            self.counters["requests"] += 1
            if self._client is None or self._on_reply is None:
                self.counters["dropped_not_started"] += 1
                self._log.warning("witness_request_dropped", reason="not started", op=request.op)
                return
            key = (request.lease, request.op)
            task = self._in_flight.get(key)
            loop = asyncio.get_running_loop()
            if task is not None and not task.done():
                if self._may_hedge(request, loop.time()):
                    self._start_hedge(request, loop)
                    return
                self.counters["dropped_in_flight"] += 1
                self._log.debug(
                    "witness_request_dropped",
                    reason="in flight",
                    lease=request.lease,
                    op=str(request.op),
                    req_id=request.req_id,
                )
                return
            task = loop.create_task(self._serve(request), name=f"etcd-{request.op}-{request.lease}")
            if request.op is Op.RENEW:
                self._renew_started[request.lease] = loop.time()
            self._in_flight[key] = task
            task.add_done_callback(functools.partial(self._forget_task, key))
        except Exception as exc:  # never raise into the daemon
            self.counters["internal_errors"] += 1
            self._log.error("witness_send_failed", error=repr(exc))

    async def close(self) -> None:
        if self._warm_up is not None:
            self._warm_up.cancel()
            await asyncio.gather(self._warm_up, return_exceptions=True)
            self._warm_up = None
        for hedges in self._hedges.values():
            for hedge in hedges:
                hedge.cancel()
            await asyncio.gather(*hedges, return_exceptions=True)
        self._hedges.clear()
        tasks = list(self._in_flight.values())
        if tasks:  # let the last requests (the release at shutdown) finish, briefly
            await asyncio.wait(tasks, timeout=1.0)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For ``vipctl status`` and metrics."""
        return {
            "backend": self.name,
            "endpoint": self.endpoints[self._current],
            "endpoints": list(self.endpoints),
            "reachable": self.reachable,
            "counters": dict(self.counters),
        }

    # -- one request ---------------------------------------------------------------------------

    def _may_hedge(self, req: Request, now: float) -> bool:
        held = self._held.get(req.lease)
        return (
            req.op is Op.RENEW
            and held is not None
            and held.epoch == req.epoch
            and now - self._renew_started.get(req.lease, now) >= HEDGE_AFTER
            and len(self._hedges.get(req.lease, ())) < MAX_HEDGES
        )

    def _start_hedge(self, req: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.counters["hedges"] += 1
        self._renew_started[req.lease] = loop.time()
        hedges = self._hedges.setdefault(req.lease, set())
        task = loop.create_task(self._hedge(req), name=f"etcd-hedge-{req.lease}")
        hedges.add(task)
        task.add_done_callback(hedges.discard)

    async def _hedge(self, req: Request) -> None:
        """A keepalive of the lease held at ``req.epoch``, outside the lease's queue; a reply
        only if etcd extended it and it is still the one held (see "Hedged renewals")."""
        held = self._held.get(req.lease)
        if held is None or held.epoch != req.epoch:
            return
        try:
            async with asyncio.timeout(self.op_timeout):
                ttl = await self._keepalive(held.lease_id)
        except (_Unreachable, _EtcdError, _BadResponse, TimeoutError):
            return  # the queued renewal reports on reachability
        now_held = self._held.get(req.lease)
        if ttl <= 0 or now_held is None or now_held.lease_id != held.lease_id:
            return  # lapsed, released or replaced meanwhile: the queued renewal answers
        self.counters["hedges_answered"] += 1
        self._deliver(self._granted(req, held.lease_id, held.epoch, ttl, "renewed"))

    def _deliver(self, reply: Reply) -> None:
        """Hand a reply to the lease core; its errors are counted, never raised here."""
        if self._on_reply is None:
            return
        try:
            self._on_reply(reply)
        except Exception:
            self.counters["callback_errors"] += 1
            self._log.exception("witness_reply_callback_failed", lease=reply.lease)

    def _forget_task(self, key: tuple[str, Op], task: asyncio.Task[None]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]

    async def _serve(self, req: Request) -> None:
        lock = self._locks.setdefault(req.lease, asyncio.Lock())
        try:
            async with lock:
                async with asyncio.timeout(self.op_timeout):
                    reply = await self._handle(req)
        except (_Unreachable, TimeoutError) as exc:
            self.counters["unreachable"] += 1
            self._set_reachable(False, exc, req)
            return
        except _EtcdError as exc:
            self._set_reachable(True)
            self.counters["etcd_errors"] += 1
            self._log.warning(
                "witness_etcd_error", lease=req.lease, op=str(req.op), error=exc.message
            )
            reply = Reply(req.lease, req.req_id, Result.ERROR, error=str(exc))
        except _BadResponse as exc:
            self.counters["bad_responses"] += 1
            self._log.warning(
                "witness_bad_response", lease=req.lease, op=str(req.op), error=str(exc)
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not kill the daemon
            self.counters["internal_errors"] += 1
            self._log.exception("witness_internal_error", lease=req.lease, op=str(req.op))
            reply = Reply(req.lease, req.req_id, Result.ERROR, error=repr(exc))
        else:
            self._set_reachable(True)
        self.counters[f"result:{reply.result}"] += 1
        self._log.debug(
            "witness_reply",
            lease=reply.lease,
            op=str(req.op),
            req_id=reply.req_id,
            result=str(reply.result),
            epoch=reply.epoch,
            ttl=reply.ttl,
            holder=reply.holder,
            remaining=reply.remaining,
        )
        self._deliver(reply)

    def _set_reachable(
        self, ok: bool, exc: BaseException | None = None, req: Request | None = None
    ) -> None:
        was, self.reachable = self.reachable, ok
        if ok:
            if was is False:
                self._log.info("witness_reachable", endpoint=self.endpoints[self._current])
            return
        error = repr(exc) if not isinstance(exc, TimeoutError) else "operation timed out"
        fields: dict[str, Any] = {"endpoints": self.endpoints, "error": error}
        if req is not None:
            fields.update(lease=req.lease, op=str(req.op), req_id=req.req_id)
        if was is False:
            self._log.debug("witness_unreachable", **fields)
        else:
            self._log.warning("witness_unreachable", **fields)

    async def _handle(self, req: Request) -> Reply:
        key = self.prefix + req.lease
        if req.op is Op.ACQUIRE:
            if not req.ttl > 0:
                return Reply(req.lease, req.req_id, Result.ERROR, error="acquire needs ttl > 0")
            return await self._acquire(req, key, req.ttl)
        if req.op is Op.RENEW:
            return await self._renew(req, key)
        if req.op is Op.RELEASE:
            return await self._release(req, key)
        return Reply(req.lease, req.req_id, Result.ERROR, error=f"unknown op {req.op!r}")

    async def _acquire(self, req: Request, key: str, ttl: float) -> Reply:
        want = max(1, math.ceil(round(ttl, 6)))
        lease_id, applied = await self._grant(want)
        try:
            for _ in range(_ACQUIRE_ATTEMPTS):
                resp = await self._txn(
                    compare=[_cmp_create(key, 0)],
                    success=[_put(key, self.node, lease_id), _range(key)],
                    failure=[_range(key)],
                )
                kv = _kv(_op_response(resp, -1, "response_range"))
                if kv is None:
                    raise _BadResponse("txn returned no key")
                if resp.get("succeeded"):
                    return self._granted(req, lease_id, kv.create_revision, applied, "acquired")
                if kv.value == self.node:
                    moved = await self._txn(
                        compare=[_cmp_value(key, self.node), _cmp_create(key, kv.create_revision)],
                        success=[_put(key, self.node, lease_id)],
                        failure=[],
                    )
                    if moved.get("succeeded"):
                        if kv.lease not in (0, lease_id):
                            await self._revoke_quietly(kv.lease)
                        return self._granted(req, lease_id, kv.create_revision, applied, "held")
                    continue  # the key changed under us: look again
                await self._revoke_quietly(lease_id)
                lease_id = 0
                return await self._refused(req, kv)
            raise _BadResponse(f"key {key} kept changing during acquire")
        except (_BadResponse, _EtcdError):
            # The new lease may hold nothing: revoke it rather than wait for it to time out.
            held = self._held.get(req.lease)
            if lease_id and (held is None or held.lease_id != lease_id):
                with contextlib.suppress(Exception):
                    await self._revoke_quietly(lease_id)
            raise

    def _granted(self, req: Request, lease_id: int, epoch: int, ttl: int, how: str) -> Reply:
        old = self._held.get(req.lease)
        self._held[req.lease] = _Held(lease_id, epoch, float(ttl))
        if old is None or old.epoch != epoch:
            self._log.info("witness_lease_granted", lease=req.lease, epoch=epoch, ttl=ttl, how=how)
        result = Result.GRANTED
        if req.op is Op.RENEW and epoch == req.epoch:
            result = Result.RENEWED
        return Reply(req.lease, req.req_id, result, epoch=epoch, ttl=float(ttl))

    async def _refused(self, req: Request, kv: _KV) -> Reply:
        if self._held.pop(req.lease, None) is not None:
            self._log.info(
                "witness_lease_lost", lease=req.lease, holder=kv.value, epoch=kv.create_revision
            )
        remaining = await self._remaining(kv.lease)
        return Reply(
            req.lease,
            req.req_id,
            Result.REFUSED,
            epoch=kv.create_revision,
            holder=kv.value,
            remaining=remaining,
        )

    async def _renew(self, req: Request, key: str) -> Reply:
        kv = _kv(await self._call("/kv/range", {"key": _b64(key)}))
        if kv is not None and kv.value != self.node:
            held = self._held.get(req.lease)
            if held is not None:
                await self._revoke_quietly(held.lease_id)
            return await self._refused(req, kv)
        if kv is not None and kv.lease:
            ttl = await self._keepalive(kv.lease)
            if ttl > 0:
                return self._granted(req, kv.lease, kv.create_revision, ttl, "renewed")
        # No key, or its lease expired: take it again if nobody else has.
        held = self._held.get(req.lease)
        ttl_wanted = req.ttl if req.ttl > 0 else (held.ttl if held is not None else 0.0)
        if ttl_wanted <= 0:
            return Reply(req.lease, req.req_id, Result.ERROR, error="renew needs ttl > 0")
        self.counters["reacquired"] += 1
        self._log.info("witness_lease_lapsed", lease=req.lease, epoch=req.epoch)
        return await self._acquire(req, key, ttl_wanted)

    async def _release(self, req: Request, key: str) -> Reply:
        resp = await self._txn(
            compare=[_cmp_value(key, self.node), _cmp_create(key, req.epoch)],
            success=[{"request_delete_range": {"key": _b64(key), "prev_kv": True}}],
            failure=[],
        )
        leases: set[int] = set()
        if resp.get("succeeded"):
            deleted = _op_response(resp, 0, "response_delete_range")
            for prev in deleted.get("prev_kvs") or []:
                if isinstance(prev, dict):
                    leases.add(_int(prev, "lease"))
            self._log.info("witness_lease_released", lease=req.lease, epoch=req.epoch)
        held = self._held.get(req.lease)
        if held is not None and held.epoch == req.epoch:
            leases.add(held.lease_id)
            del self._held[req.lease]
        for lease_id in sorted(leases - {0}):
            with contextlib.suppress(Exception):
                await self._revoke_quietly(lease_id)
        return Reply(req.lease, req.req_id, Result.RELEASED, epoch=req.epoch)

    # -- etcd calls ----------------------------------------------------------------------------

    async def _grant(self, ttl: int) -> tuple[int, int]:
        resp = await self._call("/lease/grant", {"TTL": str(ttl)})
        lease_id, applied = _int(resp, "ID"), _int(resp, "TTL")
        if lease_id == 0 or applied < ttl:
            raise _BadResponse(f"lease grant answered ID={lease_id} TTL={applied} for TTL={ttl}")
        return lease_id, applied

    async def _keepalive(self, lease_id: int) -> int:
        """The TTL etcd renewed the lease to; <= 0 when it has expired (or never existed)."""
        resp = await self._call("/lease/keepalive", {"ID": str(lease_id)})
        result = resp.get("result")
        if not isinstance(result, dict):
            raise _BadResponse("keepalive answered without a result")
        return _int(result, "TTL")

    async def _remaining(self, lease_id: int) -> float:
        """Seconds (upper bound) until ``lease_id`` expires; 0 if it has or is unknown."""
        if lease_id == 0:
            self._log.warning("witness_key_without_lease", prefix=self.prefix)
            return 0.0
        resp = await self._call("/lease/timetolive", {"ID": str(lease_id)})
        ttl = _int(resp, "TTL")
        return float(ttl + 1) if ttl >= 0 else 0.0

    async def _revoke_quietly(self, lease_id: int) -> None:
        """Revoke; a lease that is already gone is fine."""
        try:
            await self._call("/lease/revoke", {"ID": str(lease_id)})
        except _EtcdError as exc:
            if exc.code != _NOT_FOUND:
                raise

    async def _txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"compare": compare, "success": success}
        if failure:
            body["failure"] = failure
        return await self._call("/kv/txn", body)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the gateway, trying each endpoint once starting with the current."""
        client = self._client
        if client is None:
            raise _Unreachable("backend closed")
        last: BaseException | None = None
        for i in range(len(self.endpoints)):
            index = (self._current + i) % len(self.endpoints)
            url = self.endpoints[index] + API + path
            try:
                resp = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                last = exc
            else:
                try:
                    data = _decode(resp)
                except _EtcdError as exc:
                    if resp.status_code < 500 and exc.code not in _RETRY_CODES:
                        self._current = index
                        raise
                    last = exc
                else:
                    self._current = index
                    return data
            self.counters["endpoint_errors"] += 1
            self._log.debug(
                "witness_endpoint_failed", endpoint=self.endpoints[index], error=repr(last)
            )
        raise _Unreachable(repr(last))


def _decode(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of a gateway answer (the first line: keepalive is a stream)."""
    text = resp.text.strip()
    line = text.split("\n", 1)[0] if text else ""
    try:
        data = json.loads(line) if line else {}
    except ValueError as exc:
        # Not etcd's gateway at all (a proxy's error page, a wrong port): try another endpoint.
        raise _EtcdError(
            _UNAVAILABLE, f"HTTP {resp.status_code}, not JSON: {line[:100]!r}"
        ) from exc
    if not isinstance(data, dict):
        raise _BadResponse(f"not a JSON object: {line[:200]!r}")
    error = data.get("error")
    if resp.status_code >= 400 or error is not None:
        # Unary: {"error": "...", "message": "...", "code": 14}; stream: {"error": {...}}.
        info: dict[str, Any] = error if isinstance(error, dict) else data
        raw: object = info.get("code", info.get("grpc_code", 2))
        message = str(info.get("message") or info.get("error") or f"HTTP {resp.status_code}")
        code = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else 2
        raise _EtcdError(code, message)
    return data


def _op_response(resp: dict[str, Any], index: int, kind: str) -> dict[str, Any]:
    responses = resp.get("responses") or []
    try:
        item = responses[index][kind]
    except (IndexError, KeyError, TypeError) as exc:
        raise _BadResponse(f"txn answer lacks {kind}") from exc
    if not isinstance(item, dict):
        raise _BadResponse(f"txn {kind} is not an object")
    return item


def _cmp_create(key: str, revision: int) -> dict[str, Any]:
    return {
        "key": _b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }


def _cmp_value(key: str, value: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def _put(key: str, value: str, lease_id: int) -> dict[str, Any]:
    return {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease_id)}}


def _range(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}
