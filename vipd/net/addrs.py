"""Kernel address and link plumbing over rtnetlink (pyroute2), never ``ip``.

What the VRRP engine needs from the kernel is small: read an interface (index,
MAC, carrier, addresses), put a VIP on it and take it off again, and for
``use_vmac`` setups create a macvlan carrying the RFC 5798 virtual MAC.  All of
it is a handful of netlink requests, so the API is synchronous and the daemon
calls it straight from its event loop. Adding and removing a VIP, which a
takeover does for every instance and a fenced master repeats to renew the VIP's
lifetime, goes on a plain netlink socket of its own (vipd.net.rtaddr: pyroute2
took 0.8 ms of CPU per address); the rest is pyroute2's.

Threading note (pyroute2 0.9.7): the *synchronous* ``IPRoute`` drives a private
asyncio loop with ``run_until_complete`` and therefore raises "Cannot run the
event loop while another loop is running" when called from a thread whose
asyncio loop is running, i.e. from any coroutine of the daemon.  AddressManager
therefore owns one worker thread, creates/uses its IPRoute only there, and
each public method hands its work to that thread and waits for the result.
The caller still sees a plain blocking call; requests are serialized. The VIP
requests run on the caller's thread when the manager is in the caller's own
namespace (the daemon's case): they need no event loop, and under a CPU hog each
hand-over to the worker waits for it to be scheduled.

The same worker thread is how a manager works inside another network
namespace (``AddressManager(netns="name")``): the thread ``setns()``-es itself
into it before opening the netlink socket, so netlink requests *and* the
``/proc/sys/net`` writes done for vmacs land in that namespace and nowhere
else.  Other threads of the process are not affected.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import (
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_interface,
)
from types import TracebackType
from typing import Any, TypeVar

from vipd.announce.frames import format_mac, parse_mac, vmac_for
from vipd.net.guard import VipGuard
from vipd.net.neighbours import unresolved_neighbours
from vipd.net.rtaddr import (
    INFINITY_LIFE_TIME,
    RTM_DELADDR,
    RTM_NEWADDR,
    AddressSocket,
    address_request,
)
from vipd.net.rtnl import IPRoute
from vipd.net.rtnl import NetlinkError as _PyrNetlinkError

__all__ = [
    "AddressManager",
    "LinkInfo",
    "NetlinkError",
    "in_netns",
    "vmac_name",
]

T = TypeVar("T")

# What a parent of an IPv4 vmac needs (see AddressManager.ensure_vmac).
_PARENT_ARP_SYSCTLS = {"arp_ignore": "1", "arp_filter": "1", "arp_announce": "2"}

# linux/if.h, linux/if_addr.h, linux/if_link.h, linux/sched.h
_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000
_IFA_F_NODAD = 0x02
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
# linux/neighbour.h
_IN6_ADDR_GEN_MODE_NONE = 1
_CLONE_NEWNET = 0x40000000
_IFNAMSIZ = 16

_LINK_LOCAL_V6 = IPv6Interface("fe80::/10").network


class NetlinkError(Exception):
    """A kernel request failed, or the interface it names does not exist.

    ``errno`` carries the kernel's error number when there is one (e.g.
    ``errno.ENODEV``, ``errno.EPERM``), else None.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class LinkInfo:
    """A snapshot of one interface, as the VRRP engine needs it.

    ``up`` is True only when the interface is administratively up *and* has
    carrier (IFF_UP and IFF_LOWER_UP): that is what "this router can serve the
    VIP on this link" means.  ``ipv4`` lists the IPv4 addresses in kernel order
    (the primary address of each subnet first).  ``ipv6_link_local`` is the
    first usable (not tentative, not DAD-failed) fe80::/10 address, the
    source VRRPv3 must use for IPv6 adverts, or None while there is none.
    """

    index: int
    name: str
    mac: bytes
    up: bool
    ipv4: tuple[IPv4Interface, ...]
    ipv6_link_local: IPv6Address | None


