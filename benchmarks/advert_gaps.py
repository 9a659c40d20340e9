"""Where a master's advert gaps come from: run one pair (benchmarks/scale.py's lab) under the CPU
hog, watch the master's threads, and for every gap of more than 150 ms between two adverts of
one VRID on the wire, say what the daemon's threads did meanwhile.

Run as root::

    python benchmarks/advert_gaps.py --impl vipd-rt --seconds 600

A monitor thread (SCHED_FIFO 5, so the hog cannot delay it) reads the event loop thread's state,
CPU and /proc/.../schedstat (time run, time waited runnable) every 5 ms, and each CPU's steal
time (time the hypervisor ran something else while this virtual CPU had work). A loop that
waited runnable through a gap was starved; one that slept through it while its CPU's steal
time grew by as much was waiting for a timer interrupt on a virtual CPU the host had
descheduled (docs/chaos.md finding 5).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # benchmarks/ is not a package

GAP = 0.15


@dataclass
class Sample:
    at: float
    threads: dict[int, tuple[str, int, int, int]]  # tid -> (state, run ns, wait ns, CPU)
    steal: tuple[int, ...]  # per CPU, in clock ticks


def monitor(pid: int, samples: list[Sample], stop: threading.Event) -> None:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    while not stop.is_set():
        threads = {}
        t = time.time()
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run, wait, _ = map(int, f.read().split())
                threads[int(tid)] = (fields[0], run, wait, int(fields[36]))
        except FileNotFoundError:
            pass
        with open("/proc/stat") as f:
            steal = tuple(int(line.split()[8]) for line in f if re.match(r"cpu\d", line))
        samples.append(Sample(t, threads, steal))
        time.sleep(0.005)


def gaps(seen: list[tuple[float, str, int]]) -> list[tuple[float, float, int]]:
    """Gaps over GAP s between adverts of one VRID from the master, overlapping ones merged:
    (start, end, VRIDs)."""
    last: dict[int, float] = {}
    found = []
    for ts, src, vrid in seen:
        if src == scale.MASTER_IP:
            if vrid in last and ts - last[vrid] > GAP:
                found.append((last[vrid], ts))
            last[vrid] = ts
    merged: list[tuple[float, float, int]] = []
    for a, b in sorted(found):
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]), merged[-1][2] + 1)
        else:
            merged.append((a, b, 1))
    return merged


def describe(a: float, b: float, loop_tid: int, samples: list[Sample]) -> str:
    """What the monitor saw from just before the last advert ahead of the gap to just after the
    first one behind it: the event loop thread's CPU and state, how long it ran and waited
    runnable, its longest stretch asleep, and the time the host stole from each CPU."""
    inside = [s for s in samples if a - 0.02 <= s.at <= b + 0.02 and loop_tid in s.threads]
    if len(inside) < 2:
        return "no samples"
    first, last = inside[0], inside[-1]
    longest = max(y.at - x.at for x, y in itertools.pairwise(inside))
    _, run, wait, _ = first.threads[loop_tid]
    ran = (last.threads[loop_tid][1] - run) / 1e6
    waited = (last.threads[loop_tid][2] - wait) / 1e6
    cpus = sorted({s.threads[loop_tid][3] for s in inside})
    asleep, since = 0.0, None
    for s in inside:
        if s.threads[loop_tid][0] == "S":
            since = s.at if since is None else since
            asleep = max(asleep, s.at - since)
        else:
            since = None
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    stolen = ", ".join(
        f"CPU {cpu} {(y - x) * tick:.0f} ms"
        for cpu, (x, y) in enumerate(zip(first.steal, last.steal, strict=True))
    )
    return (
        f"loop thread on CPU {'/'.join(map(str, cpus))}, ran {ran:.1f} ms, waited runnable "
        f"{waited:.1f} ms, longest asleep {asleep * 1000:.0f} ms; "
        f"stolen by the host: {stolen}; monitor's longest pause {longest * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", default="vipd-rt", choices=("vipd", "vipd-rt"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    samples: list[Sample] = []
    stop = threading.Event()
    with scale.pair_of(args.impl, args.count, args.interval) as (n1, n2, client):
        assert n1.proc is not None
        loop_tid = n1.proc.pid  # vipd's event loop runs on its main thread
        sniffer = scale.LiveSniffer(client)
        watch = threading.Thread(target=monitor, args=(n1.proc.pid, samples, stop), daemon=True)
        watch.start()
        base = n2.became_master()
        with scale.cpu_hog("python"):
            time.sleep(args.seconds)
        stop.set()
        watch.join()
        seen = sniffer.stop()
        spurious = n2.became_master() - base
        drops = sum(1 for line in n1.log().splitlines() if "realtime-dropped" in line)
    found = gaps(seen)
    print(
        f"{args.impl}, {args.count} instances at {args.interval:g} s, {args.seconds:g} s under "
        f"the hog: {len(found)} gaps over {GAP * 1000:.0f} ms, backup became master "
        f"{spurious} times, realtime dropped {drops} times"
    )
    if len(samples) > 1:
        tick_s = 1 / os.sysconf("SC_CLK_TCK")
        pairs = zip(samples[0].steal, samples[-1].steal, strict=True)
        print("stolen by the host: " + ", ".join(f"{(y - x) * tick_s:.1f} s" for x, y in pairs))
    for a, b, vrids in found:
        print(f"- +{(b - a) * 1000:.0f} ms ({vrids} VRIDs): {describe(a, b, loop_tid, samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
