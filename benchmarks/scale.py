"""Scale and cost benchmark: vipd beside keepalived in one run. CPU and RSS of one node for 1,
100 and 255 instances at advert 1 s and 0.1 s; advert timing jitter on the wire with and without
a CPU hog on the host; spurious failovers of the backup under that load.

Run as root::

    python benchmarks/scale.py [--out docs/benchmarks-scale.md]       # ~20 min
    python benchmarks/scale.py --full                                 # 10-minute load runs

Topology (vipd.lab): n1 (priority 150, master of every instance) and n2 (priority 100, backup)
on one bridge, and a client namespace that captures the adverts. Each node runs N instances on
eth0: VRIDs 1..N, one VIP each (198.51.100.1..254, then 203.0.113.1). vipd runs unfenced with
``log_level = "info"``, keepalived 2.2 with its defaults (``vrrp_version 3``, the instances),
so defaults face defaults; both in fresh, identical labs. ``--impls`` also takes ``vipd-rt``
and ``keepalived-rt``: the same with the event loop on SCHED_RR priority 1 (vipd's
``realtime_priority = 1``; keepalived's ``vrrp_rt_priority 1`` with ``vrrp_rlimit_rttime
500000``, vipd's own soft limit: keepalived's default of 10 ms gets its VRRP process killed
while it sends 100 instances' gratuitous ARPs at once).

- CPU: utime + stime of the node's processes (/proc/PID/stat; vipd: the daemon and its VIP
  guard; keepalived: its parent and VRRP child, i.e. its process group) over consecutive
  windows after a warm-up, as % of one core; median and min-max over the windows. RSS: VmRSS
  summed over the same processes; PSS likewise (shared pages split between them).
- Jitter: tcpdump in the client namespace captures every advert with its kernel receive time
  (nanoseconds), waking a few times a second rather than once per advert (:class:`Sniffer`):
  the interval between two consecutive adverts of one VRID from the master, pooled over the
  VRIDs; jitter is |interval - advert interval|.
- CPU hog: one busy process per CPU on the host (``--hog python``, the default: always there),
  or ``stress-ng --cpu N`` (``--hog stress-ng``, Debian package stress-ng).
- Spurious failovers: transitions of the backup to master during a run with nothing wrong but
  the load (goal: none).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipd.control import request
from vipd.lab.keepalived import KeepalivedNode, keepalived_version
from vipd.lab.netns import Host, Lab
from vipd.lab.pair import wait_until

IMPLS = ("vipd", "keepalived")
KNOWN_IMPLS = ("vipd", "keepalived", "vipd-rt", "keepalived-rt")
PRIORITIES = {"n1": 150, "n2": 100}
MASTER_IP = "192.0.2.11"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def vip_for(vrid: int) -> str:
    return f"198.51.100.{vrid}/24" if vrid <= 254 else f"203.0.113.{vrid - 254}/24"


# --------------------------------------------------------------------------- nodes


def vipd_config(
    name: str, priority: int, count: int, interval: float, sock: Path, realtime: bool = False
) -> str:
    lines = [
        "[daemon]",
        f'node_name = "{name}"',
        f'control_socket = "{sock}"',
        'log_format = "json"',
        'log_level = "info"',
        *(["realtime_priority = 1"] if realtime else []),
        "",
    ]
    for vrid in range(1, count + 1):
        lines += [
            "[[instance]]",
            f'name = "vi{vrid}"',
            'interface = "eth0"',
            f"vrid = {vrid}",
            f"priority = {priority}",
            f"advert_interval = {interval:g}",
            f'vips = ["{vip_for(vrid)}"]',
            "",
        ]
    return "\n".join(lines)


def keepalived_config(priority: int, count: int, interval: float, realtime: bool = False) -> str:
    rt = "    vrrp_rt_priority 1\n    vrrp_rlimit_rttime 500000\n" if realtime else ""
    parts = [f"global_defs {{\n    vrrp_version 3\n{rt}}}\n"]
    for vrid in range(1, count + 1):
        parts.append(
            f"vrrp_instance VI_{vrid} {{\n"
            "    state BACKUP\n"
            "    interface eth0\n"
            f"    virtual_router_id {vrid}\n"
            f"    priority {priority}\n"
            f"    advert_int {interval:g}\n"
            "    virtual_ipaddress {\n"
            f"        {vip_for(vrid)}\n"
            "    }\n"
            "}\n"
        )
    return "\n".join(parts)


class Node:
    """One implementation on one lab host, with N instances."""

    def __init__(self, impl: str, host: Host, workdir: Path, count: int, interval: float) -> None:
        self.impl = impl
        self.host = host
        self.count = count
        self.interval = interval
        self.priority = PRIORITIES[host.name]
        self.sock = workdir / f"{host.name}.sock"
        self.log_path = workdir / f"{host.name}-{impl}.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.keepalived: KeepalivedNode | None = None
        self.realtime = impl.endswith("-rt")
        if impl.removesuffix("-rt") == "keepalived":
            self.keepalived = KeepalivedNode(host, workdir)
        self.workdir = workdir

    def start(self) -> None:
        if self.keepalived is not None:
            self.keepalived.start(
                keepalived_config(self.priority, self.count, self.interval, self.realtime)
            )
            self.keepalived.wait_started()
            return
        conf = self.workdir / f"{self.host.name}.toml"
        conf.write_text(
            vipd_config(
                self.host.name, self.priority, self.count, self.interval, self.sock, self.realtime
            )
        )
        with self.log_path.open("ab") as log:
            self.proc = self.host.python("vipd", "run", "-c", str(conf), stdout=log, stderr=log)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"vipd on {self.host.name} exited: {self.log()[-2000:]}")
            try:
                answer = request(str(self.sock), "status", timeout=1.0)
            except (OSError, ValueError):
                return False
            states = [i["state"] for i in answer.get("result", {}).get("instances", [])]
            return len(states) == self.count and "initialize" not in states

        wait_until(ready, 30, what=f"vipd on {self.host.name}")

    def pids(self) -> list[int]:
        """The node's processes: vipd and its children (the VIP guard), or keepalived's whole
        process group."""
        if self.keepalived is not None:
            assert self.keepalived.proc is not None
            return processes_in_group(self.keepalived.proc.pid)
        assert self.proc is not None
        pid = self.proc.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *map(int, f.read().split())]

    def alive(self) -> bool:
        if self.keepalived is not None:
            return self.keepalived.running()
        return self.proc is not None and self.proc.poll() is None

    def vips_held(self) -> int:
        wanted = {vip_for(v) for v in range(1, self.count + 1)}
        return len(wanted & self.host.addresses())

    def became_master(self) -> int:
        """How many times an instance of this node went to master (from its log)."""
        text = self.log()
        if self.keepalived is not None:
            return text.count("Entering MASTER STATE")
        return sum(
            1 for line in text.splitlines() if '"transition"' in line and '"new": "master"' in line
        )

    def log(self) -> str:
        if self.keepalived is not None:
            return self.keepalived.log()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.keepalived is not None:
            self.keepalived.close()
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: pgrp
                found.append(int(entry))
    return found


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def memory_mb(pids: Sequence[int], path: str, key: str) -> float:
    total = 0
    for pid in pids:
        with (
            contextlib.suppress(OSError, ValueError, StopIteration),
            open(f"/proc/{pid}/{path}") as f,
        ):
            total += next(int(x.split()[1]) for x in f if x.startswith(key))
    return total / 1024


def rss_mb(pids: Sequence[int]) -> float:
    """VmRSS summed: pages shared between the processes (a forked child's, libraries) count
    once per process."""
    return memory_mb(pids, "status", "VmRSS:")


def pss_mb(pids: Sequence[int]) -> float:
    """PSS summed: each shared page split between all the processes that map it."""
    return memory_mb(pids, "smaps_rollup", "Pss:")


PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1  # bits 0-54 of a /proc/PID/pagemap entry; bit 63: present


def resident_mb(pids: Sequence[int]) -> float:
    """The processes' resident set with each physical page counted once, however many of them
    map it: the union of their present pages' frame numbers (/proc/PID/pagemap, which shows
    frame numbers to root only)."""
    frames: set[int] = set()
    present = 0
    for pid in pids:
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{pid}/maps") as maps,
            open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap,
        ):
            for line in maps:
                if line.rstrip().endswith("[vsyscall]"):
                    continue  # above the user address range pagemap covers
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                pagemap.seek(lo // PAGE * 8)
                entries = array.array("Q")
                entries.frombytes(pagemap.read((hi - lo) // PAGE * 8))
                for entry in entries:
                    if entry >> 63:
                        present += 1
                        frames.add(entry & PFN_MASK)
    if present and frames == {0}:
        raise RuntimeError("/proc/PID/pagemap hides frame numbers: run as root")
    return len(frames) * PAGE / 2**20


@contextlib.contextmanager
def pair_of(impl: str, count: int, interval: float) -> Iterator[tuple[Node, Node, Host]]:
    with tempfile.TemporaryDirectory(prefix=f"scale-{impl}-") as tmp, Lab() as lab:
        nodes = []
        for i, name in enumerate(PRIORITIES, start=1):
            host = lab.add_host(name, f"192.0.2.{10 + i}/24", f"2001:db8::{10 + i}/64")
            nodes.append(Node(impl, host, Path(tmp), count, interval))
        client = lab.add_host("client", "192.0.2.50/24", "2001:db8::50/64")
        try:
            nodes[0].start()
            wait_until(lambda: nodes[0].vips_held() == count, 60, what=f"n1 to hold {count} VIPs")
            nodes[1].start()
            # n2 has heard n1 on every instance once a whole Master_Down_Interval passed with
            # n1 master (keepalived has no status query).
            time.sleep(3 * interval + interval + 1.0)
            if nodes[1].vips_held():
                raise RuntimeError(f"{impl}: n2 holds VIPs after start-up")
            yield nodes[0], nodes[1], client
        except BaseException:
            for n in nodes:
                sys.stderr.write(f"--- {impl} {n.host.name} ---\n{n.log()[-3000:]}\n")
            raise
        finally:
            for n in nodes:
                n.close()


# --------------------------------------------------------------------------- measurements


@dataclass
class Cost:
    impl: str
    count: int
    interval: float
    cpu: dict[str, list[float]] = field(default_factory=dict)  # node -> % per window
    rss: dict[str, list[float]] = field(default_factory=dict)  # node -> MB per window
    pss: dict[str, list[float]] = field(default_factory=dict)  # node -> MB per window
    resident: dict[str, list[float]] = field(default_factory=dict)  # node -> MB per window


def measure_cost(
    impl: str, count: int, interval: float, window: float, windows: int, warmup: float
) -> Cost:
    cost = Cost(impl, count, interval)
    with pair_of(impl, count, interval) as (n1, n2, _client):
        time.sleep(warmup)
        for node in (n1, n2):
            cost.cpu[node.host.name] = []
            cost.rss[node.host.name] = []
            cost.pss[node.host.name] = []
            cost.resident[node.host.name] = []
        pids = {n.host.name: n.pids() for n in (n1, n2)}
        before = {name: (time.monotonic(), cpu_ticks(p)) for name, p in pids.items()}
        for _ in range(windows):
            time.sleep(window)
            for name, p in pids.items():
                t0, c0 = before[name]
                t1, c1 = time.monotonic(), cpu_ticks(p)
                cost.cpu[name].append((c1 - c0) / CLK_TCK / (t1 - t0) * 100)
                cost.rss[name].append(rss_mb(p))
                cost.pss[name].append(pss_mb(p))
                cost.resident[name].append(resident_mb(p))
                before[name] = (t1, c1)
        for node in (n1, n2):
            if not node.alive():
                raise RuntimeError(f"{impl} on {node.host.name} exited during the measurement")
        if n2.became_master():
            raise RuntimeError(f"{impl} {count}x{interval:g}: n2 became master meanwhile")
    return cost


class Sniffer:
    """Every IPv4 VRRP advert the client's eth0 receives, as (seconds, source, VRID), from a
    tcpdump capture read when it stops.

    The times are the kernel's receive times (nanoseconds). tcpdump reads through a ring the
    kernel fills and hands over a block at a time, so the observer wakes up a few times a
    second, not once per advert: on this 2-CPU host every task that wakes on the master's CPU
    in the middle of a burst of adverts can delay the rest of the burst by a tick
    (docs/chaos.md finding 5), and a sniffer that woke per advert (a raw socket and a line
    through a pipe per advert, before) was such a task, for either implementation."""

    def __init__(self, client: Host) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sniff-")
        self.path = Path(self._dir.name) / "adverts.pcap"
        argv = ["tcpdump", "-i", "eth0", "-n", "-s", "128", "-Z", "root"]
        argv += ["--time-stamp-precision", "nano", "-w", str(self.path), "ip proto 112"]
        self.proc = client.popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on eth0, ..." once it captures
        if "listening on" not in line:
            raise RuntimeError(f"tcpdump did not start: {line}{self.proc.stderr.read()}")

    def stop(self) -> list[tuple[float, str, int]]:
        self.proc.send_signal(signal.SIGINT)  # flushes its buffer into the file
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        try:
            return read_adverts(self.path.read_bytes())
        finally:
            self._dir.cleanup()


def read_adverts(pcap: bytes) -> list[tuple[float, str, int]]:
    """(seconds, source, VRID) of each IPv4 VRRP packet in a nanosecond pcap of Ethernet."""
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", pcap)
    if magic != 0xA1B23C4D or linktype != 1:
        raise RuntimeError(f"not a nanosecond Ethernet pcap (magic {magic:#x}, link {linktype})")
    out, at = [], 24
    while at + 16 <= len(pcap):
        sec, nsec, caplen, _ = struct.unpack_from("<IIII", pcap, at)
        frame = pcap[at + 16 : at + 16 + caplen]
        at += 16 + caplen
        ip = frame[14:]
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00" or ip[9] != 112:
            continue
        ihl = (ip[0] & 15) * 4
        if len(ip) > ihl + 1:
            out.append((sec + nsec / 1e9, socket.inet_ntoa(ip[12:16]), ip[ihl + 1]))
    return out


# Runs in the client's namespace: one line "SECONDS SRC VRID" per IPv4 VRRP advert, SECONDS the
# kernel's receive time (SO_TIMESTAMPNS), so a starved sniffer does not add jitter of its own.
SNIFFER = r"""
import socket, struct, sys
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
group = socket.inet_aton("224.0.0.18") + socket.inet_aton(sys.argv[1])
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
print("ready", flush=True)
out = sys.stdout
while True:
    data, anc, _, addr = s.recvmsg(2048, 64)
    ts = None
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            ts = sec + nsec / 1e9
    if ts is None:
        continue
    ihl = (data[0] & 15) * 4
    out.write(f"{ts:.9f} {addr[0]} {data[ihl + 1]}\n")
    out.flush()
