"""Where the fair scheduler's advert jitter comes from: run one pair (benchmarks/scale.py's lab)
under the CPU hog, timestamp every advert as it leaves the master's interface, and split the
lateness of each advert into its burst's late start and the gaps inside the burst.

Run as root::

    python benchmarks/bursts.py --impls vipd,keepalived --seconds 120

The capture is an AF_PACKET socket in the master's namespace that keeps only the outgoing
adverts (PACKET_OUTGOING), with the kernel's timestamp (SO_TIMESTAMPNS) taken as the daemon's
send hands the frame to the device: a delay there is the daemon's (or its host's), not the
path's. An advert's *lateness* is its phase in the advert interval minus its VRID's usual phase
(the 1st percentile over the run). VRIDs whose usual phases lie within 1 ms of each other form
a *burst group* (vipd sends one burst per group and slot; keepalived's instances keep phases of
their own, so its groups are mostly single VRIDs); per group and interval the report gives the
burst's start lateness, the longest gap between two of its consecutive adverts, and after which
advert of the burst that gap came.

``--stop-backup`` SIGSTOPs the backup's processes for the measurement (nothing on the host
wakes for the adverts then but the capture); ``--nice-observers`` runs the capture at nice 19;
``--pin`` puts the master on CPU 0 and the backup and the capture on CPU 1 (as if the backup
were another host; one hog pinned to each CPU).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # benchmarks/ is not a package

# Runs in the master's namespace: "SECONDS VRID" per IPv4 VRRP advert sent on eth0, SECONDS the
# kernel's timestamp; written in blocks, so the capture wakes nobody per advert.
EGRESS = r"""
import socket, struct, sys
ETH_P_ALL, SO_TIMESTAMPNS = 3, getattr(socket, "SO_TIMESTAMPNS", 35)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.bind(("eth0", ETH_P_ALL))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
print("ready", flush=True)
out = sys.stdout
while True:
    data, anc, _, addr = s.recvmsg(2048, 64)
    if addr[2] != socket.PACKET_OUTGOING or data[12:14] != b"\x08\x00" or data[23] != 112:
        continue
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            out.write(f"{sec + nsec / 1e9:.9f} {data[14 + (data[14] & 15) * 4 + 1]}\n")
"""


class Egress:
    def __init__(self, host: scale.Host) -> None:
        self.proc = host.popen(
            [sys.executable, "-c", EGRESS], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("egress capture did not start")
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            self.lines.extend(self.proc.stdout)

    def stop(self) -> list[tuple[float, int]]:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._thread.join(5)
        seen = []
        for line in self.lines:
            parts = line.split()
            if len(parts) == 2:
                seen.append((float(parts[0]), int(parts[1])))
        return sorted(seen)


def threads_of(pids: Sequence[int]) -> list[int]:
    return [int(t) for p in pids for t in os.listdir(f"/proc/{p}/task")]


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@contextlib.contextmanager
def stopped(pids: Sequence[int]) -> Iterator[None]:
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)


@dataclass
class Report:
    impl: str
    adverts: int
    jitter: list[float]  # |interval - advert interval| per VRID, ms
    groups: int
    start: list[float]  # burst start lateness, ms
    gaps: list[float]  # longest gap inside each burst of 2 or more, ms
    after: collections.Counter[int]  # burst position the longest gap (> 1 ms) followed


def analyse(impl: str, seen: list[tuple[float, int]], interval: float) -> Report:
    last: dict[int, float] = {}
    intervals = []
    for ts, vrid in seen:
        if vrid in last:
            intervals.append(ts - last[vrid])
        last[vrid] = ts
    if not intervals:
        raise RuntimeError(f"{impl}: no two adverts of one VRID captured on n1's eth0")
    jitter = [abs(i - interval) * 1e3 for i in intervals]
    if abs(statistics.median(intervals) - interval) > 50e-6:
        # keepalived's adverts drift (its median interval is 100.2-100.4 ms at 0.1 s): their
        # phases do not stay put, so there are no burst groups to speak of.
        return Report(impl, len(seen), jitter, 0, [], [], collections.Counter())
    period = interval
    phases: dict[int, list[float]] = collections.defaultdict(list)
    for ts, vrid in seen:
        phases[vrid].append(ts % period)
    # A VRID's usual phase: its 1st percentile (a phase near the wrap would need care; the
    # senders here wake at fixed offsets well inside the period, and a late advert moves on).
    usual = {vrid: scale.pct(p, 0.01) for vrid, p in phases.items()}
    groups: list[list[int]] = []
    for vrid in sorted(usual, key=usual.__getitem__):
        if groups and usual[vrid] - usual[groups[-1][0]] < 0.001:
            groups[-1].append(vrid)
        else:
            groups.append([vrid])
    group_of = {vrid: i for i, g in enumerate(groups) for vrid in g}
    bursts: dict[tuple[int, int], list[float]] = collections.defaultdict(list)
    for ts, vrid in seen:
        g = group_of[vrid]
        bursts[(g, round((ts - usual[groups[g][0]]) / period))].append(ts)
    start, gaps, after = [], [], collections.Counter[int]()
    for (g, cycle), times in bursts.items():
        times.sort()
        start.append((times[0] - usual[groups[g][0]] - cycle * period) * 1e3)
        if len(times) > 1:
            between = [(b - a) * 1e3 for a, b in itertools.pairwise(times)]
            longest = max(between)
            gaps.append(longest)
            if longest > 1.0:
                after[between.index(longest)] += 1
    return Report(impl, len(seen), jitter, len(groups), start, gaps, after)


def measure(impl: str, args: argparse.Namespace) -> Report:
    with scale.pair_of(impl, args.count, args.interval) as (n1, n2, _client):
        egress = Egress(n1.host)
        observers = [egress.proc.pid]
        if args.nice_observers:
            for pid in observers:
                os.setpriority(os.PRIO_PROCESS, pid, 19)
        if args.pin:
            for tid in threads_of(n1.pids()):
                os.sched_setaffinity(tid, {0})
            for tid in threads_of([*n2.pids(), *observers]):
                os.sched_setaffinity(tid, {1})
        frozen = n2.pids() if args.stop_backup else []
        before = set(children(os.getpid()))
        with stopped(frozen), scale.cpu_hog(None if args.hog == "none" else args.hog):
            if args.pin:  # and one hog on each CPU
                for cpu, pid in enumerate(sorted(set(children(os.getpid())) - before)):
                    os.sched_setaffinity(pid, {cpu % (os.cpu_count() or 1)})
            time.sleep(1.0)
            t0 = time.time()
            time.sleep(args.seconds)
            t1 = time.time()
        time.sleep(0.5)
        seen = [(ts, vrid) for ts, vrid in egress.stop() if t0 <= ts <= t1]
        if not n1.alive():
            raise RuntimeError(f"{impl} on n1 exited during the measurement")
    return analyse(impl, seen, args.interval)


def quantiles(values: Sequence[float], ps: Sequence[float]) -> str:
    return " / ".join(f"{scale.pct(values, p):.2f}" for p in ps)


def table(reports: list[Report]) -> str:
    rows = [
        "| impl | adverts | jitter p50 / p99 / max ms | burst groups | burst start late p50 / p90"
        " / p99 ms | longest gap in a burst p50 / p90 / p99 ms | bursts with a gap > 1 ms |"
        " ... right after the first advert |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        cells = [
            r.impl,
            str(r.adverts),
            f"{quantiles(r.jitter, (0.5, 0.99))} / {max(r.jitter):.2f}",
        ]
        if not r.groups:
            cells += ["drifting phases", "-", "-", "-", "-"]
        else:
            cells += [
                str(r.groups),
                quantiles(r.start, (0.5, 0.9, 0.99)),
                quantiles(r.gaps, (0.5, 0.9, 0.99)) if r.gaps else "-",
                f"{sum(r.after.values())} of {len(r.gaps)}",
                str(r.after[0]),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="vipd,keepalived")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--hog", choices=("python", "stress-ng", "none"), default="python")
    parser.add_argument("--stop-backup", action="store_true")
    parser.add_argument("--nice-observers", action="store_true")
    parser.add_argument("--pin", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs two CPUs")
    reports = []
    for impl in args.impls.split(","):
        if impl not in scale.KNOWN_IMPLS:
            parser.error(f"--impls: each of {', '.join(scale.KNOWN_IMPLS)}")
        reports.append(measure(impl, args))
        print(f"{impl}: done", flush=True)
    print()
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
