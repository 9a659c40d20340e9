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
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import structlog

from vipd.announce.frames import announcement_frames, vmac_for
from vipd.announce.schedule import AnnounceParams
from vipd.config import DaemonConfig, GroupConfig, InstanceConfig, WitnessConfig
from vipd.control import ControlServer
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
    Send,
    WitnessError,
)
from vipd.net.addrs import AddressManager, LinkInfo, NetlinkError
from vipd.net.packet import FrameSender
from vipd.net.peer import PeerSocket
from vipd.net.vrrpsock import VrrpSocket
from vipd.track.core import (
    HOOK_STATES,
    Hooks,
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


@dataclass
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
    timer: asyncio.TimerHandle | None = None
    kernel_expiry: float = 0.0  # fenced: when the kernel drops the VIPs by itself (S4)
    pings: dict[int, float] = field(default_factory=dict)  # peer ping seq -> sent at
    fence_task: asyncio.Task[None] | None = None
    hooks: HookQueue | None = None  # notify commands, run in order off the VRRP path
    group: str | None = None  # the sync group it belongs to
    _advert_cache: dict[int, list[tuple[IPAddress, bytes]]] = field(default_factory=dict)

    @functools.cached_property
    def announcement(self) -> list[bytes]:
        """GARP / unsolicited NA frames for the VIPs; they change only with the config."""
        return announcement_frames(self.mac, [v.ip for v in self.cfg.vips])

    def advert_packets(self, priority: int) -> list[tuple[IPAddress, bytes]]:
        """The encoded adverts to send for ``priority`` (built once per priority: the hot path
        only sends bytes)."""
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
            cached = [(dst, encode(advert, self.primary, dst, self.checksum)) for dst in targets]
            self._advert_cache[priority] = cached
        return cached


class Daemon:
    def __init__(self, config: DaemonConfig, addrs: AddressManager | None = None) -> None:
        self.config = config
        self.addrs = addrs or AddressManager()
        self.instances: dict[str, InstanceRuntime] = {}
        self.drops: Counter[str] = Counter()  # packets we could not attribute to an instance
        self._sockets: dict[tuple[str, int], VrrpSocket] = {}
        self._senders: dict[str, FrameSender] = {}
        self._by_vrid: dict[tuple[str, int], dict[int, InstanceRuntime]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: ControlServer | None = None
        self.witness: Backend | None = None
        self._peer: PeerSocket | None = None
        self._by_lease: dict[str, InstanceRuntime] = {}
        self._ping_seq = secrets.randbelow(2**62)
        self.started = boottime()
        self.groups: dict[str, GroupConfig] = {g.name: g for g in config.groups}
        self._group_state: dict[str, str | None] = dict.fromkeys(self.groups)
        self._group_hooks: dict[str, HookQueue] = {}
        self._tracking: TrackerRunner | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def run(self, shutdown: asyncio.Event | None = None) -> None:
        """Run until ``shutdown`` is set (SIGTERM/SIGINT set it when none is passed)."""
        self._loop = asyncio.get_running_loop()
        if shutdown is None:
            shutdown = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, shutdown.set)
        try:
            self._setup()
            if self.config.witness is not None and self._by_lease:
                await self._start_fencing(self.config.witness)
            self._control = ControlServer(self.config.control_socket, self)
            await self._control.start()
            await self._start_tracking()
            now = boottime()
            for inst in self.instances.values():
                log.info(
                    "instance-start",
                    instance=inst.cfg.name,
                    interface=inst.cfg.interface,
                    vrid=inst.cfg.vrid,
                    priority=inst.cfg.priority,
                    effective_priority=inst.machine.priority,
                    fault=inst.machine.fault,
                    primary=str(inst.primary),
                    vips=[str(v) for v in inst.cfg.vips],
                    mode="unicast" if inst.cfg.unicast_peers else "multicast",
                )
                inst.machine.start(now)
                self._after(inst)
            await shutdown.wait()
        finally:
            await self._stop_tracking()
            self._teardown()  # queues the STOP hooks
            await self._stop_fencing()
            await self._stop_hooks()

    def _setup(self) -> None:
        for cfg in self.config.instances:
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
                sock = VrrpSocket(cfg.interface, link.index, cfg.family, multicast=True)
                self._sockets[key] = sock
                self._by_vrid[key] = {}
                assert self._loop is not None
                self._loop.add_reader(sock.fileno(), self._on_readable, sock)
            sender = self._senders.get(vip_ifname)
            if sender is None:
                sender = self._senders[vip_ifname] = FrameSender(vip_ifname)
            params = Params(
                vrid=cfg.vrid,
                priority=cfg.priority,
                advert_interval=cfg.advert_centiseconds,
                primary=primary,
                preempt=cfg.preempt,
                preempt_delay=cfg.preempt_delay,
                announce=AnnounceParams(
                    cfg.announce_count, cfg.announce_spacing, cfg.announce_refresh
                ),
                fenced=cfg.fence,
            )
            inst = InstanceRuntime(
                cfg=cfg,
                machine=Machine(params),
                sock=sock,
                sender=sender,
                vip_ifname=vip_ifname,
                mac=mac,
                primary=primary,
                checksum=ChecksumMode(cfg.checksum),
            )
            if _hooks(cfg):
                inst.hooks = HookQueue(f"instance {cfg.name}", cfg.notify_timeout, inst.counters)
            self.instances[cfg.name] = inst
            self._by_vrid[key][cfg.vrid] = inst
            if cfg.fence and self.config.witness is not None:
                inst.lease = LeaseClient(self._lease_params(cfg, inst.machine))
                self._by_lease[cfg.lease_name] = inst

        for group in self.groups.values():
            for member in group.instances:
                self.instances[member].group = group.name
            if _hooks(group):
                self._group_hooks[group.name] = HookQueue(
                    f"group {group.name}", group.notify_timeout
                )

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
            # could run out, so loss alone does not cost the lease (fencing.md).
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

    async def _start_tracking(self) -> None:
        """Start the trackers and wait for each one's first result (bounded by its timeout),
        so an instance starts with the priority and fault its trackers give it."""
        configs = {name: inst.cfg.trackers for name, inst in self.instances.items()}
        if any(configs.values()):
            self._tracking = TrackerRunner(configs, self._on_tracker_change)
            await self._tracking.start()
            await self._tracking.first_results()
        self._apply_tracking()

    async def _stop_tracking(self) -> None:
        if self._tracking is not None:
            await self._tracking.close()
            self._tracking = None

    async def _stop_hooks(self) -> None:
        """Let the queued hooks (the STOP hooks among them) finish, each within its timeout."""
        queues = [i.hooks for i in self.instances.values() if i.hooks is not None]
        for queue in [*queues, *self._group_hooks.values()]:
            await queue.close()

    def _on_tracker_change(self, instance: str) -> None:
        self._apply_tracking()

    def _apply_tracking(self) -> None:
        """Feed the trackers' verdicts (vipd.track.core.judge) into the machines: effective
        priority, and FAULT for an instance whose own tracker, or whose group, has failed."""
        now = boottime()
        tracking = self._tracking
        verdicts = {
            name: judge(inst.cfg.priority, tracking.trackers[name] if tracking else ())
            for name, inst in self.instances.items()
        }
        faults = group_faults(
            {name: v.fault for name, v in verdicts.items()},
            {g.name: g.instances for g in self.groups.values()},
        )
        for name, inst in self.instances.items():
            machine, priority, fault = inst.machine, verdicts[name].priority, faults[name]
            if priority == machine.priority and fault == machine.fault:
                continue
            if priority != machine.priority:
                log.info(
                    "effective-priority",
                    instance=name,
                    priority=priority,
                    previous=machine.priority,
                    configured=inst.cfg.priority,
                )
                machine.set_priority(priority, now)
            if fault != machine.fault:
                log.info("fault" if fault else "fault-cleared", instance=name, reason=fault)
                machine.set_fault(now, fault)
            self._after(inst)

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
        states = {m: self.instances[m].machine.state for m in group.instances}
        for member in group_step_downs(group.instances, name, change.old, change.new, states):
            other = self.instances[member]
            if other.machine.step_down(boottime(), reason=f"group:{group.name}"):
                self._after(other)
        new = group_state(self.instances[m].machine.state for m in group.instances)
        if new is None or new == self._group_state[group.name]:
            return
        log.info("group-transition", group=group.name, old=self._group_state[group.name], new=new)
        self._group_state[group.name] = new
        queue = self._group_hooks.get(group.name)
        if queue is not None:
            queue.push(hook_argvs(_hooks(group), "GROUP", group.name, new), new)

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
        now = boottime()
        for inst in self.instances.values():
            inst.machine.shutdown(now)
            self._pump(inst)
            if inst.timer is not None:
                inst.timer.cancel()
            if inst.cfg.use_vmac:
                with contextlib.suppress(NetlinkError):
                    self.addrs.remove_vmac(inst.vip_ifname)
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
        self.addrs.close()
        log.info("stopped")

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
        try:
            advert = decode(payload, src, dst, ttl, inst.checksum)
        except PacketError as exc:
            inst.counters[f"drop:{exc.reason}"] += 1
            log.debug("advert-dropped", instance=inst.cfg.name, reason=exc.reason, src=str(src))
            return
        if inst.cfg.unicast_peers and src not in inst.cfg.unicast_peers:
            inst.counters["drop:unknown-peer"] += 1
            return
        inst.counters["adverts_received"] += 1
        now = boottime()
        self._check_lease(inst, now)
        inst.machine.receive(advert, src, now)
        self._after(inst)

    def _on_timer(self, inst: InstanceRuntime) -> None:
        inst.timer = None
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
        if isinstance(message, peer.Ping):
            # Confirm only to the master we follow, and only what our timer promises.
            promise = inst.machine.promise(now)
            if promise is None or message.primary != inst.machine.master_address:
                inst.counters["peer:pings-unconfirmed"] += 1
                return
            reply = peer.Confirm(message.lease, self.config.node_name, message.seq, promise)
            self._peer_send(peer.encode_confirm(self.config.witness.key, reply), src, port)
            inst.counters["peer:confirms-sent"] += 1
        else:
            sent_at = inst.pings.pop(message.seq, None)
            if sent_at is None:
                inst.counters["peer:stale-confirms"] += 1
                return
            inst.counters["peer:confirms-received"] += 1
            inst.lease.peer_confirmed(sent_at, message.promise)
            self._after(inst)

    def _peer_send(self, data: bytes, dst: IPAddress, port: int | None = None) -> None:
        assert self._peer is not None
        self._peer.send(data, dst, port)

    # ---- outputs ---------------------------------------------------------------------------
    def _after(self, inst: InstanceRuntime) -> None:
        """Carry out what the cores decided, then re-arm the instance's single timer."""
        self._pump(inst)
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        times = [inst.machine.get_timer()]
        if inst.lease is not None:
            times.append(inst.lease.get_timer())
        deadline = min((t for t in times if t is not None), default=None)
        if deadline is not None and self._loop is not None:
            delay = max(0.0, deadline - boottime())
            inst.timer = self._loop.call_later(delay, self._on_timer, inst)

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
            inst.machine.lease_lost(now, f"lease-{event.reason}")
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
            elif isinstance(action, StateChanged):
                inst.counters["transitions"] += 1
                inst.counters[f"transition:{action.reason}"] += 1
                inst.last_transition = Transition(
                    action.old.value,
                    action.new.value,
                    action.reason,
                    action.priority,
                    time.time(),
                )
                log.info(
                    "transition",
                    instance=inst.cfg.name,
                    old=action.old.value,
                    new=action.new.value,
                    reason=action.reason,
                    priority=action.priority,
                )
                self._on_state_changed(inst, action)

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
        for dst, message in inst.advert_packets(priority):
            try:
                inst.sock.send(message, inst.primary, dst)
                inst.counters["adverts_sent"] += 1
            except OSError as exc:
                inst.counters["send_errors"] += 1
                log.warning("advert-send-failed", instance=inst.cfg.name, error=str(exc))
        if priority and inst.machine.state is State.MASTER and inst.lease is not None:
            self._ping_peers(inst)

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

    # ---- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "node": self.config.node_name,
            "uptime": round(boottime() - self.started, 3),
            "drops": dict(self.drops),
            "instances": [self._instance_status(i) for i in self.instances.values()],
            "groups": [
                {"name": g.name, "instances": list(g.instances), "state": self._group_state[g.name]}
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
            "trackers": [] if self._tracking is None else self._tracking.status(inst.cfg.name),
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
