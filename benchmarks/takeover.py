"""Mass takeover under load, vipd beside keepalived: the master of N instances is killed while a
CPU hog runs and the backup's neighbour table holds M entries (a load balancer talks to many
backends); how soon does the backup advertise every VRID, and how regular are its adverts
while it takes over and announces.

Run as root::

    python benchmarks/takeover.py [--impls vipd,keepalived] [--neighbours 1000] [--rounds 3]

Topology and daemons as in benchmarks/scale.py (n1 priority 150 master, n2 priority 100
backup, a client that receives every advert with its kernel receive time). Per round: a fresh
pair, M permanent IPv6 neighbour entries on n2's eth0, the hog (one busy process per CPU), then
SIGKILL for all of n1's processes. From the client's capture: when each VRID's first advert
from n2 arrived after the kill (Master_Down_Interval is 361 ms at priority 100 and 0.1 s, less
however long before the kill n1's last advert went out), and the intervals between n2's later
adverts of each VRID during the next ``--after`` seconds, in which n2 adds the VIPs and makes
its three announcements (and vipd its neighbour flushes: docs/chaos.md finding 10).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # benchmarks/ is not a package

from vipd.lab.netns import Host

BACKUP_IP = "192.0.2.12"


@dataclass
class Round:
    impl: str
    vrids: int  # VRIDs n2 advertised after the kill
    last_first: float  # s from the kill to the last VRID's first advert
    gap_p99: float
    gap_max: float
    gaps_over: int  # intervals over 150 ms


def add_neighbours(host: Host, count: int) -> None:
    lines = [
        f"neigh add 2001:db8::1:{i:x} lladdr 02:00:00:00:{i >> 8:02x}:{i & 255:02x} "
        "dev eth0 nud permanent\n"
        for i in range(1, count + 1)
    ]
    proc = host.popen(["ip", "-batch", "-"], stdin=subprocess.PIPE, text=True)
    proc.communicate("".join(lines), timeout=60)
    if proc.returncode:
        raise RuntimeError(f"adding {count} neighbours on {host.name} failed")


def one_round(impl: str, count: int, neighbours: int, after: float) -> Round:
    with scale.pair_of(impl, count, 0.1) as (n1, n2, client):
        if neighbours:
            add_neighbours(n2.host, neighbours)
        sniffer = scale.LiveSniffer(client)
        with scale.cpu_hog("python"):
            time.sleep(2.0)  # the hog at full speed
            killed = time.time()
            for pid in n1.pids():
                os.kill(pid, signal.SIGKILL)
            time.sleep(after)
        seen = sniffer.stop()
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    intervals = []
    for ts, src, vrid in sorted(seen):
        if src != BACKUP_IP or ts <= killed or ts > killed + after:
            continue
        if vrid in last:
            intervals.append(ts - last[vrid])
        else:
            first[vrid] = ts - killed
        last[vrid] = ts
    intervals.sort()
    return Round(
        impl,
        len(first),
        max(first.values(), default=float("nan")),
        intervals[int(len(intervals) * 0.99)] if intervals else float("nan"),
        intervals[-1] if intervals else float("nan"),
        sum(1 for i in intervals if i > 0.15),
    )


def spread(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f})"


def table(rounds: list[Round], count: int) -> str:
    lines = [
        f"| implementation | rounds | VRIDs taken over (of {count}) | kill to the last VRID's "
        "first advert, ms | advert interval p99 after, ms | longest interval, ms | "
        "intervals over 150 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for impl in dict.fromkeys(r.impl for r in rounds):
        mine = [r for r in rounds if r.impl == impl]
        lines.append(
            f"| {impl} | {len(mine)} | {min(r.vrids for r in mine)} | "
            f"{spread([r.last_first for r in mine])} | {spread([r.gap_p99 for r in mine])} | "
            f"{spread([r.gap_max for r in mine])} | {sum(r.gaps_over for r in mine)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="vipd,keepalived")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--neighbours", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--after", type=float, default=8.0, help="seconds watched after the kill")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    impls = [i for i in args.impls.split(",") if i]
    if set(impls) - set(scale.KNOWN_IMPLS):
        parser.error(f"--impls: each of {', '.join(scale.KNOWN_IMPLS)}")
    rounds = []
    for n in range(args.rounds):
        for impl in impls:  # interleaved, so a busy phase of the machine hits both
            r = one_round(impl, args.count, args.neighbours, args.after)
            rounds.append(r)
            print(
                f"round {n} {impl}: {r.vrids} VRIDs, last first advert "
                f"{r.last_first * 1000:.0f} ms, interval p99 {r.gap_p99 * 1000:.0f} max "
                f"{r.gap_max * 1000:.0f} ms, {r.gaps_over} over 150 ms",
                flush=True,
            )
    print()
    print(f"`{shlex.join(['python', 'benchmarks/takeover.py', *sys.argv[1:]])}`")
    print(f"{args.count} instances at 0.1 s, {args.neighbours} neighbours on the backup, the hog")
    print()
    print(table(rounds, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
