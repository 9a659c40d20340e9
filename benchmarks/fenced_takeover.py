"""A mass takeover with fencing: a fenced pair with N instances, one lease each on the embedded
witness; the master crashes (SIGKILL and its switch port down) and the backup must win every
lease before it promotes. When did the witness grant each lease, and when did the backup
promote each instance? keepalived has no witness, so there is no column for it.

Run as root::

    python benchmarks/fenced_takeover.py [--count 50] [--interval 0.1] [--rounds 2]

The lab is benchmarks/fenced_scale.py's. Nothing polls the backup while it takes over (a
status query of 50 instances costs its loop milliseconds): the times come from the backup's
and the witness's logs afterwards, as milliseconds after the crash.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fenced_scale import settled_pair  # benchmarks/ is not a package


def events(log: str, name: str, since: float) -> list[tuple[float, dict[str, object]]]:
    """(ms after ``since``, record) of each JSON log record of event ``name`` after it."""
    out = []
    for line in log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") != name:
            continue
        at = datetime.fromisoformat(str(rec["timestamp"]).replace("Z", "+00:00")).timestamp()
        if at >= since:
            out.append(((at - since) * 1e3, rec))
    return out


def one_round(count: int, interval: float) -> tuple[list[float], list[float]]:
    with settled_pair(count, interval) as (pair, _witness):
        n2 = pair.nodes["n2"]
        crash = time.time()
        pair.crash("n1")
        time.sleep(3.0 + count * 0.05)
        if not all(i["state"] == "master" for i in n2.status()["instances"]):
            raise RuntimeError(f"n2 is not master of all {count} instances")
        promoted = [
            ms for ms, rec in events(n2.log(), "transition", crash) if rec.get("new") == "master"
        ]
        granted = [
            ms
            for ms, rec in events(pair.witness_log(), "lease-granted", crash)
            if str(rec.get("detail", "")).startswith("new epoch")
        ]
        return sorted(granted), sorted(promoted)


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{values[0]:.0f} / {statistics.median(values):.0f} / {values[-1]:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        "| round | witness grants: first / median / last ms | backup promotions: first / median"
        " / last ms |\n|---|---|---|"
    )
    for r in range(1, args.rounds + 1):
        granted, promoted = one_round(args.count, args.interval)
        print(f"| {r} | {len(granted)}: {spread(granted)} | {len(promoted)}: {spread(promoted)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
