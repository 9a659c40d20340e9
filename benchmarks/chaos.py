"""Chaos runner: a seeded random schedule of faults against a fenced vipd pair, judged by an
invariant checker that samples every 20 ms. Exits non-zero on a violated invariant and prints
the command that replays the run.

Run as root::

    python benchmarks/chaos.py --seed 7 --duration 180 [--interval 0.1] [--witness embedded]
    python benchmarks/chaos.py --seed 7 --soak 1800          # one pair, 30 min, fd/RSS sampled

The lab (vipd.lab): a bridge namespace, nodes n1 (priority 150) and n2 (100), a witness host w
(the embedded ``vipd witness``, or a real etcd), a client whose neighbour entries stay REACHABLE
for 4 hours and that opens a TCP connection to the VIP every 10 ms. Faults, one at a time with a
recovery gap after each (``vipd.lab.chaos.FAULT_KINDS``): master kill (SIGKILL + link cut, then
restore and restart), master freeze (SIGSTOP + link cut, then resume), node-to-node partition,
witness SIGKILL / SIGSTOP / restart, master cut from the witness, 30 % loss on one node's link,
20-100 ms delay each way on one node's link (a userspace relay: this kernel has no sch_netem, see
docs/chaos.md), daemon restart (SIGTERM, then start).

Invariants (docs/chaos.md has the bounds): no two connected holders ever (S1); every client
outage and every stale-ARP stretch within the bound of the fault it happened in; no VIP moves
beyond what the fault explains (flaps); no VIP left on any interface once all daemons stopped.

``--soak S`` runs the same pair for S seconds with only the faults that keep the daemon
processes alive (no kill, no restart), and samples each daemon's open file descriptors
(/proc/PID/fd) and VmRSS every ``--sample-every`` seconds: flat means no leak; the least-squares
slope is reported per hour.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipd.lab.chaos import (
    DEFAULT_KINDS,
    FAULT_KINDS,
    SOAK_KINDS,
    ChaosReport,
    ChaosRunner,
    ProcessSampler,
    make_schedule,
    start_fenced_pair,
    timing_for,
)
from vipd.lab.netns import Lab
from vipd.lab.pair import Pair, logs


def pids(pair: Pair) -> dict[str, int]:
    found = {
        name: node.proc.pid
        for name, node in pair.nodes.items()
        if node.proc is not None and node.proc.poll() is None
    }
    if pair.witness_proc is not None and pair.witness_proc.poll() is None:
        found["witness"] = pair.witness_proc.pid
    return found


def soak_table(sampler: ProcessSampler) -> tuple[str, list[str]]:
    rows = [
        "| process | samples | span (min) | fds first / last / max | fds slope (/h) "
        "| RSS MB first / last / max | RSS slope (MB/h) |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for (name, pid), series in sorted(sampler.series().items()):
        if len(series) < 2:
            continue
        span = (series[-1].t - series[0].t) / 60
        fds = [s.fds for s in series]
        rss = [s.rss_kb / 1024 for s in series]
        fd_slope = sampler.slope_per_hour([(s.t, s.fds) for s in series])
        rss_slope = sampler.slope_per_hour([(s.t, s.rss_kb / 1024) for s in series])
        rows.append(
            f"| {name} (pid {pid}) | {len(series)} | {span:.1f} | {fds[0]} / {fds[-1]} / "
            f"{max(fds)} | {fd_slope:+.2f} | {rss[0]:.1f} / {rss[-1]:.1f} / {max(rss):.1f} "
            f"| {rss_slope:+.2f} |"
        )
        verdicts.append(
            f"{name}: fds {fds[0]}->{fds[-1]} (max {max(fds)}), RSS {rss[0]:.1f}->{rss[-1]:.1f} MB"
            f" (slope {rss_slope:+.2f} MB/h)"
        )
    return "\n".join(rows), verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of faults")
    parser.add_argument("--interval", type=float, default=0.1, help="advert interval (s)")
    parser.add_argument("--witness", choices=("embedded", "etcd"), default="embedded")
    parser.add_argument(
        "--faults",
        default=None,
        help=f"comma-separated, from {','.join(FAULT_KINDS)} (default: all but crash)",
    )
    parser.add_argument("--soak", type=float, default=None, metavar="S", help="soak S seconds")
    parser.add_argument("--sample-every", type=float, default=5.0, help="soak: fd/RSS period")
    parser.add_argument(
        "--only-faults",
        default=None,
        metavar="N:M",
        help="replay only faults N..M-1 (0-based, as numbered from 1 in the output minus 1) of "
        "the seed's schedule",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    kinds: tuple[str, ...] = DEFAULT_KINDS
    if args.faults:
        kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    duration = args.duration
    if args.soak is not None:
        kinds = tuple(k for k in kinds if k in SOAK_KINDS)
        duration = args.soak
    replay = shlex.join(
        [
            "python",
            "benchmarks/chaos.py",
            "--seed",
            str(seed),
            *(["--soak", f"{args.soak:g}"] if args.soak is not None else []),
            *(["--duration", f"{args.duration:g}"] if args.soak is None else []),
            "--interval",
            f"{args.interval:g}",
            "--witness",
            args.witness,
            *(["--faults", args.faults] if args.faults else []),
            *(["--only-faults", args.only_faults] if args.only_faults else []),
        ]
    )
    print(f"chaos: seed {seed}; replay with: {replay}", flush=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vipd-chaos-") as tmp, Lab() as lab:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        pair = start_fenced_pair(lab, workdir, args.interval, args.witness)
        sampler: ProcessSampler | None = None
        try:
            timing = timing_for(pair)
            schedule = make_schedule(seed, duration, timing, kinds, args.witness)
            if args.only_faults:
                first, _, last = args.only_faults.partition(":")
                schedule = schedule[int(first or 0) : int(last) if last else None]
            print(
                f"advert {timing.advert_interval:g} s, lease TTL {timing.lease_ttl:g} s; bounds:"
                f" takeover {timing.takeover * 1000:.0f} ms, handover"
                f" {timing.handover * 1000:.0f} ms; {len(schedule)} faults",
                flush=True,
            )
            if args.soak is not None:
                sampler = ProcessSampler(lambda: pids(pair), args.sample_every)
            runner = ChaosRunner(pair, schedule, timing, seed, say=lambda s: print(s, flush=True))

            def progress(i: int, fault: Any) -> None:
                """Soak: the latest fd/RSS sample of each process before every fault."""
                if sampler is None or not sampler.samples:
                    return
                latest = {s.name: s for s in sampler.samples}
                shown = ", ".join(
                    f"{n} fds {s.fds} RSS {s.rss_kb / 1024:.1f} MB" for n, s in latest.items()
                )
                print(f"  soak: {shown}", flush=True)

            report: ChaosReport = runner.run(on_fault=progress)
            if not report.ok and args.keep is None:
                # The work directory goes with the lab: keep what explains the failure.
                kept = Path(tempfile.mkdtemp(prefix=f"vipd-chaos-{seed}-"))
                for path in workdir.iterdir():
                    if path.is_file() and path.suffix in (".log", ".toml"):
                        shutil.copy2(path, kept / path.name)
                print(f"logs of the failed run kept in {kept}", flush=True)
        except BaseException:
            print(logs(list(pair.nodes.values())), file=sys.stderr)
            raise
        finally:
            if sampler is not None:
                sampler.stop()
            pair.close()
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    print()
    for node, values in sorted(report.counters.items()):
        shown = ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
        print(f"{node} counters at the end: {shown}")
    print()
    print(report.summary())
    print()
    print(report.outage_table())
    soak_rows: list[str] = []
    if sampler is not None:
        table, verdicts = soak_table(sampler)
        soak_rows = verdicts
        print()
        print(
            f"soak: {report.duration / 60:.1f} min of faults, fd/RSS every {args.sample_every:g} s"
        )
        print(table)
    print()
    print(
        f"machine: {os.cpu_count()} CPUs, kernel {platform.release()}, python "
        f"{platform.python_version()}; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"run took {elapsed / 60:.1f} min"
    )
    if args.json is not None:
        data = report.to_json()
        data.update(
            command=replay,
            elapsed=elapsed,
            load_before=load_before,
            load_after=load_after,
            soak=soak_rows,
        )
        if sampler is not None:
            data["proc_samples"] = [vars(s) for s in sampler.samples]
        args.json.write_text(json.dumps(data, indent=1, default=str))
    if not report.ok:
        print(f"\nFAILED: {len(report.violations)} violated invariant(s); replay: {replay}")
        return 1
    print(f"\nOK: every invariant held (seed {seed})")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
