"""A throw-away L2 network built from Linux network namespaces.

The lab is test and demo tooling, not part of the daemon: it shells out to
``ip`` and ``nft`` because that is the most transparent way to build
the topology, and every command it runs can be copied into a shell to poke at
a lab by hand.

Topology: one "switch" namespace holds a Linux bridge with multicast snooping
off (so VRRP adverts to 224.0.0.18 / ff02::12 are flooded like on a dumb
switch), and every host is its own namespace joined to the bridge by a veth
pair whose host end is called ``eth0``. Faults are injected on the switch
side, so the hosts (and the vipd under test in them) see nothing but lost
frames, exactly as with a misbehaving real switch.

Every namespace name carries a per-run random prefix (``vl`` + 6 hex digits)
so parallel runs on one machine cannot collide, and only documentation
address ranges are ever configured, only inside namespaces the lab created.
The root namespace is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from vipd.lab.probe import ProbeLog

__all__ = [
    "LAB_NETWORKS",
    "Host",
    "Lab",
    "LabCommandError",
    "LabError",
    "list_namespaces",
]

log = logging.getLogger(__name__)

#: The only networks the lab will configure (RFC 5737 and RFC 3849 documentation ranges).
LAB_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)

BRIDGE = "br0"
HOST_IFNAME = "eth0"
NFT_TABLE = "vlab"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,9}$")
# Host names end up in a namespace name and in the switch port name "p-NAME",
# which must fit IFNAMSIZ (15 characters).
_HOST_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}$")

# Long enough that a stale neighbour entry survives any test: the upstream
# device in the incident kept its ARP entry for about four hours.
LONG_REACHABLE_MS = 14_400_000

# The repository root (the directory holding the ``vipd`` package), so that
# helper processes started inside namespaces import this very checkout even
# when it is not installed in the interpreter's site-packages.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class LabError(RuntimeError):
    """The lab could not be built, changed or torn down."""


class LabCommandError(subprocess.CalledProcessError):
    """A command run by the lab failed; unlike its base class, str() shows stderr."""

    def __str__(self) -> str:
        cmd = " ".join(self.cmd) if isinstance(self.cmd, list | tuple) else str(self.cmd)
        err = self.stderr.strip() if isinstance(self.stderr, str) else ""
        out = self.stdout.strip() if isinstance(self.stdout, str) else ""
        detail = err or out
        msg = f"command {cmd!r} exited with {self.returncode}"
        return f"{msg}: {detail}" if detail else msg


def _run(
    argv: Sequence[str], check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise LabCommandError (with stderr) on failure.

    stdin is ``input`` or /dev/null, never the caller's terminal.
    """
    log.debug("lab: %s", " ".join(argv))
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``), without the "(id: N)" suffix."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _check_lab_address(cidr: str) -> str:
    """Refuse any address outside the documentation ranges, so the lab can never clash
    with a real network even if a namespace were misconfigured."""
    iface = ipaddress.ip_interface(cidr)
    if "/" not in cidr:
        raise ValueError(f"{cidr!r}: give a prefix length, e.g. {cidr}/24")
    if not any(
        iface.version == net.version and iface.network.subnet_of(net)  # type: ignore[arg-type]
        for net in LAB_NETWORKS
    ):
        allowed = ", ".join(str(n) for n in LAB_NETWORKS)
        raise ValueError(f"{cidr!r} is outside the lab ranges ({allowed})")
    return str(iface)


def _write_sysctls(ns: str, values: Iterable[tuple[str, str]]) -> None:
    """Write /proc/sys entries inside namespace ``ns``.

    /proc/sys/net shows the network namespace of the process that opens the
    file, so the writes happen in one small shell started with ``ip netns
    exec``. This avoids depending on procps' ``sysctl`` binary, which a
    minimal machine may lack.
    """
    args: list[str] = []
    for key, value in values:
        args += ["/proc/sys/" + key.replace(".", "/"), value]
    script = 'while [ "$#" -gt 0 ]; do printf "%s\\n" "$2" > "$1" || exit 1; shift 2; done'
    _run(["ip", "netns", "exec", ns, "sh", "-c", script, "sh", *args])


