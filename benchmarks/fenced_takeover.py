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
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fenced_scale import settled_pair  # benchmarks/ is not a package

from vipd.lab.pair import Pair


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


def witness_counters(pair: Pair, witness: Any) -> Counter[str]:
    """The witness's counters now: SIGUSR1 makes it log them as a ``stats`` record."""
    before = len(events(pair.witness_log(), "stats", 0.0))
    witness.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        stats = events(pair.witness_log(), "stats", 0.0)
        if len(stats) > before:
            counters: dict[str, int] = stats[-1][1]["counters"]  # type: ignore[assignment]
            return Counter(counters)
        time.sleep(0.05)
    raise RuntimeError("the witness logged no stats after SIGUSR1")


def acquires_sent(status: dict[str, Any]) -> int:
    return sum(i["counters"].get("lease:acquire-sent", 0) for i in status["instances"])


@dataclass
class Round:
    granted: list[float]  # ms after the crash, sorted
    promoted: list[float]
    acquires_sent: int  # acquire requests the backup sent (first tries and retransmissions)
    acquires_seen: int  # acquire requests the witness took (authenticated and fresh)


def one_round(count: int, interval: float) -> Round:
    with settled_pair(count, interval) as (pair, witness):
        n2 = pair.nodes["n2"]
        acquires0 = acquires_sent(n2.status())
        seen0 = witness_counters(pair, witness)["request.acquire"]
        crash = time.time()
        pair.crash("n1")
        time.sleep(3.0 + count * 0.05)
        status = n2.status()
        if not all(i["state"] == "master" for i in status["instances"]):
            raise RuntimeError(f"n2 is not master of all {count} instances")
        acquires = acquires_sent(status) - acquires0
        seen = witness_counters(pair, witness)["request.acquire"] - seen0  # n1 is dead
        promoted = [
            ms for ms, rec in events(n2.log(), "transition", crash) if rec.get("new") == "master"
        ]
        granted = [
            ms
            for ms, rec in events(pair.witness_log(), "lease-granted", crash)
            if str(rec.get("detail", "")).startswith("new epoch")
        ]
        return Round(sorted(granted), sorted(promoted), acquires, seen)


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
        " / last ms | acquires sent by the backup | acquires the witness took |"
        "\n|---|---|---|---|---|"
    )
    for r in range(1, args.rounds + 1):
        got = one_round(args.count, args.interval)
        print(
            f"| {r} | {len(got.granted)}: {spread(got.granted)} "
            f"| {len(got.promoted)}: {spread(got.promoted)} | {got.acquires_sent} "
            f"| {got.acquires_seen} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