"""


class LiveSniffer:
    """The adverts as (seconds, source, VRID), read as they arrive: a raw socket with the
    kernel's receive times (SO_TIMESTAMPNS), one line through a pipe per advert. It wakes once
    per advert, so the jitter runs use :class:`Sniffer`; takeover.py and advert_gaps.py keep
    this one, with which their figures were measured. With tcpdump instead, keepalived's
    takeover measured 63-72 ms in 4 of 9 rounds (one of the four without promiscuous mode
    among them), in which its master had sent nothing for about 300 ms before the kill; with
    this one 290, 327 and 328 ms in 3 rounds (session 11; not explained)."""

    def __init__(self, client: Host) -> None:
        self.proc = client.popen(
            [sys.executable, "-c", SNIFFER, "192.0.2.50"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[tuple[float, str, int]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("sniffer did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                parts = line.split()
                if parts == ["ready"]:
                    self._ready.set()
                elif len(parts) == 3:
                    self.seen.append((float(parts[0]), parts[1], int(parts[2])))

    def stop(self) -> list[tuple[float, str, int]]:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._thread.join(5)
        return list(self.seen)


def intervals(seen: list[tuple[float, str, int]], src: str) -> list[float]:
    last: dict[int, float] = {}
    out: list[float] = []
    for ts, who, vrid in sorted(seen):
        if who != src:
            continue
        if vrid in last:
            out.append(ts - last[vrid])
        last[vrid] = ts
    return out


@contextlib.contextmanager
def cpu_hog(kind: str | None) -> Iterator[None]:
    procs: list[subprocess.Popen[Any]] = []
    n = os.cpu_count() or 1
    if kind == "stress-ng":
        procs.append(subprocess.Popen(["stress-ng", "--cpu", str(n), "--quiet"]))
    elif kind == "python":
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@dataclass
class Jitter:
    impl: str
    count: int
    interval: float
    hog: str
    seconds: float
    values: list[float]  # intervals between adverts, seconds
    spurious: int
    load: tuple[float, float]  # 1-min load average before, after

    def jitter(self) -> list[float]:
        return sorted(abs(v - self.interval) for v in self.values)


def measure_jitter(
    impl: str, count: int, interval: float, hog: str | None, seconds: float
) -> Jitter:
    with pair_of(impl, count, interval) as (n1, n2, client):
        sniffer = Sniffer(client)
        base = n2.became_master()
        load0 = os.getloadavg()[0]
        with cpu_hog(hog):
            time.sleep(1.0)  # the hog at full speed
            t_start = time.time()
            time.sleep(seconds)
            t_end = time.time()
        load1 = os.getloadavg()[0]
        seen = [s for s in sniffer.stop() if t_start <= s[0] <= t_end]
        for node in (n1, n2):
            if not node.alive():
                raise RuntimeError(f"{impl} on {node.host.name} exited during the measurement")
        spurious = n2.became_master() - base
        if n1.vips_held() != count:
            spurious += 1  # n1 lost an instance (n2 took it, or a flap)
    return Jitter(
        impl,
        count,
        interval,
        hog or "none",
        seconds,
        intervals(seen, MASTER_IP),
        spurious,
        (load0, load1),
    )


# --------------------------------------------------------------------------- report


def med(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{fmt.format(m)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def cost_table(costs: list[Cost]) -> str:
    rows = [
        "| instances | advert (s) | CPU master %: vipd | keepalived | CPU backup %: vipd "
        "| keepalived | RSS master MB: vipd | keepalived | RSS backup MB: vipd | keepalived "
        "| resident master MB: vipd | keepalived | PSS master MB: vipd | keepalived |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(c.count, c.interval) for c in costs}, key=lambda k: (-k[1], k[0]))
    for count, interval in keys:
        by = {c.impl: c for c in costs if (c.count, c.interval) == (count, interval)}
        cells = []
        for metric, node in (
            ("cpu", "n1"),
            ("cpu", "n2"),
            ("rss", "n1"),
            ("rss", "n2"),
            ("resident", "n1"),
            ("pss", "n1"),
        ):
            for impl in IMPLS:
                c = by.get(impl)
                cells.append(med(getattr(c, metric)[node], "{:.1f}") if c else "n/a")
        rows.append(f"| {count} | {interval:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def jitter_table(runs: list[Jitter]) -> str:
    rows = [
        "| implementation | instances | advert (s) | CPU hog | run (s) | adverts | interval p50 "
        "ms | jitter p50 ms | jitter p99 ms | jitter max ms | load 1-min before/after "
        "| spurious failovers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for j in runs:
        jit = j.jitter()
        rows.append(
            f"| {j.impl} | {j.count} | {j.interval:g} | {j.hog} | {j.seconds:.0f} "
            f"| {len(j.values)} | {pct(j.values, 0.5) * 1000:.2f} "
            f"| {pct(jit, 0.5) * 1000:.2f} | {pct(jit, 0.99) * 1000:.2f} "
            f"| {max(jit, default=float('nan')) * 1000:.2f} "
            f"| {j.load[0]:.2f} / {j.load[1]:.2f} | {j.spurious} |"
        )
    return "\n".join(rows)


def goals(costs: list[Cost], runs: list[Jitter]) -> list[str]:
    out = []
    for c in costs:
        if c.impl == "vipd" and c.count == 100 and c.interval == 0.1:
            k = next(
                (
                    x
                    for x in costs
                    if x.impl == "keepalived" and x.count == 100 and x.interval == 0.1
                ),
                None,
            )
            v = statistics.median(c.cpu["n1"])
            kv = statistics.median(k.cpu["n1"]) if k else None
            same_run = f"{kv:.1f} % in this run" if kv is not None else "not measured here"
            ok = "met" if kv is not None and v <= kv else "NOT met"
            out.append(
                f"- CPU of the master at 100 instances / 0.1 s no more than keepalived's: vipd "
                f"{v:.1f} %, keepalived {same_run} (4.2 % in design/anchors.md): **{ok}**"
            )
        if c.impl == "vipd" and c.count == 255:
            resident = max(max(c.resident["n1"]), max(c.resident["n2"]))
            summed = max(max(c.rss["n1"]), max(c.rss["n2"]))
            pss = max(max(c.pss["n1"]), max(c.pss["n2"]))
            ok = "met" if resident < 40 else "NOT met"
            ok_summed = "met" if summed < 40 else "NOT met"
            out.append(
                f"- RSS under 40 MB at 255 instances (advert {c.interval:g} s): the resident set"
                f" of the daemon and its guard, each page once, max {resident:.1f} MB: **{ok}**;"
                f" read as their VmRSS summed (the pages they share, libpython's and libc's,"
                f" counted twice), max {summed:.1f} MB: **{ok_summed}**; PSS {pss:.1f} MB"
            )
    for j in runs:
        if j.impl.startswith("vipd") and j.hog != "none":
            p99 = pct(j.jitter(), 0.99) * 1000
            ok = "met" if p99 < 5 else "NOT met"
            how = ", realtime_priority = 1" if j.impl == "vipd-rt" else ""
            out.append(
                f"- Advert jitter p99 under 5 ms with a CPU hog ({j.count} instances, "
                f"{j.interval:g} s{how}): {p99:.2f} ms: **{ok}**"
            )
            ok = "met" if j.spurious == 0 else "NOT met"
            out.append(
                f"- No spurious failover at {j.interval:g} s under the hog ({j.count} "
                f"instances{how}, {j.seconds / 60:.1f} min; the goal asks for 10 min): "
                f"{j.spurious}:"
                f" **{ok}**"
            )
    return out


def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {model}; {os.cpu_count()} CPUs (shared with other work on this machine)",
        f"- kernel: {platform.release()}; python {platform.python_version()}",
        f"- keepalived: {keepalived_version()}",
    ]


def write_markdown(
    path: Path,
    command: str,
    costs: list[Cost],
    runs: list[Jitter],
    args: argparse.Namespace,
    loads: dict[str, tuple[float, float, float]],
    elapsed: float,
) -> None:
    load_lines = [
        f"- load averages (1/5/15 min) {when}: " + " / ".join(f"{x:.2f}" for x in value)
        for when, value in loads.items()
    ]
    impls = "" if args.impls == ",".join(IMPLS) else f" --impls {args.impls}"
    lines = [
        "# Scale and cost: vipd beside keepalived",
        "",
        "Generated by `benchmarks/scale.py`; do not edit the numbers by hand.",
        "",
        "```",
        command,
        "```",
        "",
        *machine(),
        *load_lines,
        f"- whole run: {elapsed / 60:.1f} min",
        "",
        "## Goals (issue 6)",
        "",
        *goals(costs, runs),
        "",
    ]
    if costs:
        lines += [
            "## CPU and RSS of one node",
            "",
            f"Regenerate this table alone: `python benchmarks/scale.py --only cost{impls}"
            f" --counts {args.counts} --intervals {args.intervals} --window {args.window:g}"
            f" --windows {args.windows}`",
            "",
            cost_table(costs),
            "",
            f"Median (min-max) over {args.windows} consecutive windows of {args.window:g} s after"
            f" a {args.warmup:g} s warm-up.",
            "CPU is utime + stime from /proc/PID/stat as % of one core (resolution: one clock",
            "tick, 10 ms, per window); vipd's add the daemon and its VIP guard, keepalived's its",
            "parent and VRRP child (its process group). RSS is VmRSS (MB), summed likewise, so",
            "pages the processes share count once per process. Resident: the pages resident for",
            "the processes, each counted once however many of them map it (the union of their",
            "page frames, /proc/PID/pagemap). PSS (smaps_rollup) splits each shared page between",
            "all the processes on the host that map it.",
            "The master (n1, priority 150) sends the adverts; the backup (n2, 100) receives and",
            "checks them. Each node runs N instances (VRIDs 1..N) on eth0 with one VIP each;",
            "vipd unfenced at log level info, keepalived with its defaults.",
            "",
        ]
    if runs:
        lines += [
            "## Advert timing jitter and spurious failovers",
            "",
            f"Regenerate this table alone: `python benchmarks/scale.py --only jitter{impls}"
            f" --jitter-counts {args.jitter_counts} --jitter-seconds {args.jitter_seconds:g}"
            f" --load-seconds {args.load_seconds:g} --hog {args.hog}`"
            " (`--full`: 10-minute load runs)",
            "",
            jitter_table(runs),
            "",
            "Adverts of the master as the client's kernel received them (a tcpdump capture in",
            "the client namespace, nanosecond times); interval: between two consecutive adverts",
            "of one VRID, pooled over the VRIDs; jitter: |interval - advert interval|. The CPU",
            f"hog is one busy process per CPU on the host ({args.hog}), at the same priority as",
            "the daemons. Spurious failovers: transitions of the backup to master (its log), plus",
            "instances the master no longer held at the end; the goal is none.",
            *(
                [
                    "`-rt`: both nodes' event loops on SCHED_RR priority 1 (vipd"
                    " `realtime_priority = 1`; keepalived `vrrp_rt_priority 1` with",
                    "`vrrp_rlimit_rttime 500000`).",
                ]
                if any(j.impl.endswith("-rt") for j in runs)
                else []
            ),
            "",
        ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_list(kind: type, text: str) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--counts", default="1,100,255")
    parser.add_argument("--intervals", default="1,0.1")
    parser.add_argument("--window", type=float, default=10.0, help="CPU window (s)")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--jitter-counts", default="1,100")
    parser.add_argument("--jitter-interval", type=float, default=0.1)
    parser.add_argument("--jitter-seconds", type=float, default=30.0, help="without the hog")
    parser.add_argument("--load-seconds", type=float, default=120.0, help="with the hog")
    parser.add_argument("--full", action="store_true", help="10-minute runs under the hog")
    parser.add_argument("--hog", choices=("python", "stress-ng"), default="python")
    parser.add_argument("--only", choices=("cost", "jitter"), default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-scale.md"))
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the labs, daemons and CPU hogs are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    if args.hog == "stress-ng" and shutil.which("stress-ng") is None:
        parser.error("stress-ng not found (apt-get install stress-ng), or use --hog python")
    if args.full:
        args.load_seconds = 600.0
    impls = parse_list(str, args.impls)
    if set(impls) - set(KNOWN_IMPLS):
        parser.error(f"--impls: each of {', '.join(KNOWN_IMPLS)}, got {args.impls}")
    command = shlex.join(["python", "benchmarks/scale.py", *sys.argv[1:]])
    loads = {"before": os.getloadavg()}
    started = time.monotonic()
    costs: list[Cost] = []
    runs: list[Jitter] = []
    if args.only in (None, "cost"):
        for interval in parse_list(float, args.intervals):
            for count in parse_list(int, args.counts):
                for impl in impls:  # interleaved, so a busy phase of the machine hits both
                    t0 = time.monotonic()
                    c = measure_cost(impl, count, interval, args.window, args.windows, args.warmup)
                    costs.append(c)
                    print(
                        f"cost {impl:10} {count:3} x {interval:g} s: CPU n1 "
                        f"{med(c.cpu['n1'])} %, n2 {med(c.cpu['n2'])} %, RSS n1 "
                        f"{med(c.rss['n1'], '{:.1f}')} MB ({time.monotonic() - t0:.0f} s)",
                        flush=True,
                    )
        loads["after the cost runs"] = os.getloadavg()
    if args.only in (None, "jitter"):
        for count in parse_list(int, args.jitter_counts):
            for hog, seconds in ((None, args.jitter_seconds), (args.hog, args.load_seconds)):
                for impl in impls:
                    j = measure_jitter(impl, count, args.jitter_interval, hog, seconds)
                    runs.append(j)
                    jit = j.jitter()
                    print(
                        f"jitter {impl:10} {count:3} hog={j.hog:9}: {len(j.values)} intervals,"
                        f" jitter p50 {pct(jit, 0.5) * 1000:.2f} p99 {pct(jit, 0.99) * 1000:.2f}"
                        f" max {max(jit, default=0) * 1000:.2f} ms; spurious {j.spurious}",
                        flush=True,
                    )
    loads["after"] = os.getloadavg()
    elapsed = time.monotonic() - started
    print()
    if costs:
        print(cost_table(costs))
        print()
    if runs:
        print(jitter_table(runs))
        print()
    print("\n".join(goals(costs, runs)))
    write_markdown(args.out, command, costs, runs, args, loads, elapsed)
    print(f"\nwrote {args.out} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