def vmac_name(vrid: int, family: int) -> str:
    """Name of the vmac for ``vrid``: ``vrrp4.<vrid>`` / ``vrrp6.<vrid>`` (<= 9 chars).

    ``family`` is 4 or 6 (socket.AF_INET/AF_INET6 accepted).  The name is
    derived, not configured, so every component agrees on it and a restarted
    daemon finds the device it created before.
    """
    mac = vmac_for(vrid, family)  # validates both arguments
    return f"vrrp{4 if mac[4] == 1 else 6}.{vrid}"


def _netns_path(netns: str) -> str:
    """Resolve a namespace name (``ip netns add`` puts them in /run/netns) or path."""
    if "/" in netns:
        return netns
    for base in ("/run/netns", "/var/run/netns"):
        path = os.path.join(base, netns)
        if os.path.exists(path):
            return path
    raise NetlinkError(f"network namespace {netns!r} does not exist", errno.ENOENT)


def _setns_current_thread(netns: str) -> None:
    """Move the calling thread (only it) into network namespace ``netns``.

    ``netns`` is a name under /run/netns (as ``ip netns add`` creates) or a path
    such as /proc/<pid>/ns/net.  Python 3.11 has no os.setns, so libc's setns(2)
    is called through ctypes; for CLONE_NEWNET it is per-thread.
    """
    fd = os.open(_netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetlinkError(f"setns({netns!r}): {os.strerror(err)}", err)
    finally:
        os.close(fd)


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a short-lived thread inside network namespace ``netns``.

    Sockets keep the namespace they were created in, so this is how to open an
    AF_PACKET socket (e.g. :class:`vipd.net.packet.FrameSender`) or any other
    socket in a namespace without moving the calling thread.  Returns ``fn``'s
    result or raises its exception.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _setns_current_thread(netns)
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _attr(msg: Any, name: str) -> Any:
    """One netlink attribute of a pyroute2 message (untyped library, typed call sites)."""
    return msg.get_attr(name)


def _addr_flags(msg: Any) -> int:
    """An address's IFA_F_* flags, to tell tentative/DAD-failed addresses apart.

    IFA_FLAGS (u32) supersedes the 8-bit ifa_flags header field when present.
    """
    flags = _attr(msg, "IFA_FLAGS")
    return int(msg["flags"] if flags is None else flags)


def _iface_of(msg: Any) -> IPv4Interface | IPv6Interface:
    """The address/prefix an RTM_NEWADDR message describes.

    For IPv4 IFA_LOCAL is the address itself (IFA_ADDRESS is the peer on
    point-to-point links); IPv6 only sends IFA_LOCAL for peer addresses.
    """
    addr = _attr(msg, "IFA_LOCAL") if msg["family"] == socket.AF_INET else None
    if addr is None:
        addr = _attr(msg, "IFA_ADDRESS")
    iface = ip_interface(f"{addr}/{msg['prefixlen']}")
    assert isinstance(iface, IPv4Interface | IPv6Interface)
    return iface


def _lifetime_seconds(lifetime: float | None) -> int:
    """Seconds for IFA_CACHEINFO: whole, >= 1, and below 0xffffffff ("forever")."""
    if lifetime is None:
        return INFINITY_LIFE_TIME
    if not math.isfinite(lifetime) or lifetime < 0:
        raise ValueError(f"lifetime must be a finite number of seconds >= 0, got {lifetime!r}")
    return min(max(1, math.ceil(lifetime)), INFINITY_LIFE_TIME - 1)


class AddressManager:
    """VIP and vmac management on this host's (or one namespace's) interfaces.

    ``ipr``: an existing pyroute2 IPRoute to use (the caller keeps ownership and
    closes it); None creates one, owned and closed by :meth:`close`.
    ``netns``: run inside that network namespace (name under /run/netns or a
    path).  If you pass both, ``ipr`` must already be bound to that namespace;
    ``netns`` then still decides where /proc/sys writes go.
    ``guard``: told of every VIP before it goes on and after it comes off, so
    that it can remove them should this process die (vipd.net.guard).

    All methods block until the kernel answered (sub-millisecond) and may be
    called from a running asyncio loop; see the module docstring.
    """

    def __init__(
        self, ipr: IPRoute | None = None, *, netns: str | None = None, guard: VipGuard | None = None
    ) -> None:
        self._netns = netns
        self._guard = guard
        self._own_ipr = ipr is None
        self._closed = False
        self._worker_ident: int | None = None
        # Parent interface -> (its ARP sysctls before we changed them, v4 vmacs on it).
        self._parent_arp: dict[str, tuple[dict[str, str], set[str]]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipd-netlink")
        try:
            self._ipr: Any
            self._addr_sock: AddressSocket
            self._ipr, self._addr_sock = self._executor.submit(self._start_worker, ipr).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            raise

    def _start_worker(self, ipr: IPRoute | None) -> tuple[Any, AddressSocket]:
        """First task on the worker: enter the namespace, then open netlink there."""
        self._worker_ident = threading.get_ident()
        if self._netns is not None:
            _setns_current_thread(self._netns)
        return IPRoute() if ipr is None else ipr, AddressSocket()

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the worker thread and wait (directly if already on it)."""
        if self._closed:
            raise ValueError("AddressManager is closed")
        if threading.get_ident() == self._worker_ident:
            return fn(*args)
        return self._executor.submit(fn, *args).result()

    def _run_here(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` (no pyroute2 in it) on the calling thread when that is in the managed
        namespace, else on the worker."""
        if self._netns is not None or self._closed:
            return self._run(fn, *args)  # which also refuses a closed manager
        return fn(*args)

    def close(self) -> None:
        """Close the netlink socket (if this manager created it) and stop the worker.

        Idempotent.  Sysctls saved by :meth:`ensure_vmac` on a parent are not
        restored here: vmacs outlive the manager unless :meth:`remove_vmac` is
        called, and the parent must keep ignoring ARP while they exist.
        """
        if self._closed:
            return
        try:
            if self._own_ipr:
                self._run(self._ipr.close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)
            self._addr_sock.close()

    def __enter__(self) -> AddressManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers that run on the worker thread ---------------------------------

    def _where(self) -> str:
        """Suffix naming the namespace in error messages, so a lab failure is legible."""
        return "" if self._netns is None else f" in netns {self._netns}"

    def _index(self, ifname: str) -> int | None:
        """ifindex of ``ifname``, or None if there is no such interface. Runs on the worker
        thread, which lives in the managed namespace, so the SIOCGIFINDEX ioctl behind
        if_nametoindex looks there. (pyroute2 0.9.7's link_lookup kept ~1.6 KB per call, and
        a master looks its interface up on every VIP lifetime refresh: found by the soak.)"""
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            return None

    def _require_index(self, ifname: str) -> int:
        """ifindex of ``ifname``; NetlinkError(ENODEV) naming it if missing."""
        index = self._index(ifname)
        if index is None:
            raise NetlinkError(f"interface {ifname!r} does not exist{self._where()}", errno.ENODEV)
        return index

    def _addr_msgs(self, index: int, family: int = socket.AF_UNSPEC) -> list[Any]:
        """RTM_NEWADDR dump for one interface (optionally one family)."""
        if family == socket.AF_UNSPEC:
            return list(self._ipr.addr("dump", index=index))
        return list(self._ipr.addr("dump", index=index, family=family))

    def _link_locals(self, index: int, usable_only: bool) -> list[IPv6Address]:
        """fe80::/10 addresses on ``index``; ``usable_only`` skips tentative ones too."""
        bad = _IFA_F_TENTATIVE | _IFA_F_DADFAILED if usable_only else _IFA_F_DADFAILED
        out = []
        for msg in self._addr_msgs(index, socket.AF_INET6):
            iface = _iface_of(msg)
            if iface.ip in _LINK_LOCAL_V6 and not _addr_flags(msg) & bad:
                assert isinstance(iface.ip, IPv6Address)
                out.append(iface.ip)
        return out

    def _kernel(self, what: str, fn: Callable[[], T]) -> T:
        """Run a pyroute2 request, turning its errors into our NetlinkError with context."""
        try:
            return fn()
        except _PyrNetlinkError as exc:
            raise NetlinkError(f"{what}{self._where()}: {exc.args[-1]}", exc.code) from exc

    def _sysctl_path(self, dev: str, name: str) -> str:
        """/proc/sys path of an IPv4 per-device setting (dots in names stay dots here)."""
        return f"/proc/sys/net/ipv4/conf/{dev}/{name}"

    def _read_sysctl(self, dev: str, name: str) -> str:
        """Read a setting, from the worker thread's (i.e. the managed) namespace."""
        path = self._sysctl_path(dev, name)
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as exc:
            raise NetlinkError(f"cannot read {path}{self._where()}: {exc}", exc.errno) from exc

    def _write_sysctl(self, dev: str, name: str, value: str) -> None:
        """Write a setting in the managed namespace; NetlinkError if that fails."""
        path = self._sysctl_path(dev, name)
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise NetlinkError(f"cannot write {path}{self._where()}: {exc}", exc.errno) from exc

    # -- reading -----------------------------------------------------------------

    def link(self, ifname: str) -> LinkInfo:
        """Describe ``ifname``; raise NetlinkError if it does not exist.

        The engine calls this to learn the MAC to announce, whether the link
        can carry traffic, and which source addresses adverts may use.
        """
        return self._run(self._link, ifname)

    def _link(self, ifname: str) -> LinkInfo:
        index = self._require_index(ifname)
        msg = self._kernel(f"get link {ifname}", lambda: self._ipr.link("get", index=index)[0])
        flags = int(msg["flags"])
        mac_str = _attr(msg, "IFLA_ADDRESS")
        ipv4 = tuple(
            iface
            for iface in map(_iface_of, self._addr_msgs(index, socket.AF_INET))
            if isinstance(iface, IPv4Interface)
        )
        link_locals = self._link_locals(index, usable_only=True)
        return LinkInfo(
            index=index,
            name=str(_attr(msg, "IFLA_IFNAME")),
            mac=parse_mac(mac_str) if mac_str else b"",
            up=bool(flags & _IFF_UP) and bool(flags & _IFF_LOWER_UP),
            ipv4=ipv4,
            ipv6_link_local=link_locals[0] if link_locals else None,
        )

    def addresses(self, ifname: str) -> set[IPv4Interface | IPv6Interface]:
        """Every address now on ``ifname`` (both families, any scope).

        Used to check whether a VIP is present, e.g. after a restart or to
        detect that someone else removed it.  NetlinkError if ``ifname`` is missing.
        """
        return self._run(self._addresses, ifname)

    def _addresses(self, ifname: str) -> set[IPv4Interface | IPv6Interface]:
        index = self._require_index(ifname)
        return {_iface_of(msg) for msg in self._addr_msgs(index)}

    # -- VIPs --------------------------------------------------------------------

    def add_vip(
        self,
        ifname: str,
        vip: IPv4Interface | IPv6Interface,
        label: str | None = None,
        lifetime: float | None = None,
    ) -> None:
        """Put ``vip`` on ``ifname``; idempotent (RTM_NEWADDR with NLM_F_REPLACE).

        * IPv4 gets the subnet broadcast address when the prefix is /30 or
          shorter, exactly as ``ip addr add ... brd +`` computes it; /31 and
          /32 get none.  ``label`` (IPv4 only; the kernel has no IPv6 labels,
          so it is ignored there) must be ``ifname`` or start with
          ``ifname + ":"`` like ``ip`` requires, and fit in 15 characters.  The
          kernel keeps the label of an address that already exists.
        * IPv6 gets IFA_F_NODAD: the VIP is usable at once instead of after a
          ~1 s DAD round, and DAD would only find the previous master if it
          still holds the VIP, which VRRP resolves anyway.
        * ``lifetime`` in seconds (rounded up, at least 1) sets valid_lft and
          preferred_lft (IFA_CACHEINFO): the kernel removes the address by
          itself when it runs out, a backstop should the daemon die without
          cleaning up.  Calling again renews it; None means forever (and turns
          a finite lifetime back into forever).
        """
        self._run_here(self._add_vip, ifname, vip, label, lifetime)

    def _add_vip(
        self,
        ifname: str,
        vip: IPv4Interface | IPv6Interface,
        label: str | None,
        lifetime: float | None,
    ) -> None:
        lft = _lifetime_seconds(lifetime)
        index = self._require_index(ifname)
        broadcast, flags = False, 0
        if isinstance(vip, IPv4Interface):
            broadcast = vip.network.prefixlen <= 30
            if label is not None:
                if not (label == ifname or label.startswith(ifname + ":")):
                    raise ValueError(
                        f"label {label!r} must be {ifname!r} or start with '{ifname}:'"
                    )
                if len(label) >= _IFNAMSIZ:
                    raise ValueError(f"label {label!r} is longer than 15 characters")
        else:
            label, flags = None, _IFA_F_NODAD
        if self._guard is not None:
            self._guard.hold(index, vip)
        try:
            self._addr_sock.request(
                lambda seq: address_request(
                    RTM_NEWADDR,
                    seq,
                    index,
                    vip,
                    broadcast=broadcast,
                    label=label,
                    lifetime=lft,
                    flags=flags,
                )
            )
        except OSError as exc:
            raise NetlinkError(
                f"add {vip} to {ifname}{self._where()}: {exc.strerror}", exc.errno
            ) from exc

    def remove_vip(self, ifname: str, vip: IPv4Interface | IPv6Interface) -> bool:
        """Take ``vip`` off ``ifname``; True if it was there, False if not.

        Removing is what every demotion and shutdown path does, and those must
        converge without caring whether the address (or even the interface, e.g.
        a vmac already deleted) is still there, so both cases return False.
        Address and prefix length must match what was added.
        """
        return self._run_here(self._remove_vip, ifname, vip)

    def _remove_vip(self, ifname: str, vip: IPv4Interface | IPv6Interface) -> bool:
        index = self._index(ifname)
        if index is None:
            return False
        try:
            self._addr_sock.request(lambda seq: address_request(RTM_DELADDR, seq, index, vip))
        except OSError as exc:
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise NetlinkError(
                    f"remove {vip} from {ifname}{self._where()}: {exc.strerror}", exc.errno
                ) from exc
            removed = False
        else:
            removed = True
        if self._guard is not None:
            self._guard.drop(index, vip)
        return removed

    def flush_unresolved_neighbours(self, ifnames: Iterable[str], min_age: float = 0.1) -> int:
        """Delete the neighbour entries on ``ifnames`` (both families) that have been trying to
        resolve for ``min_age`` seconds or more; returns how many went. Missing interfaces are
        skipped.

        An entry created while the link had no carrier sent its probes nowhere, and with
        the carrier back it waits for its next timer (another probe, or FAILED once its probes
        are spent: up to retrans_time_ms, 1 s by default); every packet to that neighbour waits
        in its queue meanwhile, such as a new master's answers to its clients (chaos.md
        finding 7). Once the entry is gone, the next packet starts a resolution at once.
        Deleting drops the queued packets (their senders see the neighbour unreachable, as at
        FAILED), so only entries INCOMPLETE for longer than a LAN round trip go: a resolution
        under way stays, and so do resolved, externally learned and managed entries.
        """
        names = tuple(dict.fromkeys(ifnames))  # the VIP's interface is often the instance's
        return self._run(self._flush_unresolved_neighbours, names, min_age)

    def _flush_unresolved_neighbours(self, ifnames: tuple[str, ...], min_age: float) -> int:
        indexes = {i for i in map(self._index, ifnames) if i is not None}
        if not indexes:
            return 0
        where = f"{', '.join(ifnames)}{self._where()}"
        try:
            stale = unresolved_neighbours(indexes, min_age)
        except OSError as exc:
            raise NetlinkError(
                f"list the neighbours on {where}: {exc.strerror}", exc.errno
            ) from exc
        flushed, failed = 0, []
        for entry in stale:
            try:
                self._ipr.neigh(
                    "del", ifindex=entry.ifindex, dst=entry.address, family=entry.family
                )
            except _PyrNetlinkError as exc:
                if exc.code != errno.ENOENT:  # gone meanwhile: fine
                    failed.append(f"{entry.address}: {exc.args[-1]}")
            else:
                flushed += 1
        if failed:
            raise NetlinkError(f"delete neighbours on {where}: {'; '.join(failed)}")
        return flushed

    # -- virtual MAC (macvlan) -----------------------------------------------------

    def ensure_vmac(self, parent: str, vrid: int, family: int) -> str:
        """Create, or check and reuse, the vmac for ``vrid`` on ``parent``; return its name.

        The device is a macvlan ``vrrp{4|6}.{vrid}`` with MAC
        00:00:5e:00:0{1|2}:{vrid} (RFC 5798 7.3) in mode *private*, the mode
        keepalived uses for ``use_vmac``: the macvlan receives only frames for
        its own MAC (and broadcast/multicast) and never talks to sibling
        macvlans.  An existing device of that name is reused if it is a macvlan
        on ``parent`` with that MAC and mode, re-created if it is a macvlan that
        differs, and refused (NetlinkError) if it is anything else.

        Before it is brought up, IPv6 address generation is turned off on it
        (addr_gen_mode=none, as keepalived does): both routers' vmacs carry the
        same MAC and would otherwise derive the same EUI-64 link-local address
        and fail DAD.  For an IPv6 vmac the parent's link-local address is
        copied onto it (NODAD), so VRRPv3 adverts can leave through the vmac
        from the router's own link-local address, as RFC 5798 requires.

        For IPv4, the ARP sysctls are set the way keepalived sets them, so that
        ARP for a VIP put on the vmac is answered with the virtual MAC and only
        with it (broadcast ARP reaches both the parent and the vmac, and by
        default Linux answers for any local address on any interface):

        * parent ``arp_ignore=1``: answer only for addresses configured on the
          receiving interface, so the parent stays silent about VIPs on the
          vmac instead of advertising its physical MAC for them;
        * parent ``arp_filter=1``: answer only when the reply would be routed
          out of the receiving interface;
        * parent ``arp_announce=2``: when the parent itself ARPs (e.g. for the
          client a VIP connection answers), use the parent's own address as the
          sender IP, never the VIP; otherwise every such request would tell the
          neighbours that the VIP lives at the parent's physical MAC (found by
          the vmac integration test: the client's entry moved off the vmac);
        * vmac ``arp_ignore=1``: the vmac must not answer for the parent's own
          addresses with the virtual MAC;
        * vmac ``accept_local=1`` and ``rp_filter=0``: accept packets (e.g.
          adverts) arriving on the vmac even though it may have no address or
          the source is local;
        * vmac ``promote_secondaries=1``: removing one VIP never flushes the
          other VIPs of the same subnet.

        The kernel uses max(conf/all, conf/<dev>) for arp_ignore and rp_filter,
        so a host-wide rp_filter=1 still applies to the vmac.  The parent's
        previous arp_ignore/arp_filter are remembered by this manager and put
        back by :meth:`remove_vmac` when its last IPv4 vmac goes (a restarted
        daemon only sees the values it set itself, so they then stay set).
        """
        return self._run(self._ensure_vmac, parent, vrid, family)

    def _ensure_vmac(self, parent: str, vrid: int, family: int) -> str:
        name = vmac_name(vrid, family)
        mac = format_mac(vmac_for(vrid, family))
        v4 = name.startswith("vrrp4")
        parent_index = self._require_index(parent)

        index = self._index(name)
        if index is not None:
            msg = self._ipr.link("get", index=index)[0]
            kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "macvlan":
                raise NetlinkError(
                    f"{name!r}{self._where()} exists and is a {kind or 'physical'} device,"
                    " not a vmac; refusing to touch it",
                    errno.EEXIST,
                )
            mode = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_MACVLAN_MODE")
            if (
                _attr(msg, "IFLA_LINK") != parent_index
                or _attr(msg, "IFLA_ADDRESS") != mac
                or mode != "private"
            ):
                self._delete_link(name, index)
                index = None

        created = index is None
        if index is None:
            self._kernel(
                f"create vmac {name} on {parent}",
                lambda: self._ipr.link(
                    "add",
                    ifname=name,
                    kind="macvlan",
                    link=parent_index,
                    macvlan_mode="private",
                    address=mac,
                ),
            )
            index = self._require_index(name)
        vmac_index = index

        if created:
            gen_mode = {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", _IN6_ADDR_GEN_MODE_NONE]]}
            with contextlib.suppress(NetlinkError):  # kernel without IPv6: nothing to turn off
                self._kernel(
                    f"set addr_gen_mode on {name}",
                    lambda: self._ipr.link(
                        "set",
                        index=vmac_index,
                        IFLA_AF_SPEC={"attrs": [["AF_INET6", gen_mode]]},
                    ),
                )

        if v4:
            self._set_arp_sysctls(parent, name)
        else:
            link_locals = self._link_locals(parent_index, usable_only=False)
            if link_locals:
                lla = link_locals[0]
                self._kernel(
                    f"copy link-local {lla} to {name}",
                    lambda: self._ipr.addr(
                        "replace",
                        index=vmac_index,
                        address=str(lla),
                        prefixlen=64,
                        flags=_IFA_F_NODAD,
                    ),
                )

        self._kernel(f"set {name} up", lambda: self._ipr.link("set", index=vmac_index, state="up"))
        return name

    def _set_arp_sysctls(self, parent: str, vmac: str) -> None:
        """Apply keepalived's vmac ARP settings (see ensure_vmac), saving the parent's."""
        for key, value in (
            ("arp_ignore", "1"),
            ("accept_local", "1"),
            ("rp_filter", "0"),
            ("promote_secondaries", "1"),
        ):
            self._write_sysctl(vmac, key, value)
        saved = self._parent_arp.get(parent)
        if saved is None:
            saved = ({k: self._read_sysctl(parent, k) for k in _PARENT_ARP_SYSCTLS}, set())
            self._parent_arp[parent] = saved
        for key, value in _PARENT_ARP_SYSCTLS.items():
            self._write_sysctl(parent, key, value)
        saved[1].add(vmac)

    def _delete_link(self, name: str, index: int) -> None:
        """Delete a link we already checked is a macvlan."""
        self._kernel(f"delete {name}", lambda: self._ipr.link("del", index=index))

    def remove_vmac(self, name: str) -> bool:
        """Delete vmac ``name``; True if it existed, False if it was already gone.

        Refuses (NetlinkError) to delete anything that is not a macvlan, so a
        typo can never take down a real interface.  Its VIPs go with it.  If
        this manager set the parent's ARP sysctls for it and it was the last
        IPv4 vmac on that parent, the parent's previous values are restored.
        """
        return self._run(self._remove_vmac, name)

    def _remove_vmac(self, name: str) -> bool:
        index = self._index(name)
        existed = index is not None
        if index is not None:
            msg = self._ipr.link("get", index=index)[0]
            kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "macvlan":
                raise NetlinkError(
                    f"{name!r}{self._where()} is a {kind or 'physical'} device, not a vmac;"
                    " refusing to delete it",
                    errno.EPERM,
                )
            try:
                self._ipr.link("del", index=index)
            except _PyrNetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise NetlinkError(
                        f"delete {name}{self._where()}: {exc.args[-1]}", exc.code
                    ) from exc
                existed = False
        for parent, (previous, vmacs) in list(self._parent_arp.items()):
            if name in vmacs:
                vmacs.discard(name)
                if not vmacs:
                    del self._parent_arp[parent]
                    if self._index(parent) is not None:
                        for key, value in previous.items():
                            self._write_sysctl(parent, key, value)
        return existed
