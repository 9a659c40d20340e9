"""What fencing costs at scale: a fenced pair with N instances, each with its own lease on the
embedded witness, at advert 0.1 s; CPU of the master, the backup and the witness, and whether
the master keeps every lease while nothing is wrong. keepalived has no witness, so there is no
column for it.

Run as root::

    python benchmarks/fenced_scale.py [--counts 1,50] [--rounds 3] [--seconds 20]

Topology (vipd.lab.pair): n1 (priority 150) and n2 (priority 100) on one bridge, the witness
(``vipd witness``, one ``--lease`` per instance) on host w; instance k has VRID 100+k and VIP
198.51.100.k (the first one the pair's own). Per round: a fresh lab, n1 started and master of
every instance, then n2, 5 s to settle, then ``--seconds`` of measurement: utime + stime of
each process (/proc/PID/stat, % of one core); n1's lease losses (``lease:lost-*`` counters)
and transitions in that window; how many instances n1 holds at its end. Each fenced master
renews its lease every advert interval and its VIPs' kernel lifetimes (fencing.md S4) every
0.7 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import med  # benchmarks/ is not a package

from vipd.lab.netns import Lab
from vipd.lab.pair import WITNESS_PORT, WITNESS_V4, Node, Pair, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    count: int
    cpu: dict[str, float]  # process -> % of a core
    held: int  # instances n1 is master of at the end
    lost: int  # n1's lease losses in the window
    transitions: int  # n1's transitions in the window


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def totals(node: Node) -> tuple[int, int]:
    """n1's lease losses and transitions so far, over its instances."""
    lost = transitions = 0
    for inst in node.status()["instances"]:
        counters: dict[str, int] = inst["counters"]
        lost += sum(v for k, v in counters.items() if k.startswith("lease:lost-"))
        transitions += counters.get("transitions", 0)
    return lost, transitions


def start_witness(pair: Pair, names: list[str]) -> Any:
    host = pair.witness_host
    assert host is not None
    leases = [arg for name in names for arg in ("--lease", name)]
    with (pair.workdir / "witness.log").open("ab") as log:
        proc = host.python(
            "vipd",
            "witness",
            "--listen",
            f"{WITNESS_V4}:{WITNESS_PORT}",
            "--state",
            str(pair.workdir / "witness.state"),
            "--key-file",
            str(pair.key_path),
            *leases,
            stdout=log,
            stderr=log,
        )
    pair.witness_proc = proc
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"witness exited: {pair.witness_log()[-2000:]}")
    return proc


@contextlib.contextmanager
def settled_pair(count: int, interval: float) -> Iterator[tuple[Pair, Any]]:
    """A fresh lab with the fenced pair and its witness: n1 master of every instance, n2
    started and 5 s settled. Yields the pair and the witness process."""
    extra = [
        {"name": f"vi{k}", "vrid": 100 + k, "vips": [f"198.51.100.{k}/24"]} for k in range(1, count)
    ]
    with tempfile.TemporaryDirectory(prefix="fenced-") as tmp, Lab() as lab:
        pair = Pair(
            lab, workdir=Path(tmp), advert_interval=interval, witness="embedded", instances=extra
        )
        try:
            witness = start_witness(pair, ["vip", *(e["name"] for e in extra)])
            for node in pair.nodes.values():
                pair.write_config(node)
                text = node.config_path.read_text()  # the lab logs at debug: not measured here
                info = text.replace('log_level = "debug"', 'log_level = "info"')
                node.config_path.write_text(info)
            n1 = pair.nodes["n1"]
            pair.start("n1")
            wait_until(
                lambda: all(i["state"] == "master" for i in n1.status()["instances"]),
                60,
                what=f"n1 to be master of {count}",
            )
            pair.start("n2")
            time.sleep(5.0)
            yield pair, witness
        finally:
            pair.close()


def one_round(count: int, interval: float, seconds: float) -> Round:
    with settled_pair(count, interval) as (pair, witness):
        n1 = pair.nodes["n1"]
        assert n1.proc is not None and pair.nodes["n2"].proc is not None
        pids = {"n1": n1.proc.pid, "n2": pair.nodes["n2"].proc.pid, "witness": witness.pid}
        before = {k: ticks(p) for k, p in pids.items()}
        lost0, trans0 = totals(n1)
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        after = {k: ticks(p) for k, p in pids.items()}
        lost1, trans1 = totals(n1)
        held = sum(1 for i in n1.status()["instances"] if i["state"] == "master")
        cpu = {k: 100 * (after[k] - before[k]) / CLK_TCK / elapsed for k in pids}
        return Round(count, cpu, held, lost1 - lost0, trans1 - trans0)


def table(rounds: list[Round]) -> str:
    lines = [
        "| instances | rounds | CPU n1 (master) % | CPU n2 (backup) % | CPU witness % "
        "| n1 holds at the end (fewest) | n1 lease losses in the windows | n1 transitions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count in sorted({r.count for r in rounds}):
        rs = [r for r in rounds if r.count == count]
        cpu = {k: med([r.cpu[k] for r in rs], "{:.1f}") for k in ("n1", "n2", "witness")}
        lines.append(
            f"| {count} | {len(rs)} | {cpu['n1']} | {cpu['n2']} | {cpu['witness']} "
            f"| {min(r.held for r in rs)} of {count} | {sum(r.lost for r in rs)} "
            f"| {sum(r.transitions for r in rs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,50", help="comma-separated instance counts")
    parser.add_argument("--interval", type=float, default=0.1, help="advert interval (s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per round")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    counts = [int(c) for c in args.counts.split(",") if c]
    if any(not 1 <= c <= 254 for c in counts):
        parser.error("--counts: each 1..254 (one VIP per instance in 198.51.100.0/24)")
    rounds = []
    for n in range(args.rounds):
        for count in counts:
            r = one_round(count, args.interval, args.seconds)
            rounds.append(r)
            cpu = ", ".join(f"{k} {v:.1f} %" for k, v in r.cpu.items())
            print(
                f"round {n}, {count} instances: {cpu}; n1 holds {r.held}, "
                f"{r.lost} lease losses, {r.transitions} transitions",
                flush=True,
            )
    print()
    print(f"`{shlex.join(['python', 'benchmarks/fenced_scale.py', *sys.argv[1:]])}`")
    print(f"advert {args.interval} s, {args.seconds:.0f} s windows")
    print()
    print(table(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