class Host:
    """One node of the lab: its own network namespace with ``eth0`` on the switch.

    Created by :meth:`Lab.add_host`; do not instantiate directly.
    """

    def __init__(self, lab: Lab, name: str, ns: str, port: str) -> None:
        self.lab = lab
        self.name = name
        #: Name of the host's network namespace (``ip netns exec NS ...``).
        self.ns = ns
        #: Interface on the switch that leads to this host (in ``lab.switch_ns``).
        self.port = port
        self.ifname = HOST_IFNAME
        #: MAC address of the host's eth0.
        self.mac = ""
        self._procs: list[subprocess.Popen[Any]] = []
        self._probes: list[ProbeLog] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r}, mac={self.mac!r})"

    # -- running things inside the namespace ---------------------------------

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host's namespace and wait for it (text output captured)."""
        return _run(["ip", "netns", "exec", self.ns, *argv], check=check)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this host's namespace without waiting.

        The process is tracked and killed (its whole process group) when the
        lab closes. It gets its own session unless ``start_new_session`` is
        passed, so that the kill reaches its children and a Ctrl-C meant for
        the test runner does not hit it first.
        """
        kw.setdefault("start_new_session", True)
        env = dict(kw.pop("env", None) or os.environ)
        kw["env"] = env
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv], **kw
        )
        self._procs.append(proc)
        return proc

    def python(self, module: str, *args: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``python -m module args...`` (this interpreter) inside the namespace, tracked.

        PYTHONPATH is extended with this checkout, so lab helpers work without
        an installed package.
        """
        env = dict(kw.pop("env", None) or os.environ)
        parts = [_PACKAGE_PARENT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return self.popen([sys.executable, "-m", module, *args], env=env, **kw)

    def start_responder(self, port: int = 8080) -> subprocess.Popen[Any]:
        """Start :mod:`vipd.lab.responder`, which answers every TCP connection with this
        host's name, and wait until it listens; so a client can tell who holds the VIP."""
        proc = self.python(
            "vipd.lab.responder",
            "--name",
            self.name,
            "--port",
            str(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise LabError(f"responder on {self.name} exited with {proc.returncode}: {err}")
            ss = self.run("ss", "-Htln", f"sport = :{port}", check=False)
            if ss.returncode == 0 and ss.stdout.strip():
                return proc
            time.sleep(0.02)
        raise LabError(f"responder on {self.name} did not listen on port {port} within 10 s")

    def start_probe(
        self,
        target: str,
        port: int = 8080,
        interval: float = 0.01,
        timeout: float = 0.2,
        duration: float | None = None,
    ) -> ProbeLog:
        """Start :mod:`vipd.lab.probe` against ``target`` from this host; returns its log.

        The probe is stopped when the lab closes, or earlier with ``ProbeLog.stop()``.
        """
        args = [
            "--target",
            target,
            "--port",
            str(port),
            "--interval",
            str(interval),
            "--timeout",
            str(timeout),
        ]
        if duration is not None:
            args += ["--duration", str(duration)]
        proc = self.python(
            "vipd.lab.probe",
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        probe = ProbeLog(proc)
        self._probes.append(probe)
        return probe

    # -- inspecting and tuning the stack -------------------------------------

    def addresses(self) -> set[str]:
        """Addresses on eth0 as "ADDR/PREFIX" strings, including the IPv6 link-local one."""
        out = self.run("ip", "-j", "addr", "show", "dev", self.ifname).stdout
        result: set[str] = set()
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                result.add(f"{info['local']}/{info['prefixlen']}")
        return result

    def add_address(self, cidr: str) -> None:
        """Add a lab-range address to eth0 (IPv6 without DAD, so it is usable at once)."""
        cidr = _check_lab_address(cidr)
        extra = ["nodad"] if ":" in cidr else []
        self.run("ip", "addr", "add", cidr, "dev", self.ifname, *extra)

    def neighbour(self, ip: str) -> str | None:
        """Link-layer address the neighbour table on eth0 holds for ``ip``, or None.

        Entries without a link-layer address (INCOMPLETE, FAILED) count as None.
        """
        out = self.run("ip", "-j", "neigh", "show", "to", ip, "dev", self.ifname).stdout
        for entry in json.loads(out or "[]"):
            mac = entry.get("lladdr")
            if mac and entry.get("dst") == str(ipaddress.ip_address(ip)):
                return str(mac).lower()
        return None

    def flush_neighbours(self) -> None:
        """Forget all neighbour entries on eth0."""
        self.run("ip", "neigh", "flush", "dev", self.ifname, check=False)

    def set_long_arp(self) -> None:
        """Make neighbour entries stay REACHABLE for ~4 h (IPv4 and IPv6).

        This mimics the upstream device in the incident, which kept sending
        to the old MAC long after the VIP had moved: a failover is only good
        if its gratuitous ARP / unsolicited NA updates such a cache. Writing
        base_reachable_time_ms makes the kernel re-draw reachable_time at
        once, so it applies to entries confirmed from now on.
        """
        _write_sysctls(
            self.ns,
            [
                (f"net.ipv4.neigh.{self.ifname}.base_reachable_time_ms", str(LONG_REACHABLE_MS)),
                (f"net.ipv6.neigh.{self.ifname}.base_reachable_time_ms", str(LONG_REACHABLE_MS)),
            ],
        )

    def ping(self, addr: str, count: int = 1, timeout: float = 1.0) -> bool:
        """True if ``addr`` answers ``count`` ICMP echo(s) (needs iputils ``ping``)."""
        wait = max(1, round(timeout))
        proc = self.run("ping", "-n", "-q", "-c", str(count), "-W", str(wait), addr, check=False)
        return proc.returncode == 0

    # -- teardown --------------------------------------------------------------

    def _stop_processes(self) -> list[str]:
        """Stop probes and kill every tracked process; returns error descriptions."""
        errors: list[str] = []
        for probe in self._probes:
            try:
                probe.stop()
            except Exception as exc:  # keep tearing down
                errors.append(f"{self.name}: stopping probe: {exc}")
        for proc in self._procs:
            try:
                _kill(proc)
            except Exception as exc:  # keep tearing down
                errors.append(f"{self.name}: killing pid {proc.pid}: {exc}")
        self._probes.clear()
        self._procs.clear()
        return errors


def _kill(proc: subprocess.Popen[Any], grace: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers; reap the process."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=grace)
    # Children may outlive a leader that exited by itself; the group id stays valid
    # while any member lives.
    _signal_group(proc, signal.SIGKILL)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _signal_group(proc: subprocess.Popen[Any], sig: signal.Signals) -> None:
    """Signal proc's process group if it leads one, else just proc."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


class Lab:
    """A switch namespace with a bridge, plus host namespaces hanging off it.

    Use as a context manager. :meth:`close` removes everything the lab
    created (processes first, so the namespaces really disappear, then the
    namespaces, which takes their veths along); it is idempotent and also
    runs at interpreter exit if a caller forgot it.
    """

    def __init__(self, prefix: str | None = None) -> None:
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool!r} not found on PATH (install iproute2 and nftables)")
        self.prefix = prefix or "vl" + secrets.token_hex(3)
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad lab prefix {self.prefix!r}: want [a-z][a-z0-9]{{1,9}}")
        self.switch_ns = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._nft_ready = False
        self._loss: dict[str, int] = {}  # switch port -> loss in 1/10000
        self._closed = False
        atexit.register(self.close)
        try:
            self._create_switch()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Don't let a teardown problem hide the exception that got us here.
        try:
            self.close()
        except Exception:
            log.exception("lab %s: teardown failed after an error", self.prefix)

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, hosts={sorted(self.hosts)})"

    # -- building ----------------------------------------------------------------

    def _add_ns(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)

    def _sw(
        self, *argv: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the switch namespace."""
        return _run(["ip", "netns", "exec", self.switch_ns, *argv], check=check, input=input)

    def _create_switch(self) -> None:
        self._add_ns(self.switch_ns)
        # The switch must be a silent L2 device: no IPv6 on the bridge or its
        # ports means no router solicitations, MLD reports or DAD probes from
        # the switch itself polluting captures. Bridging is unaffected.
        _write_sysctls(
            self.switch_ns,
            [
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        )
        ipn = ["ip", "-n", self.switch_ns]
        _run([*ipn, "link", "set", "lo", "up"])
        # mcast_snooping 0: flood all multicast (VRRP adverts, ND) to every
        # port like a dumb switch; with snooping on, the bridge would only
        # forward to ports that sent an MLD/IGMP report, and hosts with
        # unusual stacks could silently miss adverts.
        # stp_state 0 (the default): ports forward as soon as they are up.
        _run(
            [
                *ipn,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
                "stp_state",
                "0",
            ]
        )
        _run([*ipn, "link", "set", BRIDGE, "up"])

    def add_host(self, name: str, ipv4: str | None = None, ipv6: str | None = None) -> Host:
        """Create a host namespace named ``PREFIX-name`` joined to the switch.

        ``ipv4``/``ipv6`` are "ADDR/PREFIX" strings from the lab ranges, e.g.
        ``add_host("n1", "192.0.2.11/24", "2001:db8::11/64")``. IPv6 DAD is
        off in the namespace, so every address (link-local included) is usable
        as soon as this returns.
        """
        if self._closed:
            raise LabError("lab is closed")
        if not _HOST_RE.match(name) or name == "sw":
            raise ValueError(f"bad host name {name!r}: want [a-z][a-z0-9_]{{0,11}}, not 'sw'")
        if name in self.hosts:
            raise ValueError(f"host {name!r} already exists")
        addrs = [_check_lab_address(a) for a in (ipv4, ipv6) if a is not None]
        ns = f"{self.prefix}-{name}"
        host = Host(self, name, ns, port=f"p-{name}")
        self._add_ns(ns)
        self.hosts[name] = host
        # Defaults must be set before eth0 arrives: the kernel copies "default"
        # into a new interface's settings when it registers, and DAD would
        # start the moment the link comes up. Hosts do not forward: a new
        # namespace inherits the machine's ip_forward (podman's install turns it
        # on), and an old master that forwards relays the client's packets for
        # the VIP it just dropped, which hides part of a failover's outage.
        _write_sysctls(
            ns,
            [
                ("net.ipv4.ip_forward", "0"),
                ("net.ipv6.conf.all.forwarding", "0"),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.all.dad_transmits", "0"),
                ("net.ipv6.conf.default.dad_transmits", "0"),
            ],
        )
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Create the pair inside the switch namespace with the peer placed
        # straight into the host namespace: nothing ever exists in the root
        # namespace, even briefly.
        _run(
            [
                "ip",
                "-n",
                self.switch_ns,
                "link",
                "add",
                host.port,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IFNAME,
                "netns",
                ns,
            ]
        )
        _write_sysctls(
            ns,
            [
                (f"net.ipv6.conf.{HOST_IFNAME}.accept_dad", "0"),
                (f"net.ipv6.conf.{HOST_IFNAME}.dad_transmits", "0"),
            ],
        )
        _run(["ip", "-n", self.switch_ns, "link", "set", host.port, "master", BRIDGE])
        _run(["ip", "-n", self.switch_ns, "link", "set", host.port, "up"])
        for addr in addrs:
            extra = ["nodad"] if ":" in addr else []
            _run(["ip", "-n", ns, "addr", "add", addr, "dev", HOST_IFNAME, *extra])
        _run(["ip", "-n", ns, "link", "set", HOST_IFNAME, "up"])
        link = json.loads(_run(["ip", "-n", ns, "-j", "link", "show", HOST_IFNAME]).stdout)
        host.mac = str(link[0]["address"]).lower()
        return host

    # -- fault injection ---------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Take the host's switch port down: the host can reach nobody.

        Like unplugging the cable at the switch, the host's eth0 loses carrier
        (NO-CARRIER / LOWER_DOWN) too. Use :meth:`isolate` to drop the host's
        traffic while its link stays up.
        """
        self._check_host(host)
        _run(["ip", "-n", self.switch_ns, "link", "set", host.port, "down"])

    def restore(self, host: Host) -> None:
        """Bring the host's switch port back up (undoes :meth:`cut`)."""
        self._check_host(host)
        _run(["ip", "-n", self.switch_ns, "link", "set", host.port, "up"])

    def partition(self, a: Host, b: Host) -> None:
        """Drop every frame between ``a`` and ``b`` (both directions, floods included);
        both still reach all other hosts. Idempotent."""
        self._check_host(a)
        self._check_host(b)
        self._nft_setup()
        self._nft(f'add element bridge {NFT_TABLE} pairs {{ "{a.port}" . "{b.port}" }}')
        self._nft(f'add element bridge {NFT_TABLE} pairs {{ "{b.port}" . "{a.port}" }}')

    def heal(self, a: Host, b: Host) -> None:
        """Undo :meth:`partition` for ``a`` and ``b``. Idempotent."""
        self._check_host(a)
        self._check_host(b)
        if not self._nft_ready:
            return
        for src, dst in ((a, b), (b, a)):
            self._nft(
                f'delete element bridge {NFT_TABLE} pairs {{ "{src.port}" . "{dst.port}" }}',
                check=False,
            )

    def isolate(self, host: Host) -> None:
        """Drop all frames to and from ``host`` at the switch while its link stays up
        (no carrier change, unlike :meth:`cut`). Idempotent."""
        self._check_host(host)
        self._nft_setup()
        self._nft(f'add element bridge {NFT_TABLE} isolated {{ "{host.port}" }}')

    def unisolate(self, host: Host) -> None:
        """Undo :meth:`isolate`. Idempotent."""
        self._check_host(host)
        if self._nft_ready:
            self._nft(
                f'delete element bridge {NFT_TABLE} isolated {{ "{host.port}" }}', check=False
            )

    def set_loss(self, host: Host, percent: float) -> None:
        """Lose ``percent`` % of frames to and from ``host`` (0.01 % steps), like a bad cable.

        Done with nftables ``numgen random`` in the switch's bridge forward
        hook rather than tc netem: sch_netem is a module that minimal kernels
        (this project's CI VMs among them) do not have. Each direction drops
        independently; a frame the switch floods is judged once per output
        port, i.e. per receiving link.
        """
        self._check_host(host)
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"loss percent {percent} not in [0, 100]")
        self._nft_setup()
        self._loss[host.port] = round(percent * 100)
        self._nft_load_loss()

    def clear_loss(self, host: Host) -> None:
        """Remove the loss set by :meth:`set_loss`. Idempotent."""
        self._check_host(host)
        if self._loss.pop(host.port, None) is not None:
            self._nft_load_loss()

    def _check_host(self, host: Host) -> None:
        if self._closed:
            raise LabError("lab is closed")
        if self.hosts.get(host.name) is not host:
            raise ValueError(f"{host!r} does not belong to {self!r}")

    def _nft(self, command: str, check: bool = True) -> None:
        self._sw("nft", command, check=check)

    def _nft_setup(self) -> None:
        """Create the bridge-family filter in the switch namespace on first use.

        The forward hook sees every frame the bridge passes from one port to
        another, once per output port, floods included, with both iifname and
        oifname set, so a set of (in-port . out-port) pairs is all a partition
        needs; partition/heal only add or delete set elements.
        """
        if self._nft_ready:
            return
        ruleset = f"""
table bridge {NFT_TABLE} {{
    set pairs {{ type ifname . ifname; }}
    set isolated {{ type ifname; }}
    chain loss {{
    }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        jump loss
        iifname . oifname @pairs counter drop
        iifname @isolated counter drop
        oifname @isolated counter drop
    }}
}}
"""
        self._sw("nft", "-f", "-", input=ruleset)
        self._nft_ready = True

    def _nft_load_loss(self) -> None:
        """Replace the loss chain's rules with ones for ``self._loss``, atomically."""
        lines = [f"flush chain bridge {NFT_TABLE} loss"]
        for port, per10k in sorted(self._loss.items()):
            if per10k <= 0:
                continue
            # numgen's range is 0..9999, so "< 10000" is rejected: 100 % is a plain drop.
            chance = f"numgen random mod 10000 < {per10k} " if per10k < 10000 else ""
            for match in ("iifname", "oifname"):
                lines.append(
                    f'add rule bridge {NFT_TABLE} loss {match} "{port}" {chance}counter drop'
                )
        self._sw("nft", "-f", "-", input="\n".join(lines) + "\n")

    # -- teardown ----------------------------------------------------------------

    def close(self) -> None:
        """Kill the lab's processes and delete its namespaces. Idempotent; carries on
        past individual failures and raises LabError at the end if something stayed."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        for host in self.hosts.values():
            errors += host._stop_processes()
        # Any other process still inside our namespaces (e.g. started by hand
        # with `ip netns exec`) would keep the namespace alive after deletion.
        for ns in self._namespaces:
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self._namespaces):
            proc = _run(["ip", "netns", "del", ns], check=False)
            if proc.returncode != 0 and ns in list_namespaces():
                errors.append(f"deleting namespace {ns}: {proc.stderr.strip()}")
        self._namespaces.clear()
        leftover = [ns for ns in list_namespaces() if ns.startswith(self.prefix + "-")]
        if leftover:
            errors.append(f"namespaces left behind: {leftover}")
        if errors:
            raise LabError(f"lab {self.prefix} teardown: " + "; ".join(errors))
