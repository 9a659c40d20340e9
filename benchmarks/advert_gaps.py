"""Where a master's advert gaps come from: run one pair (benchmarks/scale.py's lab) under the CPU
hog, watch the master's threads, and for every gap of more than 150 ms between two adverts of
one VRID on the wire, say what the daemon's threads did meanwhile.

Run as root::

    python benchmarks/advert_gaps.py --impl vipd-rt --seconds 600

A monitor thread (SCHED_FIFO 5, so the hog cannot delay it) reads each thread's state and
/proc/.../schedstat (time run, time waited runnable) every 5 ms, and the host's steal time.
A gap while the loop thread ran and slept as usual, without waiting and without steal, means
the adverts were late after vipd handed them to the kernel (docs/chaos.md finding 5).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # benchmarks/ is not a package

GAP = 0.15
Snapshot = dict[str, tuple[str, int, int]]  # tid -> (state, run ns, wait ns); "steal" too


def monitor(pid: int, samples: list[tuple[float, Snapshot]], stop: threading.Event) -> None:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    tick_ns = 10**9 // os.sysconf("SC_CLK_TCK")
    while not stop.is_set():
        snap: Snapshot = {}
        t = time.time()
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run, wait, _ = map(int, f.read().split())
                snap[tid] = (state, run, wait)
        except FileNotFoundError:
            pass
        with open("/proc/stat") as f:
            snap["steal"] = ("-", int(f.readline().split()[8]) * tick_ns, 0)
        samples.append((t, snap))
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


def describe(a: float, b: float, samples: list[tuple[float, Snapshot]]) -> str:
    inside = [(t, s) for t, s in samples if a - 0.02 <= t <= b + 0.02]
    if len(inside) < 2:
        return "no samples"
    first, last = inside[0][1], inside[-1][1]
    longest = max(inside[i + 1][0] - inside[i][0] for i in range(len(inside) - 1))
    parts = [f"monitor's longest pause {longest * 1000:.0f} ms"]
    for tid in sorted(set(first) & set(last)):
        states = "".join(sorted({s[tid][0] for _, s in inside if tid in s}))
        run = (last[tid][1] - first[tid][1]) / 1e6
        if tid == "steal":
            parts.append(f"steal +{run:.0f} ms")
        else:
            wait = (last[tid][2] - first[tid][2]) / 1e6
            parts.append(f"thread {tid}: states {states}, ran {run:.1f} ms, waited {wait:.1f} ms")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", default="vipd-rt", choices=("vipd", "vipd-rt"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    samples: list[tuple[float, Snapshot]] = []
    stop = threading.Event()
    with scale.pair_of(args.impl, args.count, args.interval) as (n1, n2, client):
        assert n1.proc is not None
        sniffer = scale.Sniffer(client)
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
    for a, b, vrids in found:
        print(f"- +{(b - a) * 1000:.0f} ms ({vrids} VRIDs): {describe(a, b, samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
