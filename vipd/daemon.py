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
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import structlog

from vipd.announce.frames import announcement_frames, vmac_for
from vipd.announce.schedule import AnnounceParams
from vipd.config import DaemonConfig, InstanceConfig
from vipd.control import ControlServer
from vipd.net.addrs import AddressManager, LinkInfo, NetlinkError
from vipd.net.packet import FrameSender
from vipd.net.vrrpsock import VrrpSocket
from vipd.vrrp.machine import (
    AddVips,
    Announce,
    Machine,
    Params,
    RemoveVips,
    SendAdvert,
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
    counters: Counter[str] = field(default_factory=Counter)
    last_transition: Transition | None = None
    timer: asyncio.TimerHandle | None = None
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
        self.started = boottime()

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
            self._control = ControlServer(self.config.control_socket, self)
            await self._control.start()
            now = boottime()
            for inst in self.instances.values():
                log.info(
                    "instance-start",
                    instance=inst.cfg.name,
                    interface=inst.cfg.interface,
                    vrid=inst.cfg.vrid,
                    priority=inst.cfg.priority,
                    primary=str(inst.primary),
                    vips=[str(v) for v in inst.cfg.vips],
                    mode="unicast" if inst.cfg.unicast_peers else "multicast",
                )
                inst.machine.start(now)
                self._after(inst)
            await shutdown.wait()
        finally:
            self._teardown()

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
            self.instances[cfg.name] = inst
            self._by_vrid[key][cfg.vrid] = inst

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
            self._carry_out(inst)
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
        inst.machine.receive(advert, src, boottime())
        self._after(inst)

    def _on_timer(self, inst: InstanceRuntime) -> None:
        inst.timer = None
        inst.machine.handle_timer(boottime())
        self._after(inst)

    # ---- outputs ---------------------------------------------------------------------------
    def _after(self, inst: InstanceRuntime) -> None:
        """Carry out what the machine decided, then re-arm its single timer."""
        self._carry_out(inst)
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        deadline = inst.machine.get_timer()
        if deadline is not None and self._loop is not None:
            delay = max(0.0, deadline - boottime())
            inst.timer = self._loop.call_later(delay, self._on_timer, inst)

    def _carry_out(self, inst: InstanceRuntime) -> None:
        for action in inst.machine.drain():
            if isinstance(action, SendAdvert):
                self._send_advert(inst, action.priority)
            elif isinstance(action, AddVips | RemoveVips):
                self._change_vips(inst, add=isinstance(action, AddVips))
            elif isinstance(action, Announce):
                sent = inst.sender.send(inst.announcement)
                inst.counters["announcements"] += 1
                log.debug("announce", instance=inst.cfg.name, reason=action.reason, frames=sent)
            elif isinstance(action, StateChanged):
                inst.counters["transitions"] += 1
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

    def _change_vips(self, inst: InstanceRuntime, add: bool) -> None:
        for vip in inst.cfg.vips:
            try:
                if add:
                    self.addrs.add_vip(inst.vip_ifname, vip, label=inst.cfg.vip_label)
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

    # ---- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "node": self.config.node_name,
            "uptime": round(boottime() - self.started, 3),
            "drops": dict(self.drops),
            "instances": [self._instance_status(i) for i in self.instances.values()],
        }

    @staticmethod
    def _instance_status(inst: InstanceRuntime) -> dict[str, Any]:
        m = inst.machine
        last = inst.last_transition
        return {
            "name": inst.cfg.name,
            "interface": inst.cfg.interface,
            "vrid": inst.cfg.vrid,
            "state": m.state.value,
            "priority": inst.cfg.priority,
            "effective_priority": m.priority,
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
        }
