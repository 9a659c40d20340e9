"""The daemon: wires the pure cores to sockets, netlink and one timer per instance.

Everything that decides lives in :mod:`vipd.vrrp.machine` and :mod:`vipd.announce.schedule`;
this layer only feeds them packets and ``now`` and carries out the actions they return. Time is
CLOCK_BOOTTIME, which keeps counting while the host is suspended; asyncio's own clock is used
only to arm the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import structlog

from vipd import sdnotify
from vipd.announce.frames import announcement_frames, vmac_for
from vipd.announce.schedule import AnnounceParams
from vipd.config import (
    ConfigError,
    DaemonConfig,
    GroupConfig,
    InstanceConfig,
    WitnessConfig,
    load_config,
)
from vipd.control import ControlError, ControlServer
from vipd.fence import peer
from vipd.fence.lease import (
    Granted,
    LeaseClient,
    LeaseEvent,
    LeaseParams,
    LeaseState,
    Lost,
    Policy,
    Refused,
    Released,
    Send,
    WitnessError,
)
from vipd.net.addrs import AddressManager, LinkInfo, NetlinkError
from vipd.net.guard import VipGuard
from vipd.net.packet import FrameSender
from vipd.net.peer import PeerSocket
from vipd.net.vrrpsock import Datagram, VrrpSocket
from vipd.sched import (
    limit_realtime_run,
    realtime_run_limit,
    request_realtime,
    request_slice,
)
from vipd.timers import TimerFdAlarm, Timers
from vipd.track.core import (
    HOOK_STATES,
    Hooks,
    Tracker,
    Verdict,
    group_faults,
    group_state,
    group_step_downs,
    hook_argvs,
    judge,
)
from vipd.track.hooks import HookQueue
from vipd.track.runner import TrackerRunner
from vipd.vrrp.machine import (
    AcquireLease,
    AddVips,
    Announce,
    Machine,
    Params,
    ReleaseLease,
    RemoveVips,
    SendAdvert,
    State,
    StateChanged,
)
from vipd.vrrp.packet import (
    GROUP_V4,
    GROUP_V6,
    TTL,
    Advert,
    ChecksumMode,
    PacketError,
    decode,
    encode,
)
from vipd.witness.base import Backend, Reply
from vipd.witness.proto import ProtoError

IPAddress = IPv4Address | IPv6Address
log = structlog.get_logger("vipd")


#: The scheduler slice the event loop's thread asks for (vipd.sched), shorter than the default so
#: that a wake-up preempts a CPU hog sooner; one phase's burst of adverts at 100 instances (20
#: sends of 40-130 us) can outrun it (docs/chaos.md finding 5).
SCHED_SLICE = 0.001
#: With ``realtime_priority``: RLIMIT_RTTIME, CPU time the loop may run without blocking under
#: SCHED_RR. At the soft limit (SIGXCPU) it drops back to SCHED_OTHER and tries again after
#: REALTIME_RETRY; the kernel kills it at the hard one (a loop stuck in C). A burst of adverts
#: takes about a millisecond, a reload of 255 instances some tens.
REALTIME_RUN = (0.5, 2.0)
REALTIME_RETRY = 5.0

#: At most one pass of neighbour flushes per this many seconds (_flush_unresolved_neighbours):
#: under a CPU hog, with 1000 entries in the table, a takeover of 100 instances that flushed
#: once per instance left the loop blocked for seconds (docs/chaos.md finding 10).
NEIGHBOUR_FLUSH_SPACING = 1.0


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class StartupError(Exception):
    """The daemon cannot start with this config on this host (missing interface, no address)."""


@dataclass
class Transition:
    old: str
    new: str
    reason: str
    priority: int
    at: float  # wall clock, for humans


@dataclass(eq=False)  # hashed by identity: it keys the timers
class InstanceRuntime:
    """One configured instance and the I/O resources it uses."""

    cfg: InstanceConfig
    machine: Machine
    sock: VrrpSocket
    sender: FrameSender
    vip_ifname: str
    mac: bytes
    primary: IPAddress
    checksum: ChecksumMode
    lease: LeaseClient | None = None  # fenced instances only
    counters: Counter[str] = field(default_factory=Counter)
    last_transition: Transition | None = None
    kernel_expiry: float = 0.0  # fenced: when the kernel drops the VIPs by itself (S4)
    pings: dict[int, float] = field(default_factory=dict)  # peer ping seq -> sent at
    peer_ready_at: float | None = None  # last confirmation from a peer ready to take over
    handing_over: bool = False  # tell the peer to take over once the witness confirms release
    fence_task: asyncio.Task[None] | None = None
    # The last advert that passed decode(), with its bytes, source and destination.
    last_received: tuple[bytes, IPAddress, IPAddress, Advert] | None = None
    faults: dict[str, str] = field(default_factory=dict)  # source -> reason (maintenance, ...)
    hooks: HookQueue | None = None  # notify commands, run in order off the VRRP path
    group: str | None = None  # the sync group it belongs to
    tracking: TrackerRunner | None = None  # its trackers; None without any
    verdict: Verdict | None = None  # what its trackers said, once each had reported
    track_task: asyncio.Task[None] | None = None  # waiting for the trackers' first results
    _advert_cache: dict[int, list[Datagram]] = field(default_factory=dict)

    @functools.cached_property
    def vip_addresses(self) -> frozenset[IPAddress]:
        return frozenset(self.vip_tuple)

    @functools.cached_property
    def vip_tuple(self) -> tuple[IPAddress, ...]:  # as our own adverts list them
        return tuple(v.ip for v in self.cfg.vips)

    @functools.cached_property
    def announcement(self) -> list[bytes]:
        """GARP / unsolicited NA frames for the VIPs; they change only with the config."""
        return announcement_frames(self.mac, [v.ip for v in self.cfg.vips])

    def advert_packets(self, priority: int) -> list[Datagram]:
        """The adverts to send for ``priority``, one per destination (built once per priority:
        the hot path only sends bytes)."""
        cached = self._advert_cache.get(priority)
        if cached is None:
            advert = Advert(
                self.cfg.vrid,
                priority,
                self.cfg.advert_centiseconds,
                tuple(v.ip for v in self.cfg.vips),
            )
            group: IPAddress = GROUP_V4 if self.cfg.family == 4 else GROUP_V6
            targets = self.cfg.unicast_peers or (group,)
            cached = [
                self.sock.prepare(
                    encode(advert, self.primary, dst, self.checksum), self.primary, dst
                )
                for dst in targets
            ]
            self._advert_cache[priority] = cached
        return cached


# What a reload cannot change in place: the instance is replaced (shut down, started again).
# Everything else (priority, interval, VIPs, preemption, announcements, peers, lease TTL,
# trackers and hooks: docs/operations.md, docs/tracking.md) is applied to the running instance.
_REPLACES = frozenset(
    {"interface", "vrid", "checksum", "use_vmac", "unicast_source", "fence", "lease_name"}
)


def _in_place(old: InstanceConfig, new: InstanceConfig) -> bool:
    changed = {f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)}
    return old.family == new.family and not changed & _REPLACES


def _params(cfg: InstanceConfig, primary: IPAddress) -> Params:
    return Params(
        vrid=cfg.vrid,
        priority=cfg.priority,
        advert_interval=cfg.advert_centiseconds,
        primary=primary,
        preempt=cfg.preempt,
        preempt_delay=cfg.preempt_delay,
        announce=AnnounceParams(cfg.announce_count, cfg.announce_spacing, cfg.announce_refresh),
        fenced=cfg.fence,
    )


class Daemon:
    def __init__(self, config: DaemonConfig, addrs: AddressManager | None = None) -> None:
        self.config = config
        # A daemon that owns its netlink also keeps a guard, which removes the VIPs if the
        # daemon dies (vipd.net.guard). One given its AddressManager is a test's.
        self.guard = VipGuard() if addrs is None else None
        self.addrs = addrs or AddressManager(guard=self.guard)
        self.instances: dict[str, InstanceRuntime] = {}
        self.drops: Counter[str] = Counter()  # packets we could not attribute to an instance
        self._sockets: dict[tuple[str, int], VrrpSocket] = {}
        self._senders: dict[str, FrameSender] = {}
        self._by_vrid: dict[tuple[str, int], dict[int, InstanceRuntime]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: Timers[InstanceRuntime] | None = None
        self._control: ControlServer | None = None
        self.witness: Backend | None = None
        self._peer: PeerSocket | None = None
        self._by_lease: dict[str, InstanceRuntime] = {}
        self._ping_seq = secrets.randbelow(2**62)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._reloading: asyncio.Lock | None = None
        self.started = boottime()
        self.realtime = False  # the loop's thread runs SCHED_RR (realtime_priority)
        self.realtime_drops = 0  # times it ran too long without blocking and dropped back
        self.groups: dict[str, GroupConfig] = {}
        self._group_of: dict[str, str] = {}  # instance -> its sync group
        self._group_state: dict[str, str | None] = {}
        self._group_hooks: dict[str, HookQueue] = {}
        self._background: set[asyncio.Task[None]] = set()  # closing trackers and hook queues
        # Neighbour flushes asked for and not yet run: interfaces -> the first asker.
        self._flushes: dict[tuple[str, str], InstanceRuntime] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._flushed_at = -NEIGHBOUR_FLUSH_SPACING
        self._ready = False  # READY=1 sent: systemd's status line follows the states from then
        self._status_handle: asyncio.Handle | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def run(self, shutdown: asyncio.Event | None = None) -> None:
        """Run until ``shutdown`` is set (SIGTERM/SIGINT set it when none is passed; SIGHUP
        reloads the config)."""
        self._loop = asyncio.get_running_loop()
        try:
            request_slice(SCHED_SLICE)  # the loop's thread: it sends every advert
        except OSError as exc:
            log.info("sched-slice-refused", error=str(exc))
        loop = self._loop
        if self.guard is not None:
            loop.add_reader(self.guard.fileno(), self._on_guard_exit)
            log.info("vip-guard-started", pid=self.guard.pid)
        self._timers = Timers(lambda due: TimerFdAlarm(loop, due), boottime, self._on_timer)
        if shutdown is None:
            shutdown = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, shutdown.set)
            self._loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        watchdog: asyncio.Task[None] | None = None
        metrics: Any = None
        try:
            self._sync_groups()
            for cfg in self.config.instances:
                self._create_instance(cfg)
            if self.config.witness is not None and self._by_lease:
                await self._start_fencing(self.config.witness)
            self._control = ControlServer(
                self.config.control_socket, self, self.config.control_group
            )
            await self._control.start()
            if self.config.metrics_listen is not None:
                metrics = self._start_metrics(self.config.metrics_listen)
            for inst in self.instances.values():
                self._start_instance(inst)
            await self._started()
            self._go_realtime()  # after the start-up, which may run long without blocking
            # Sockets are bound and every instance knows its state: tell systemd.
            sdnotify.ready()
            self._ready = True
            self._notify_status()
            watchdog = self._loop.create_task(sdnotify.watchdog_loop())
            await shutdown.wait()
        finally:
            sdnotify.stopping()
            if watchdog is not None:
                watchdog.cancel()
            if metrics is not None:
                metrics.close()
            self._teardown()  # queues the STOP hooks
            await self._stop_fencing()
            await self._drain()

    def _go_realtime(self, retry: bool = False) -> None:
        """SCHED_RR for the loop's thread, with ``[daemon] realtime_priority`` (vipd.sched)."""
        priority = self.config.realtime_priority
        if not priority:
            return
        if not retry:
            try:
                soft, hard = limit_realtime_run(*REALTIME_RUN)
            except OSError as exc:  # a seccomp filter: systemd's LimitRTTIME= still applies
                soft, hard = realtime_run_limit()
                log.warning("realtime-limit-refused", error=str(exc))
            signal.signal(signal.SIGXCPU, self._on_realtime_overrun)
            rttime = [None if math.isinf(x) else x for x in (soft, hard)]  # None: no limit
            log.info("realtime", policy="rr", priority=priority, rttime=rttime)
        try:
            request_realtime(priority)
        except OSError as exc:
            log.warning(
                "realtime-refused",
                priority=priority,
                error=str(exc),
                hint="needs CAP_SYS_NICE or RLIMIT_RTPRIO >= priority (docs/systemd.md)",
            )
            return
        self.realtime = True

    def _on_realtime_overrun(self, signum: int, frame: object) -> None:
        """SIGXCPU: the loop ran REALTIME_RUN[0] s without blocking under SCHED_RR. Runs in the
        main thread between two bytecodes, so also while the loop is busy."""
        with contextlib.suppress(OSError):
            request_slice(SCHED_SLICE)
        self.realtime = False
        self.realtime_drops += 1
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._realtime_dropped)

    def _realtime_dropped(self) -> None:
        log.warning("realtime-dropped", drops=self.realtime_drops, retry_in=REALTIME_RETRY)
        assert self._loop is not None
        self._loop.call_later(REALTIME_RETRY, self._go_realtime, True)

    def _create_instance(self, cfg: InstanceConfig) -> InstanceRuntime:
        """Resolve the instance's interface and sockets; it starts in INITIALIZE."""
        try:
            link = self.addrs.link(cfg.interface)
        except NetlinkError as exc:
            raise StartupError(f"instance {cfg.name}: {exc}") from exc
        primary = self._primary_address(cfg, link)
        vip_ifname, mac = cfg.interface, link.mac
        if cfg.use_vmac:
            vip_ifname = self.addrs.ensure_vmac(cfg.interface, cfg.vrid, cfg.family)
            mac = vmac_for(cfg.vrid, cfg.family)
        # A crashed run may have left our VIPs behind; we start as backup, so they go.
        for vip in cfg.vips:
            if self.addrs.remove_vip(vip_ifname, vip):
                log.warning("stale-vip-removed", instance=cfg.name, vip=str(vip))
        key = (cfg.interface, cfg.family)
        sock = self._sockets.get(key)
        if sock is None:
            sock = VrrpSocket(cfg.interface, link.index, cfg.family)
            self._sockets[key] = sock
            self._by_vrid[key] = {}
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        if not cfg.unicast_peers:
            sock.join_group()
        sender = self._senders.get(vip_ifname)
        if sender is None:
            sender = self._senders[vip_ifname] = FrameSender(vip_ifname)
        inst = InstanceRuntime(
            cfg=cfg,
            machine=Machine(_params(cfg, primary)),
            sock=sock,
            sender=sender,
            vip_ifname=vip_ifname,
            mac=mac,
            primary=primary,
            checksum=ChecksumMode(cfg.checksum),
        )
        if _hooks(cfg):
            inst.hooks = HookQueue(f"instance {cfg.name}", cfg.notify_timeout, inst.counters)
        if cfg.trackers:
            inst.tracking = self._tracker_runner(inst)
        inst.group = self._group_of.get(cfg.name)
        self.instances[cfg.name] = inst
        self._by_vrid[key][cfg.vrid] = inst
        if cfg.fence and self.config.witness is not None:
            inst.lease = LeaseClient(self._lease_params(cfg, inst.machine))
            self._by_lease[cfg.lease_name] = inst
        return inst

    def _start_instance(self, inst: InstanceRuntime) -> None:
        """Start the machine; with trackers, start them first and the machine once each has
        reported (bounded by its check's timeout), so the instance starts with the priority
        and fault its trackers give it."""
        if inst.tracking is None:
            self._apply_tracking()  # a group member may be in FAULT already
            self._begin(inst)
            return
        assert self._loop is not None
        inst.track_task = self._loop.create_task(
            self._start_tracked(inst, inst.tracking), name=f"start {inst.cfg.name}"
        )

    def _begin(self, inst: InstanceRuntime) -> None:
        cfg = inst.cfg
        log.info(
            "instance-start",
            instance=cfg.name,
            interface=cfg.interface,
            vrid=cfg.vrid,
            priority=cfg.priority,
            effective_priority=inst.machine.priority,
            fault=inst.machine.fault,
            primary=str(inst.primary),
            vips=[str(v) for v in cfg.vips],
            mode="unicast" if cfg.unicast_peers else "multicast",
            fenced=inst.lease is not None,
        )
        inst.machine.start(boottime())
        self._after(inst)

    def _stop_instance(self, inst: InstanceRuntime) -> None:
        """Shut one instance down (priority-0 advert, VIPs off, lease released) and forget
        it; sockets no other instance uses are closed."""
        if inst.track_task is not None:
            inst.track_task.cancel()
            inst.track_task = None
        if inst.tracking is not None:
            self._in_background(inst.tracking.close())
            inst.tracking = None
        inst.machine.shutdown(boottime())
        self._pump(inst)
        if inst.hooks is not None:
            self._in_background(inst.hooks.close())  # after its STOP hooks ran
        if self._timers is not None:
            self._timers.cancel(inst)
        if inst.fence_task is not None:
            inst.fence_task.cancel()
        if inst.cfg.use_vmac:
            with contextlib.suppress(NetlinkError):
                self.addrs.remove_vmac(inst.vip_ifname)
        key = (inst.cfg.interface, inst.cfg.family)
        del self.instances[inst.cfg.name]
        self._by_vrid[key].pop(inst.cfg.vrid, None)
        if self._by_lease.get(inst.cfg.lease_name) is inst:
            del self._by_lease[inst.cfg.lease_name]
        if not self._by_vrid[key]:
            del self._by_vrid[key]
            sock = self._sockets.pop(key)
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        if not any(i.sender is inst.sender for i in self.instances.values()):
            self._senders.pop(inst.vip_ifname, None)
            inst.sender.close()

    def _start_metrics(self, listen: tuple[str, int]) -> Any:
        from vipd.metrics import Metrics, on_loop, start_http

        assert self._loop is not None
        server = start_http(Metrics(on_loop(self._loop, self.status)), *listen)
        log.info("metrics", listen=f"{server.host}:{server.port}")
        return server

    def _lease_params(self, cfg: InstanceConfig, machine: Machine) -> LeaseParams:
        assert self.config.witness is not None
        interval = cfg.advert_interval
        return LeaseParams(
            name=cfg.lease_name,
            # Our own Master_Down_Interval is the shortest of the pair's when we are the
            # higher priority: the lease runs out before the backup's timer fires.
            ttl=cfg.lease_ttl or machine.master_down_interval,
            renew_interval=interval,
            # Eight tries per interval: at 30 % loss each way, ~25 tries before the lease
            # could run out, so loss alone does not cost the lease (fencing.md). Fewer while
            # the witness answers slower than that (LeaseClient.retry_after).
            retry_interval=max(0.01, min(interval / 8, 0.25)),
            policy=Policy(self.config.witness.policy),
        )

    async def _start_fencing(self, witness: WitnessConfig) -> None:
        if witness.backend == "etcd":
            from vipd.witness.etcd import EtcdBackend

            self.witness = EtcdBackend(list(witness.endpoints), self.config.node_name)
        else:
            from vipd.witness.embedded import EmbeddedBackend

            assert witness.address is not None
            self.witness = EmbeddedBackend(witness.address, witness.key, self.config.node_name)
        await self.witness.start(self._on_witness_reply)
        self._peer = PeerSocket(witness.peer_port)
        await self._peer.start(self._on_peer_datagram)
        log.info(
            "witness",
            backend=witness.backend,
            policy=witness.policy,
            leases=sorted(self._by_lease),
            peer_port=witness.peer_port,
        )

    async def _stop_fencing(self) -> None:
        for inst in self.instances.values():
            if inst.fence_task is not None:
                inst.fence_task.cancel()
        if self.witness is not None:
            await self.witness.close()  # lets the releases sent at teardown go out
        if self._peer is not None:
            await self._peer.close()

    # ---- tracking, sync groups, hooks (docs/tracking.md; the rules: vipd.track.core) --------
    def _tracker_runner(self, inst: InstanceRuntime) -> TrackerRunner:
        runner = TrackerRunner({inst.cfg.name: inst.cfg.trackers})
        runner.on_change = functools.partial(self._on_tracker_change, inst, runner)
        return runner

    async def _start_tracked(self, inst: InstanceRuntime, runner: TrackerRunner) -> None:
        try:
            await runner.start()
            await runner.first_results()
            inst.verdict = judge(inst.cfg.priority, runner.trackers[inst.cfg.name])
        except Exception:  # never leave an instance unstarted; but not as a candidate
            log.exception("tracking-failed", instance=inst.cfg.name)
            inst.verdict = Verdict(inst.cfg.priority, "track:failed-to-start")
        inst.track_task = None
        self._apply_tracking()
        self._begin(inst)

    async def _retrack(self, inst: InstanceRuntime, runner: TrackerRunner) -> None:
        """A reload changed the trackers: the new ones take over once each has reported;
        until then the old verdict stands (no flap while they start)."""
        try:
            await runner.start()
            await runner.first_results()
        except Exception:
            log.exception("tracking-failed", instance=inst.cfg.name)
            return
        finally:
            if inst.track_task is asyncio.current_task():
                inst.track_task = None
        if inst.tracking is runner:
            inst.verdict = judge(inst.cfg.priority, runner.trackers[inst.cfg.name])
            self._apply_tracking()

    async def _started(self) -> None:
        """Until every instance has started (those with trackers: after their first results)."""
        tasks = [i.track_task for i in self.instances.values() if i.track_task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_tracker_change(
        self, inst: InstanceRuntime, runner: TrackerRunner, instance: str, tracker: Tracker
    ) -> None:
        if inst.tracking is not runner or self.instances.get(inst.cfg.name) is not inst:
            return  # replaced by a reload, or stopped
        fields: dict[str, Any] = {
            "instance": instance,
            "tracker": tracker.params.name,
            "kind": tracker.params.kind.value,
            "ok": tracker.ok,
            "error": None if tracker.ok else tracker.last_error,
        }
        self._publish("tracker", **fields)
        if runner.complete:  # else: _start_tracked / _retrack judge once all reported
            inst.verdict = judge(inst.cfg.priority, runner.trackers[inst.cfg.name])
            self._apply_tracking()

    def _apply_tracking(self) -> None:
        """Feed the trackers' verdicts into the machines: effective priority, and FAULT for
        an instance whose own trackers failed or another member of whose group is in FAULT
        (core.group_faults; maintenance counts as a member's FAULT too)."""
        now = boottime()
        verdicts = {
            name: inst.verdict or Verdict(inst.cfg.priority, None)
            for name, inst in self.instances.items()
        }
        own = {
            name: verdicts[name].fault
            or next((r for src, r in inst.faults.items() if src not in ("track", "group")), None)
            for name, inst in self.instances.items()
        }
        faults = group_faults(own, {g.name: g.instances for g in self.groups.values()})
        for name, inst in self.instances.items():
            machine, priority = inst.machine, verdicts[name].priority
            if priority != machine.priority:
                log.info(
                    "effective-priority",
                    instance=name,
                    priority=priority,
                    previous=machine.priority,
                    configured=inst.cfg.priority,
                )
                machine.set_priority(priority, now)
                self._after(inst)
            group = faults[name] if own[name] is None else None
            self._set_faults(inst, {"track": verdicts[name].fault, "group": group})

    def _sync_groups(self) -> None:
        """(Re)read the [[group]] tables: membership, hook queues, states."""
        old, self.groups = self.groups, {g.name: g for g in self.config.groups}
        self._group_of = {m: g.name for g in self.groups.values() for m in g.instances}
        for name, queue in list(self._group_hooks.items()):
            new = self.groups.get(name)
            if new is None or (_hooks(new), new.notify_timeout) != (
                _hooks(old[name]),
                old[name].notify_timeout,
            ):
                self._in_background(queue.close())
                del self._group_hooks[name]
        for group in self.groups.values():
            if _hooks(group) and group.name not in self._group_hooks:
                self._group_hooks[group.name] = HookQueue(
                    f"group {group.name}", group.notify_timeout
                )
            self._group_state.setdefault(group.name, None)
        for name in set(self._group_state) - set(self.groups):
            del self._group_state[name]
        for inst in self.instances.values():
            inst.group = self._group_of.get(inst.cfg.name)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain(self) -> None:
        """Let the queued hooks (the STOP hooks among them) run, each within its timeout,
        and the trackers finish closing."""
        for queue in self._group_hooks.values():
            self._in_background(queue.close())
        self._group_hooks.clear()
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _on_state_changed(self, inst: InstanceRuntime, change: StateChanged) -> None:
        """Hooks for the transition, then the sync group: members follow a member that
        stopped being master (core.group_step_downs), and the group's own state may change."""
        name, state = inst.cfg.name, HOOK_STATES[change.new]
        if inst.hooks is not None:
            argvs = hook_argvs(_hooks(inst.cfg), "INSTANCE", name, state, change.priority)
            inst.hooks.push(argvs, state)
        group = self.groups.get(inst.group or "")
        if group is None:
            return
        states = {m: self._state_of(m) for m in group.instances}
        for member in group_step_downs(group.instances, name, change.old, change.new, states):
            other = self.instances[member]
            if other.machine.step_down(boottime(), reason=f"group:{group.name}"):
                self._after(other)
        new = group_state(self._state_of(m) for m in group.instances)
        old = self._group_state.get(group.name)
        if new is None or new == old:
            return
        log.info("group-transition", group=group.name, old=old, new=new)
        self._publish("group-transition", group=group.name, old=old, new=new)
        self._group_state[group.name] = new
        queue = self._group_hooks.get(group.name)
        if queue is not None:
            queue.push(hook_argvs(_hooks(group), "GROUP", group.name, new), new)

    def _state_of(self, instance: str) -> State:
        inst = self.instances.get(instance)
        return State.INITIALIZE if inst is None else inst.machine.state  # gone: stopped

    @staticmethod
    def _primary_address(cfg: InstanceConfig, link: LinkInfo) -> IPAddress:
        """The address adverts are sent from: RFC 5798 wants the interface's primary IPv4
        address, or its IPv6 link-local address."""
        if cfg.unicast_source is not None:
            return cfg.unicast_source
        if cfg.family == 6:
            if link.ipv6_link_local is None:
                raise StartupError(
                    f"instance {cfg.name}: {cfg.interface} has no IPv6 link-local address"
                )
            return link.ipv6_link_local
        vip_addrs = {v.ip for v in cfg.vips}
        for iface in link.ipv4:
            if iface.ip not in vip_addrs:
                return iface.ip
        raise StartupError(
            f"instance {cfg.name}: {cfg.interface} has no IPv4 address besides the VIPs; "
            "VRRP needs one to send adverts from"
        )

    def _teardown(self) -> None:
        self._ready = False
        if self._status_handle is not None:
            self._status_handle.cancel()
        for inst in list(self.instances.values()):
            self._stop_instance(inst)
        if self._control is not None:
            self._control.close()
        for sock in self._sockets.values():
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for sender in self._senders.values():
            sender.close()
        self._sockets.clear()
        self._senders.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.addrs.close()
        if self.guard is not None:  # it has nothing left to remove, unless a removal failed
            if self._loop is not None:
                self._loop.remove_reader(self.guard.fileno())
            self.guard.close()
        if self._timers is not None:
            self._timers.close()
        log.info("stopped")

    def _on_guard_exit(self) -> None:
        """The guard exited (killed on its own, or crashed): the VIPs need a new one."""
        assert self._loop is not None and self.guard is not None
        self._loop.remove_reader(self.guard.fileno())
        status = self.guard.restart()
        self._loop.add_reader(self.guard.fileno(), self._on_guard_exit)
        log.warning("vip-guard-restarted", status=status, pid=self.guard.pid)

    # ---- inputs ----------------------------------------------------------------------------
    def _on_readable(self, sock: VrrpSocket) -> None:
        for _ in range(256):  # bounded so one busy socket cannot starve the loop
            try:
                received = sock.receive()
            except PacketError as exc:
                self.drops[exc.reason] += 1
                continue
            except OSError as exc:
                self.drops["socket-error"] += 1
                log.warning("receive-error", interface=sock.ifname, error=str(exc))
                return
            if received is None:
                return
            self._dispatch(sock, received.src, received.dst, received.ttl, received.payload)

    def _dispatch(
        self, sock: VrrpSocket, src: IPAddress, dst: IPAddress, ttl: int, payload: bytes
    ) -> None:
        inst = (
            self._by_vrid[(sock.ifname, sock.family)].get(payload[1]) if len(payload) >= 2 else None
        )
        if inst is None:
            self.drops["unknown-vrid" if len(payload) >= 2 else "truncated"] += 1
            return
        last = inst.last_received
        if last is not None and ttl == TTL and last[0] == payload and last[1:3] == (src, dst):
            advert = last[3]  # the master repeats itself: these bytes were checked already
        else:
            try:
                advert = decode(payload, src, dst, ttl, inst.checksum)
            except PacketError as exc:
                inst.counters[f"drop:{exc.reason}"] += 1
                log.debug("advert-dropped", instance=inst.cfg.name, reason=exc.reason, src=str(src))
                return
            inst.last_received = (payload, src, dst, advert)
        if inst.cfg.unicast_peers and src not in inst.cfg.unicast_peers:
            inst.counters["drop:unknown-peer"] += 1
            return
        inst.counters["adverts_received"] += 1
        if advert.addresses != inst.vip_tuple and frozenset(advert.addresses) != inst.vip_addresses:
            # RFC 5798 7.1: a misconfiguration to log. keepalived drops such adverts, so a
            # mixed pair whose VIP lists differ ends in split brain: say so loudly, once.
            if not inst.counters["advert-vip-mismatch"]:
                log.warning(
                    "advert-vip-mismatch",
                    instance=inst.cfg.name,
                    src=str(src),
                    theirs=sorted(str(a) for a in advert.addresses),
                    ours=sorted(str(a) for a in inst.vip_addresses),
                )
            inst.counters["advert-vip-mismatch"] += 1
        now = boottime()
        self._check_lease(inst, now)
        inst.machine.receive(advert, src, now)
        self._after(inst)

    def _on_timer(self, inst: InstanceRuntime) -> None:
        now = boottime()
        self._check_lease(inst, now)
        inst.machine.handle_timer(now)
        self._after(inst)

    def _check_lease(self, inst: InstanceRuntime, now: float) -> None:
        """Before anything else, and first of all on waking from a freeze: has our lease run
        out? (fencing.md S3: a resumed master drops the VIP before it sends an advert.)"""
        if inst.lease is not None:
            inst.lease.handle_timer(now)
            self._pump(inst)

    def _on_witness_reply(self, reply: Reply) -> None:
        inst = self._by_lease.get(reply.lease)
        if inst is None or inst.lease is None:
            self.drops["witness-unknown-lease"] += 1
            return
        now = boottime()
        self._check_lease(inst, now)
        if not inst.lease.on_reply(reply, now):
            inst.counters["lease:stale-replies"] += 1
        self._after(inst)

    def _on_peer_datagram(self, data: bytes, src: IPAddress, port: int) -> None:
        assert self.config.witness is not None
        try:
            message = peer.decode(self.config.witness.key, data)
        except ProtoError as exc:
            self.drops[f"peer:{exc.reason}"] += 1
            return
        inst = self._by_lease.get(message.lease)
        if inst is None or inst.lease is None:
            self.drops["peer:unknown-lease"] += 1
            return
        now = boottime()
        if isinstance(message, peer.Takeover):
            if message.primary == inst.machine.master_address and inst.machine.take_over(now):
                inst.counters["peer:takeovers-received"] += 1
                log.info("takeover-requested", instance=inst.cfg.name, by=message.node)
                self._after(inst)
            return
        if isinstance(message, peer.Ping):
            # Confirm only to the master we follow, and only what our timer promises.
            promise = inst.machine.promise(now)
            if promise is None or message.primary != inst.machine.master_address:
                inst.counters["peer:pings-unconfirmed"] += 1
                return
            ready = inst.machine.state is State.BACKUP
            reply = peer.Confirm(message.lease, self.config.node_name, message.seq, promise, ready)
            self._peer_send(peer.encode_confirm(self.config.witness.key, reply), src, port)
            inst.counters["peer:confirms-sent"] += 1
        else:
            sent_at = inst.pings.pop(message.seq, None)
            if sent_at is None:
                inst.counters["peer:stale-confirms"] += 1
                return
            inst.counters["peer:confirms-received"] += 1
            if message.ready:
                inst.peer_ready_at = now
            inst.lease.peer_confirmed(sent_at, message.promise)
            self._after(inst)

    def _peer_send(self, data: bytes, dst: IPAddress, port: int | None = None) -> None:
        assert self._peer is not None
        self._peer.send(data, dst, port)

    # ---- outputs ---------------------------------------------------------------------------
    def _after(self, inst: InstanceRuntime) -> None:
        """Carry out what the cores decided, then make sure the instance's timer fires no later
        than the cores' next deadline (vipd.timers: an earlier one is kept)."""
        self._pump(inst)
        deadline = inst.machine.get_timer()
        if inst.lease is not None:
            lease_at = inst.lease.get_timer()
            if lease_at is not None and (deadline is None or lease_at < deadline):
                deadline = lease_at
        if deadline is not None and self._timers is not None:
            self._timers.arm(inst, deadline)

    def _pump(self, inst: InstanceRuntime) -> None:
        """Carry out the machine's actions and the lease's events until both are quiet (each
        may feed the other: a grant promotes, a step-down releases)."""
        while True:
            self._carry_out(inst)
            if inst.lease is None:
                return
            events = inst.lease.drain()
            if not events:
                self._refresh_lifetimes(inst)
                return
            for event in events:
                self._lease_event(inst, event)

    def _lease_event(self, inst: InstanceRuntime, event: LeaseEvent) -> None:
        name, now = inst.cfg.name, boottime()
        if isinstance(event, Send):
            inst.counters[f"lease:{event.request.op}-sent"] += 1
            assert self.witness is not None
            self.witness.send(event.request)
            return
        if isinstance(event, Granted):
            inst.counters["lease:granted"] += 1
            log.info("lease-granted", instance=name, epoch=event.epoch, ttl=event.ttl)
            self._publish("lease-granted", instance=name, epoch=event.epoch)
            witness = self.config.witness
            if witness is not None and witness.fence_command and self._loop is not None:
                inst.fence_task = self._loop.create_task(self._fence(inst, witness))
            else:
                inst.machine.lease_granted(now)
        elif isinstance(event, Refused):
            inst.counters["lease:refused"] += 1
            log.info(
                "lease-refused",
                instance=name,
                holder=event.holder,
                epoch=event.epoch,
                remaining=round(event.remaining, 3),
            )
            inst.machine.lease_refused(now, event.remaining)
        elif isinstance(event, Lost):
            # "renewal-refused": another node holds a higher epoch; "expired": we could not
            # renew (nor, with hold-with-peer, get a peer's word) in time. Either way: fence
            # ourselves now.
            inst.counters[f"lease:lost-{event.reason}"] += 1
            log.warning("self-fence", instance=name, reason=event.reason, epoch=event.epoch)
            self._publish("self-fence", instance=name, reason=event.reason, epoch=event.epoch)
            inst.machine.lease_lost(now, f"lease-{event.reason}")
        elif isinstance(event, Released):
            if inst.handing_over:
                # Our VIPs are down and the witness has dropped our lease: the peer can
                # take over at once.
                inst.handing_over = False
                self._send_takeover(inst)
        elif isinstance(event, WitnessError):
            inst.counters["lease:witness-errors"] += 1
            log.error("witness-error", instance=name, error=event.error)

    async def _fence(self, inst: InstanceRuntime, witness: WitnessConfig) -> None:
        """The optional fence command, between the grant and the promotion."""
        argv, ok, detail = witness.fence_command, False, ""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), witness.fence_timeout)
                ok, detail = proc.returncode == 0, out.decode(errors="replace")[-500:]
            except TimeoutError:
                proc.kill()
                await proc.wait()
                detail = f"timed out after {witness.fence_timeout} s"
        except OSError as exc:
            detail = str(exc)
        inst.fence_task = None
        now = boottime()
        lease = inst.lease
        if lease is None or lease.state is not LeaseState.HELD:
            return  # lost meanwhile; the lease event already moved the machine
        if ok:
            inst.counters["fence:ok"] += 1
            log.info("fence-command", instance=inst.cfg.name, ok=True, output=detail)
            inst.machine.lease_granted(now)
        else:
            inst.counters["fence:failed"] += 1
            log.error("fence-command", instance=inst.cfg.name, ok=False, output=detail)
            lease.release(now)
            inst.machine.lease_refused(now, inst.machine.master_down_interval)
        self._after(inst)

    def _refresh_lifetimes(self, inst: InstanceRuntime) -> None:
        """Kernel backstop (fencing.md S4): a fenced master's VIPs carry a finite lifetime a
        second or two past its lease, so a hung or killed daemon loses them by itself."""
        lease = inst.lease
        if (
            lease is None
            or inst.machine.state is not State.MASTER
            or not lease.holds(now := boottime())
        ):
            return
        if inst.kernel_expiry - lease.held_until() >= 1.0:
            return
        lifetime = math.ceil(lease.held_until() - now + 1.0)
        inst.kernel_expiry = now + lifetime
        self._change_vips(inst, add=True, lifetime=lifetime)

    def _carry_out(self, inst: InstanceRuntime) -> None:
        for action in inst.machine.drain():
            if isinstance(action, SendAdvert):
                self._send_advert(inst, action.priority)
            elif isinstance(action, AcquireLease | ReleaseLease):
                assert inst.lease is not None
                if isinstance(action, AcquireLease):
                    inst.lease.acquire(boottime())
                else:
                    inst.lease.release(boottime())
            elif isinstance(action, AddVips):
                if inst.lease is None:
                    self._change_vips(inst, add=True)
                else:  # with a lifetime that follows the lease
                    inst.kernel_expiry = 0.0
                    self._refresh_lifetimes(inst)
            elif isinstance(action, RemoveVips):
                self._change_vips(inst, add=False)
            elif isinstance(action, Announce):
                sent = inst.sender.send(inst.announcement)
                inst.counters["announcements"] += 1
                log.debug("announce", instance=inst.cfg.name, reason=action.reason, frames=sent)
                if action.reason != "refresh":
                    self._flush_unresolved_neighbours(inst)
            elif isinstance(action, StateChanged):
                inst.counters["transitions"] += 1
                inst.last_transition = Transition(
                    action.old.value,
                    action.new.value,
                    action.reason,
                    action.priority,
                    time.time(),
                )
                inst.counters[f"transition:{action.reason}"] += 1
                fields = {
                    "instance": inst.cfg.name,
                    "old": action.old.value,
                    "new": action.new.value,
                    "reason": action.reason,
                    "priority": action.priority,
                }
                log.info("transition", **fields)
                self._publish("transition", **fields)
                self._on_state_changed(inst, action)
                self._status_changed()

    def _flush_unresolved_neighbours(self, inst: InstanceRuntime) -> None:
        """With each announcement a state change or a fault triggered: the VIPs' neighbours
        learn where the VIP is; our own entries for them that a carrier loss left unresolved
        would make our answers wait up to a second (AddressManager.flush_unresolved_neighbours).

        Each flush dumps and parses the host's whole neighbour table while the loop waits, and
        the instances that change state together announce together, three times over (a
        host's 100 instances take over in five bursts). So the asks share flushes: one per
        pair of interfaces once the pass's callbacks have run, and at most one pass of flushes
        per NEIGHBOUR_FLUSH_SPACING (an ask meanwhile waits for the next). A flush removes
        every stale entry on the interface, whichever instance asked."""
        self._flushes.setdefault((inst.vip_ifname, inst.cfg.interface), inst)
        if self._loop is None:
            self._flush_neighbours()
        elif self._flush_handle is None:
            wait = self._flushed_at + NEIGHBOUR_FLUSH_SPACING - boottime()
            self._flush_handle = (
                self._loop.call_later(wait, self._flush_neighbours)
                if wait > 0
                else self._loop.call_soon(self._flush_neighbours)
            )

    def _flush_neighbours(self) -> None:
        """Best effort: a failure is logged and counted (against the instance that asked
        first), never in the way of the VRRP work."""
        flushes, self._flushes = self._flushes, {}
        self._flush_handle, self._flushed_at = None, boottime()
        for ifnames, inst in flushes.items():
            try:
                flushed = self.addrs.flush_unresolved_neighbours(ifnames)
            except Exception as exc:  # an optional step: it must not stop the takeover
                inst.counters["neighbour_errors"] += 1
                log.warning("neighbour-flush-failed", instance=inst.cfg.name, error=str(exc))
                continue
            if flushed:
                inst.counters["neighbours_flushed"] += flushed
                log.info("neighbours-flushed", instance=inst.cfg.name, count=flushed)

    def _change_vips(self, inst: InstanceRuntime, add: bool, lifetime: float | None = None) -> None:
        for vip in inst.cfg.vips:
            try:
                if add:
                    self.addrs.add_vip(
                        inst.vip_ifname, vip, label=inst.cfg.vip_label, lifetime=lifetime
                    )
                else:
                    self.addrs.remove_vip(inst.vip_ifname, vip)
            except NetlinkError as exc:
                inst.counters["vip_errors"] += 1
                event = "vip-add-failed" if add else "vip-remove-failed"
                log.error(event, instance=inst.cfg.name, vip=str(vip), error=str(exc))

    def _send_advert(self, inst: InstanceRuntime, priority: int) -> None:
        for datagram in inst.advert_packets(priority):
            try:
                inst.sock.send(datagram)
                inst.counters["adverts_sent"] += 1
            except OSError as exc:
                inst.counters["send_errors"] += 1
                log.warning("advert-send-failed", instance=inst.cfg.name, error=str(exc))
        if priority and inst.machine.state is State.MASTER and inst.lease is not None:
            self._ping_peers(inst)

    def _send_takeover(self, inst: InstanceRuntime) -> None:
        assert self.config.witness is not None
        self._ping_seq += 1
        message = peer.Takeover(
            inst.cfg.lease_name, self.config.node_name, self._ping_seq, inst.primary
        )
        data = peer.encode_takeover(self.config.witness.key, message)
        for dst in inst.cfg.peers:
            self._peer_send(data, dst)
        inst.counters["peer:takeovers-sent"] += 1

    def _ping_peers(self, inst: InstanceRuntime) -> None:
        """Once per advert: ask the peers to confirm they follow us (hold-with-peer)."""
        witness = self.config.witness
        if witness is None or witness.policy != Policy.HOLD_WITH_PEER or not inst.cfg.peers:
            return
        now = boottime()
        self._ping_seq += 1
        inst.pings[self._ping_seq] = now
        while len(inst.pings) > 16:  # answers older than that are worthless anyway
            del inst.pings[next(iter(inst.pings))]
        ping = peer.Ping(inst.cfg.lease_name, self.config.node_name, self._ping_seq, inst.primary)
        data = peer.encode_ping(witness.key, ping)
        for dst in inst.cfg.peers:
            self._peer_send(data, dst)
        inst.counters["peer:pings-sent"] += 1

    # ---- operations (the control socket) ---------------------------------------------------
    def _select(self, instance: str | None) -> list[InstanceRuntime]:
        if instance is None:
            return list(self.instances.values())
        if instance not in self.instances:
            known = ", ".join(self.instances) or "none"
            raise ControlError(f"no instance {instance!r} (known: {known})")
        return [self.instances[instance]]

    def _peer_ready(self, inst: InstanceRuntime) -> bool:
        seen = inst.peer_ready_at
        return seen is not None and boottime() - seen <= 3 * inst.machine.advert_interval

    async def failover(self, instance: str | None, force: bool, timeout: float) -> Any:
        """Planned handover: step down where we are master and wait until a peer advertises
        as the new master; the gap is from our VIPs going down to its first advert."""
        masters = [i for i in self._select(instance) if i.machine.state is State.MASTER]
        if not masters:
            raise ControlError("this node is master of no such instance: nothing to hand over")
        not_ready = [i.cfg.name for i in masters if not self._peer_ready(i)]
        if not_ready and not force:
            raise ControlError(
                f"no peer is ready to take over {', '.join(not_ready)}: none confirmed as a "
                "backup over the peer channel in the last 3 advert intervals (a peer in "
                "FAULT or maintenance is not ready). Without a peer channel ([witness] and "
                "peers) use --force."
            )
        t0 = boottime()
        for inst in masters:
            log.info("handover", instance=inst.cfg.name, forced=bool(not_ready))
            inst.handing_over = inst.lease is not None and bool(inst.cfg.peers)
            inst.machine.step_down(t0)
            self._after(inst)
        results: dict[str, dict[str, Any]] = {}
        pending = list(masters)
        while pending and boottime() - t0 < timeout:
            await asyncio.sleep(0.005)
            for inst in list(pending):
                m = inst.machine
                if m.master_priority and m.master_address not in (None, inst.primary):
                    gap = round((boottime() - t0) * 1000, 1)
                    results[inst.cfg.name] = {"new_master": str(m.master_address), "gap_ms": gap}
                    pending.remove(inst)
        for inst in pending:
            results[inst.cfg.name] = {"new_master": None, "gap_ms": None}
        self._publish("failover", results=results)
        return results

    def maintenance(self, on: bool, instance: str | None) -> Any:
        """Drain (FAULT: give up and refuse mastership) or undrain instances."""
        result = {}
        for inst in self._select(instance):
            self._set_fault(inst, "maintenance", "maintenance" if on else None)
        self._apply_tracking()  # the rest of a sync group follows a member in maintenance
        for inst in self._select(instance):
            result[inst.cfg.name] = inst.machine.state.value
        self._publish("maintenance", on=on, instances=result)
        return result

    def _set_fault(self, inst: InstanceRuntime, source: str, reason: str | None) -> None:
        self._set_faults(inst, {source: reason})

    def _set_faults(self, inst: InstanceRuntime, reasons: Mapping[str, str | None]) -> None:
        """Faults from several sources (maintenance, trackers, the sync group) combine: the
        instance is in FAULT while any is set, for the reason set first."""
        for source, reason in reasons.items():
            if reason is None:
                inst.faults.pop(source, None)
            else:
                inst.faults[source] = reason
        fault = next(iter(inst.faults.values()), None)
        if fault != inst.machine.fault:
            log.info("fault" if fault else "fault-cleared", instance=inst.cfg.name, reason=fault)
            inst.machine.set_fault(boottime(), fault)
            self._after(inst)

    def _reload_on_signal(self) -> None:
        async def reload() -> None:
            with contextlib.suppress(ControlError):  # logged by reload()
                await self.reload()

        assert self._loop is not None
        self._loop.create_task(reload())

    async def reload(self) -> Any:
        """Re-read the config file and apply it; a bad file changes nothing."""
        if self._reloading is None:
            self._reloading = asyncio.Lock()
        async with self._reloading:
            sdnotify.reloading()
            try:
                return self._reload()
            finally:
                sdnotify.ready()
                self._notify_status()

    def _reload(self) -> dict[str, list[str]]:
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            log.error("reload-refused", errors=[str(i) for i in exc.issues])
            raise ControlError(
                f"{len(exc.issues)} error(s) in the new config; still running the old one:\n{exc}"
            ) from None
        fixed = (
            "node_name",
            "control_socket",
            "control_group",
            "metrics_listen",
            "witness",
            "realtime_priority",
        )
        needs_restart = [k for k in fixed if getattr(new, k) != getattr(self.config, k)]
        if needs_restart:
            log.error("reload-refused", needs_restart=needs_restart)
            raise ControlError(
                f"changing {', '.join(needs_restart)} needs a restart; still running the old config"
            )
        old = {c.name: c for c in self.config.instances}
        want = {c.name: c for c in new.instances}
        plan: dict[str, list[str]] = {k: [] for k in ("added", "removed", "changed", "replaced")}
        plan["unchanged"] = []
        for name in old:
            if name not in want:
                plan["removed"].append(name)
            elif old[name] == want[name]:
                plan["unchanged"].append(name)
            elif _in_place(old[name], want[name]):
                plan["changed"].append(name)
            else:
                plan["replaced"].append(name)
        plan["added"] = [name for name in want if name not in old]
        for name in plan["added"] + plan["replaced"]:  # fail before touching anything
            try:
                self.addrs.link(want[name].interface)
            except NetlinkError as exc:
                raise ControlError(
                    f"instance {name}: {exc}; still running the old config"
                ) from None
        for name in plan["removed"] + plan["replaced"]:
            self._stop_instance(self.instances[name])
        self.config = new
        self._sync_groups()
        for name in plan["changed"]:
            self._update_instance(self.instances[name], want[name])
        for name in plan["added"] + plan["replaced"]:
            try:
                self._start_instance(self._create_instance(want[name]))
            except (StartupError, NetlinkError, OSError) as exc:
                log.error("instance-start-failed", instance=name, error=str(exc))
        self._apply_tracking()  # group membership may have changed
        log.info("reloaded", **plan)
        self._publish("reload", **plan)
        return plan

    def _update_instance(self, inst: InstanceRuntime, cfg: InstanceConfig) -> None:
        """Apply a changed config in place: the VIPs that stay are never taken down."""
        old, inst.cfg = inst.cfg, cfg
        if not cfg.unicast_peers:
            inst.sock.join_group()  # it may have had only unicast peers so far
        now = boottime()
        inst._advert_cache.clear()
        inst.__dict__.pop("announcement", None)  # both rebuilt for the new VIPs
        inst.__dict__.pop("vip_addresses", None)
        inst.__dict__.pop("vip_tuple", None)
        if inst.lease is not None:
            inst.lease.params = self._lease_params(cfg, inst.machine)
        self._update_tracking(inst, old, cfg)
        inst.machine.reconfigure(_params(cfg, inst.primary), now)
        self._apply_tracking()  # reconfigure set the configured priority; trackers adjust it
        if inst.machine.state is State.MASTER and old.vips != cfg.vips:
            for vip in set(old.vips) - set(cfg.vips):
                with contextlib.suppress(NetlinkError):
                    self.addrs.remove_vip(inst.vip_ifname, vip)
            if inst.lease is None:
                self._change_vips(inst, add=True)
            else:
                inst.kernel_expiry = 0.0
                self._refresh_lifetimes(inst)
            inst.sender.send(inst.announcement)
        self._after(inst)

    def _update_tracking(
        self, inst: InstanceRuntime, old: InstanceConfig, cfg: InstanceConfig
    ) -> None:
        if (_hooks(old), old.notify_timeout) != (_hooks(cfg), cfg.notify_timeout):
            if inst.hooks is not None:
                self._in_background(inst.hooks.close())  # what was queued still runs
            inst.hooks = None
            if _hooks(cfg):
                inst.hooks = HookQueue(f"instance {cfg.name}", cfg.notify_timeout, inst.counters)
        previous = inst.tracking
        if previous is not None and previous.complete:
            # The current trackers' word on the new configured priority; with new trackers,
            # it stands until they have all reported (no flap while they start).
            inst.verdict = judge(cfg.priority, previous.trackers[cfg.name])
        if old.trackers == cfg.trackers:
            return
        # Still waiting for the old trackers' first results to start the machine?
        starting = inst.track_task is not None and inst.machine.state is State.INITIALIZE
        if inst.track_task is not None:
            inst.track_task.cancel()
            inst.track_task = None
        if previous is not None:
            self._in_background(previous.close())
            inst.tracking = None
        if not cfg.trackers:
            inst.verdict = None
            if starting:
                self._begin(inst)
            return
        inst.tracking = runner = self._tracker_runner(inst)
        assert self._loop is not None
        wait = self._start_tracked if starting else self._retrack
        inst.track_task = self._loop.create_task(wait(inst, runner))

    def _publish(self, event: str, **fields: Any) -> None:
        record = {"event": event, "at": time.time(), **fields}
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a subscriber that does not read loses the oldest
            queue.put_nowait(record)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def _status_changed(self) -> None:
        """systemd's status line (``systemctl status vipd``) follows the instances' states: one
        update per pass of the loop, however many instances changed state in it."""
        if self._ready and self._loop is not None and self._status_handle is None:
            self._status_handle = self._loop.call_soon(self._notify_status)

    def _notify_status(self) -> None:
        self._status_handle = None
        sdnotify.status(self._summary())

    def _summary(self) -> str:
        """How many instances are in each state: one short line also for 255 instances
        (``vipctl status`` has them one by one)."""
        counts = Counter(i.machine.state.value for i in self.instances.values())
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"{self.config.node_name}: {states or 'no instances'}"

    # ---- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "node": self.config.node_name,
            "uptime": round(boottime() - self.started, 3),
            "drops": dict(self.drops),
            "scheduler": {
                "realtime": self.realtime,
                "priority": self.config.realtime_priority,
                "realtime_drops": self.realtime_drops,
            },
            "witness": None
            if self.witness is None
            else {"backend": self.witness.name, "counters": dict(self.witness.counters)},
            "instances": [self._instance_status(i) for i in self.instances.values()],
            "groups": [
                {
                    "name": g.name,
                    "instances": list(g.instances),
                    "state": self._group_state.get(g.name),
                }
                for g in self.groups.values()
            ],
        }

    def _instance_status(self, inst: InstanceRuntime) -> dict[str, Any]:
        m = inst.machine
        last = inst.last_transition
        return {
            "name": inst.cfg.name,
            "interface": inst.cfg.interface,
            "vrid": inst.cfg.vrid,
            "state": m.state.value,
            "priority": inst.cfg.priority,
            "effective_priority": m.priority,
            "fault": m.fault,
            "group": inst.group,
            "trackers": [] if inst.tracking is None else inst.tracking.status(inst.cfg.name),
            "hooks_pending": 0 if inst.hooks is None else inst.hooks.pending,
            "vips": [str(v) for v in inst.cfg.vips],
            "primary": str(inst.primary),
            "master": str(m.master_address) if m.master_address else None,
            "master_priority": m.master_priority,
            "advert_interval": m.advert_interval,
            "master_adver_interval": m.master_adver_int,
            "last_transition": None
            if last is None
            else {
                "from": last.old,
                "to": last.new,
                "reason": last.reason,
                "priority": last.priority,
                "at": last.at,
            },
            "counters": dict(inst.counters),
            "faults": dict(inst.faults),
            "peer_ready": inst.peer_ready_at is not None
            and boottime() - inst.peer_ready_at <= 3 * inst.machine.advert_interval,
            "witness": None if inst.lease is None else _lease_status(inst.lease),
        }


def _hooks(cfg: InstanceConfig | GroupConfig) -> Hooks:
    return Hooks(
        cfg.notify, cfg.notify_master, cfg.notify_backup, cfg.notify_fault, cfg.notify_stop
    )


def _lease_status(lease: LeaseClient) -> dict[str, Any]:
    now = boottime()
    held = lease.state is LeaseState.HELD
    return {
        "lease": lease.params.name,
        "state": lease.state.value,
        "epoch": lease.epoch if held else None,
        "remaining": round(max(0.0, lease.held_until() - now), 3) if held else None,
        "lease_remaining": round(max(0.0, lease.lease_deadline - now), 3) if held else None,
        "policy": lease.params.policy.value,
        "ttl": lease.params.ttl,
        "rtt": None if lease.last_rtt is None else round(lease.last_rtt, 6),
    }
