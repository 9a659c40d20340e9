"""Chaos for a fenced vipd pair in the namespace lab: a seeded fault schedule, a runner that
applies it while samplers watch, and the invariant checker that judges what they saw.

Used by ``benchmarks/chaos.py`` (runs of minutes to hours, soak) and by
``tests/integration/test_chaos.py`` (a short seeded run in CI). docs/chaos.md explains every
fault, invariant and bound.

Faults are applied one at a time, each followed by a recovery gap, so that every client outage
can be charged to exactly one fault and compared with the bound that fault allows. Overlapping
faults have no bound in the spec (fencing.md: "witness down, then master dies" means no
promotion by design), so they are not drawn.

What is watched, every 20 ms (:data:`SAMPLE_INTERVAL`), by small processes inside the
namespaces (``python -m vipd.lab.chaos sample``, netlink dumps, no ``ip`` per sample):

- on each node: is the VIP on eth0 (as the kernel says);
- on the client: the MAC address its neighbour entry for the VIP holds;
- the client's TCP probe (:mod:`vipd.lab.probe`, a new connection every 10 ms).

Plus the runner's own record of which node is cut off (its switch port down), so that a VIP on
a node nobody can reach does not count as a second holder (fencing.md S1), and a stall watch
(``python -m vipd.lab.chaos stalls``, in the client's namespace): a process that sleeps 10 ms
at a time and reports every wake-up at least :data:`STALL_MIN` late, with the host's steal
time (``/proc/stat``) meanwhile. A stall of the whole host (a shared VM) holds up the daemons,
the responder and the probe alike; an outage over its bound that overlaps one is reported with
it, and still counted (docs/chaos.md finding 7).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from vipd.lab.netns import Lab
from vipd.lab.pair import Pair, wait_until
from vipd.lab.probe import ProbeLog

__all__ = [
    "DEFAULT_KINDS",
    "FAULT_KINDS",
    "SAMPLE_INTERVAL",
    "SOAK_KINDS",
    "ChaosReport",
    "ChaosRunner",
    "Fault",
    "Phase",
    "ProcessSampler",
    "Timing",
    "evaluate",
    "make_schedule",
    "start_fenced_pair",
    "timing_for",
]

SAMPLE_INTERVAL = 0.02
#: The stall watch's tick, and the lateness of a wake-up it reports as a stall of the host.
STALL_TICK = 0.01
STALL_MIN = 0.05

#: Every fault the runner knows, with its relative weight in a schedule.
FAULT_KINDS: dict[str, int] = {
    "kill": 3,  # SIGKILL the master, cut its link; later restore and restart it
    "freeze": 2,  # SIGSTOP the master, cut its link; later restore and SIGCONT
    "partition": 2,  # drop everything between the two nodes; both still reach all else
    "witness-down": 2,  # SIGKILL the witness; later start it again (same state)
    "witness-freeze": 1,  # SIGSTOP the witness; later SIGCONT
    "witness-restart": 1,  # SIGTERM the witness and start it at once
    "witness-cut": 1,  # drop everything between the master and the witness
    "loss": 2,  # 30 % loss on one node's link (both directions)
    "delay": 2,  # 20-100 ms more each way on one node's link (a userspace relay: no netem here)
    "restart": 2,  # SIGTERM a daemon (master or backup), later start it again
    # Opt-in (weight 0: drawn only when asked for by name): SIGKILL the master and leave its
    # link up. Only its VIP guard takes the VIP off in time (fencing.md S4): the address
    # lifetime, lease + 1-2 s, runs out after the backup is granted the lease.
    "crash": 0,
}
#: The kinds a default schedule draws from.
DEFAULT_KINDS = tuple(k for k, w in FAULT_KINDS.items() if w > 0)
#: For soak runs: faults that keep every daemon process alive, so leaks show in one process.
SOAK_KINDS = tuple(k for k in DEFAULT_KINDS if k not in ("kill", "restart"))

LOSS_PERCENT = 30.0


# --------------------------------------------------------------------------- timing and bounds


@dataclass(frozen=True)
class Timing:
    """The numbers every bound is built from (docs/chaos.md, "Bounds")."""

    advert_interval: float
    lease_ttl: float  # the TTL the witness applies (etcd: whole seconds, maybe raised)
    master_priority: int = 150
    backup_priority: int = 100
    witness_rtt: float = 0.02  # allowance for one witness round trip (lab: well under 1 ms)
    witness_expiry: float = 0.0  # how late the witness may notice an expiry (etcd: 0.5 s tick)
    slack: float = 0.05  # the project's goal margin (fencing.md L1: "+ 50 ms")
    probe_interval: float = 0.01  # outages are measured to one probe interval

    def master_down_interval(self, priority: int | None = None) -> float:
        """RFC 5798: 3 * Advert_Interval + Skew_Time, for a backup of ``priority``."""
        prio = self.backup_priority if priority is None else priority
        return 3 * self.advert_interval + (256 - prio) * self.advert_interval / 256

    def skew_time(self) -> float:
        return (256 - self.backup_priority) * self.advert_interval / 256

    @property
    def takeover(self) -> float:
        """Master dead or frozen, link cut (fencing.md L1). The backup's Master_Down_Timer
        fires at most one Master_Down_Interval after the master's last advert, which is before
        the fault; the master's lease runs out at the witness at most one TTL after its last
        renewal, also before the fault; a refused acquire is retried just after the
        ``remaining`` the witness reported. So the grant comes by max(MDI, TTL) after the
        fault, plus a witness round trip; then the VIP, the gratuitous ARP, and the probe's
        resolution."""
        wait = max(self.master_down_interval(), self.lease_ttl + 0.01 + self.witness_expiry)
        return wait + self.witness_rtt + self.slack + self.probe_interval

    @property
    def handover(self) -> float:
        """Planned handover (fencing.md L2): the master leaves with a priority-0 advert and a
        release (SIGTERM), or steps down for a higher-priority node that claims (preemption
        after a restart or resume). The new master waits Skew_Time, or one retry of at most a
        quarter interval, then asks the witness; allowed: one advert interval for whichever
        applies, two witness round trips (release, grant), slack and probe resolution."""
        return (
            max(self.skew_time(), self.advert_interval)
            + 2 * self.witness_rtt
            + self.witness_expiry
            + self.slack
            + self.probe_interval
        )


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Fault:
    """One fault of a schedule: what, on whom, for how long, and the quiet time after it."""

    kind: str
    target: str  # "master", "backup" or "witness"
    hold: float  # seconds between applying and reverting
    gap: float  # seconds of quiet after reverting, before the next fault
    amount: float = 0.0  # delay: seconds added each way

    def describe(self) -> str:
        extra = f", {self.amount * 1000:.0f} ms" if self.amount else ""
        return f"{self.kind}({self.target}{extra}, hold {self.hold:.1f} s, gap {self.gap:.1f} s)"


def make_schedule(
    seed: int,
    duration: float,
    timing: Timing,
    kinds: Iterable[str] = DEFAULT_KINDS,
    witness: str = "embedded",
) -> list[Fault]:
    """The faults for a run of about ``duration`` seconds, the same for the same arguments.

    Holds and gaps scale with the advert interval and the lease TTL, so every fault lasts long
    enough to matter (a freeze outlives the kernel's VIP lifetime, fencing.md S4) and every gap
    lets the pair settle (a restarted master preempts back) before the next fault.
    """
    rng = random.Random(seed)
    names = [k for k in kinds if k in FAULT_KINDS]
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown or not names:
        raise ValueError(f"unknown or no fault kinds: {sorted(unknown) or list(kinds)}")
    if witness == "etcd":
        names = [k for k in names if k != "witness-cut"] or names
    weights = [FAULT_KINDS[k] or 1 for k in names]
    mdi = timing.master_down_interval(timing.master_priority)
    settle = 2.0 + 3 * max(mdi, timing.lease_ttl)  # a restarted master is back and preempted
    faults: list[Fault] = []
    spent = 0.0
    while True:
        kind = rng.choices(names, weights)[0]
        amount = 0.0
        if kind in ("kill", "freeze"):
            # Long enough for the kernel to drop the cut-off node's VIP (S4: lease + 1-2 s)
            # before its link comes back, as in the failure matrix (8 s there).
            target = "master"
            floor = timing.lease_ttl + 3.0
            hold = rng.uniform(floor, floor + 4.0)
        elif kind == "crash":
            target = "master"
            hold = rng.uniform(0.5, 3.0)
        elif kind == "restart":
            target = rng.choice(["master", "backup"])
            hold = rng.uniform(0.2, 2.0)
        elif kind == "loss":
            target = rng.choice(["master", "backup"])
            hold = rng.uniform(5.0, 12.0)
        elif kind == "delay":
            target = rng.choice(["master", "backup"])
            hold = rng.uniform(5.0, 12.0)
            amount = round(rng.uniform(0.02, 0.1), 3)
        elif kind == "witness-restart":
            target = "witness"
            hold = 0.0
        else:
            target = "master" if kind == "witness-cut" else "witness"
            if kind == "partition":
                target = "backup"
            hold = rng.uniform(max(2.0, 2 * timing.lease_ttl), max(6.0, 5 * timing.lease_ttl))
        gap = rng.uniform(settle, settle + 2.0)
        if spent + hold + gap > duration and faults:
            return faults
        faults.append(Fault(kind, target, round(hold, 2), round(gap, 2), amount))
        spent += hold + gap


# --------------------------------------------------------------------------- phases, samples


@dataclass
class Phase:
    """From ``t`` on (time.monotonic()), until the next phase: what was done and what it allows.

    ``bound`` is the longest client outage (and stale-ARP stretch) this phase may cause; None:
    not judged (the probe's own packets cross a lossy link). ``changes`` is how many times the
    VIP may move to another node in this phase; more are flaps.
    """

    t: float
    name: str  # e.g. "kill n1", "restart n1", "steady"
    kind: str  # the fault kind, or "steady"
    bound: float | None
    changes: int = 0
    note: str = ""
    fault: int = -1  # index of the fault in the schedule this phase belongs to (-1: none)


@dataclass
class Outage:
    start: float
    end: float
    phase: str
    bound: float | None
    phase_t: float = 0.0  # when that phase started

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return self.bound is None or self.length <= self.bound


@dataclass
class ChaosReport:
    seed: int
    duration: float
    faults: list[str]
    phases: list[Phase]
    dual_holder_seconds: float
    dual_holder_windows: list[tuple[float, float, str]]  # start, length, phase
    outages: list[Outage]
    stale_arp: list[Outage]  # client's entry pointed at a node without the VIP
    flaps: list[tuple[str, int, int]]  # phase, changes seen, changes allowed
    left_behind: dict[str, list[str]]  # node -> VIPs still on it after the final stop
    violations: list[str]
    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> at the end
    samples: int = 0
    t0: float = 0.0
    stalls: list[tuple[float, float, float]] = field(default_factory=list)  # start, s, steal s

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def safety_violations(self) -> list[str]:
        """Everything but outages longer than their bound: what no machine load excuses (two
        holders, a VIP left behind, no recovery at all, flapping)."""
        return [v for v in self.violations if not v.startswith("bound:")]

    def summary(self) -> str:
        judged = [o for o in self.outages if o.bound is not None]
        worst = max((o.length / o.bound for o in judged if o.bound), default=0.0)
        lines = [
            f"seed {self.seed}: {len(self.faults)} faults in {self.duration:.0f} s, "
            f"{self.samples} samples",
            f"  dual-holder seconds: {self.dual_holder_seconds:.3f}",
            f"  client outages: {len(self.outages)} ({len(judged)} judged), worst "
            f"{worst:.0%} of its bound",
            f"  stale-ARP stretches: {len(self.stale_arp)}",
            f"  flaps: {sum(seen - allowed for _, seen, allowed in self.flaps)}",
            f"  VIPs left behind: {sum(len(v) for v in self.left_behind.values())}",
            f"  host stalls of {STALL_MIN * 1000:.0f} ms or more: {len(self.stalls)}, longest "
            f"{max((s for _, s, _ in self.stalls), default=0.0) * 1000:.0f} ms, steal in them "
            f"{sum(st for _, _, st in self.stalls) * 1000:.0f} ms",
            f"  violations: {len(self.violations)}",
        ]
        lines += [f"    - {v}" for v in self.violations]
        return "\n".join(lines)

    def outage_table(self) -> str:
        """One row per judged outage; not-judged ones (loss, delay on the holder's link) are
        summed up per phase: count and longest."""
        rows = [
            "| t (s) | phase | outage (ms) | bound (ms) | within |",
            "|---|---|---|---|---|",
        ]
        i = 0
        while i < len(self.outages):
            o = self.outages[i]
            if o.bound is None:
                j = i
                while j + 1 < len(self.outages) and self.outages[j + 1].phase_t == o.phase_t:
                    j += 1
                group = self.outages[i : j + 1]
                longest = max(x.length for x in group) * 1000
                rows.append(
                    f"| {o.start - self.t0:.1f} | {o.phase} | {len(group)} outages, longest "
                    f"{longest:.0f} | not judged | n/a |"
                )
                i = j + 1
                continue
            length = "never recovered" if math.isinf(o.end) else f"{o.length * 1000:.0f}"
            within = "yes" if o.ok else "NO"
            rows.append(
                f"| {o.start - self.t0:.1f} | {o.phase} | {length} | {o.bound * 1000:.0f} "
                f"| {within} |"
            )
            i += 1
        return "\n".join(rows)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


class SampleLog:
    """Collects a sampler's JSON lines (``{"t": ..., "v": ...}``, one per change, plus a
    heartbeat) in a background thread; ``series()`` is the step function as (t, value), or
    with ``events`` every line but the heartbeats (``v`` null); ``spans()`` how precisely the
    sampler placed each change."""

    def __init__(self, proc: subprocess.Popen[str], name: str, events: bool = False) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.name = name
        self.events = events
        self.count = 0
        self._series: list[tuple[float, Any]] = []
        self._spans: dict[float, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name=f"sampler-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                try:
                    d = json.loads(line)
                    t, v, n = float(d["t"]), d["v"], int(d.get("n", 1))
                    span = (float(d["span"][0]), float(d["span"][1])) if "span" in d else None
                except (ValueError, KeyError, TypeError, IndexError):
                    continue
                with self._lock:
                    self.count += n
                    if self.events:
                        if v is not None:
                            self._series.append((t, v))
                    elif not self._series or self._series[-1][1] != v:
                        self._series.append((t, v))
                        if span is not None:
                            self._spans[t] = span

    def series(self) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self._series)

    def spans(self) -> dict[float, tuple[float, float]]:
        """For each change in :meth:`series` (by its time): the span it happened in."""
        with self._lock:
            return dict(self._spans)

    def last(self) -> Any:
        with self._lock:
            return self._series[-1][1] if self._series else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._thread.join(5)


# --------------------------------------------------------------------------- the checker


#: For each node, each change its sampler reported (by time): the span it happened in.
Spans = Mapping[str, Mapping[float, tuple[float, float]]]


def _value_at(series: Sequence[tuple[float, Any]], t: float, default: Any = None) -> Any:
    i = bisect.bisect_right([s[0] for s in series], t) - 1
    return series[i][1] if i >= 0 else default


#: Probe attempts still in flight when a lossy or delayed link is repaired started under the
#: fault and may time out (200 ms) after it: outages starting that soon after are the fault's.
PROBE_TIMEOUT = 0.2


def _phase_at(phases: Sequence[Phase], t: float, tolerance: float = 0.0) -> Phase:
    """The phase in force at ``t``; an event up to ``tolerance`` before a phase starts is
    charged to it (an outage "starts" at the last success before the fault), except that one
    starting within :data:`PROBE_TIMEOUT` after a not-judged phase (loss, delay on the holder's
    link) ended stays with that phase."""
    best = 0
    for i, p in enumerate(phases):
        if p.t <= t + tolerance:
            best = i
    if best > 0 and phases[best - 1].bound is None and t < phases[best].t + PROBE_TIMEOUT:
        return phases[best - 1]
    return phases[best]


def evaluate(
    *,
    seed: int,
    phases: list[Phase],
    holders: dict[str, list[tuple[float, Any]]],  # node -> [(t, holds VIP: bool)]
    cut: dict[str, list[tuple[float, Any]]],  # node -> [(t, cut off: bool)]
    arp: list[tuple[float, Any]],  # [(t, client's MAC for the VIP or None)]
    macs: dict[str, str],  # node -> its MAC
    outages: list[tuple[float, float]],
    end: float,
    left_behind: dict[str, list[str]] | None = None,
    faults: Sequence[str] = (),
    tolerance: float = 0.1,
    stalls: Sequence[tuple[float, float, float]] = (),  # (start, length, steal), seconds
    spans: Spans | None = None,  # node -> SampleLog.spans()
) -> ChaosReport:
    """Judge one run. Pure: everything comes in as time series (time.monotonic() stamps)."""
    violations: list[str] = []
    t0 = phases[0].t
    nodes = sorted(holders)

    # Every moment any input changes, and the connected holders from then to the next one.
    times = sorted(
        {t for s in holders.values() for t, _ in s}
        | {t for s in cut.values() for t, _ in s}
        | {t for t, _ in arp}
        | {p.t for p in phases}
        | {end}
    )
    times = [t for t in times if t0 <= t <= end]

    def connected_holders(t: float) -> list[str]:
        return [
            n
            for n in nodes
            if _value_at(holders[n], t, False) and not _value_at(cut.get(n, []), t, False)
        ]

    dual_total = 0.0
    dual_windows: list[tuple[float, float, str]] = []
    dual_start: float | None = None
    stale: list[Outage] = []
    stale_start: float | None = None
    moves: list[tuple[float, str]] = []  # (t, new single holder)
    last_single: str | None = None
    for i, t in enumerate(times[:-1]):
        nxt = times[i + 1]
        held = connected_holders(t)
        if len(held) > 1:
            dual_total += nxt - t
            if dual_start is None:
                dual_start = t
        elif dual_start is not None:
            ph = _phase_at(phases, dual_start)
            dual_windows.append((dual_start, t - dual_start, ph.name))
            dual_start = None
        if len(held) == 1:
            if held[0] != last_single:
                if last_single is not None:
                    moves.append((t, held[0]))
                last_single = held[0]
            mac = _value_at(arp, t)
            wrong = mac is not None and mac != macs.get(held[0])
        else:
            wrong = False
        if wrong and stale_start is None:
            stale_start = t
        elif not wrong and stale_start is not None:
            ph = _phase_at(phases, stale_start, tolerance)
            stale.append(Outage(stale_start, t, ph.name, ph.bound, ph.t))
            stale_start = None
    if dual_start is not None:
        ph = _phase_at(phases, dual_start)
        dual_windows.append((dual_start, end - dual_start, ph.name))
    if stale_start is not None:
        ph = _phase_at(phases, stale_start, tolerance)
        stale.append(Outage(stale_start, math.inf, ph.name, ph.bound, ph.t))

    if dual_total > 0:
        for start, length, name in dual_windows:
            violations.append(
                f"S1: two connected holders for {length * 1000:.0f} ms at t={start - t0:.2f} s "
                f"during {name} (S1)" + _dual_bounds(spans or {}, start, start + length)
            )

    judged_outages: list[Outage] = []
    for start, stop in outages:
        if stop < t0:
            continue
        ph = _phase_at(phases, start, tolerance)
        o = Outage(start, stop, ph.name, ph.bound, ph.t)
        judged_outages.append(o)
        if not o.ok:
            shown = "never recovered" if math.isinf(stop) else f"{o.length * 1000:.0f} ms"
            assert o.bound is not None
            violations.append(
                f"{'recovery' if math.isinf(stop) else 'bound'}: client outage {shown} at "
                f"t={start - t0:.2f} s during {ph.name}, bound {o.bound * 1000:.0f} ms"
                + _stalls_within(stalls, start, stop, t0)
            )
    for o in stale:
        if not o.ok:
            shown = "until the end" if math.isinf(o.end) else f"{o.length * 1000:.0f} ms"
            assert o.bound is not None
            violations.append(
                f"{'recovery' if math.isinf(o.end) else 'bound'}: client's ARP entry pointed "
                f"away from the holder for {shown} at t={o.start - t0:.2f} s during {o.phase}, "
                f"bound {o.bound * 1000:.0f} ms"
            )

    # Moves are counted per fault (all its phases and the quiet gap after it): a slow
    # takeover may well move the VIP only after the node is already back.
    flaps: list[tuple[str, int, int]] = []
    groups: list[list[int]] = []
    for i, ph in enumerate(phases):
        if groups and phases[groups[-1][0]].fault == ph.fault:
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups:
        first = phases[group[0]]
        stop = phases[group[-1] + 1].t if group[-1] + 1 < len(phases) else end
        seen = sum(1 for t, _ in moves if first.t <= t < stop)
        allowed = sum(phases[i].changes for i in group)
        if seen > allowed:
            name = " / ".join(dict.fromkeys(phases[i].name for i in group))
            flaps.append((name, seen, allowed))
            violations.append(
                f"flap: the VIP moved {seen} times during {name} at t={first.t - t0:.2f} s "
                f"(allowed {allowed})" + _stalls_in(stalls, first.t, stop)
            )

    left = {n: v for n, v in (left_behind or {}).items() if v}
    for node, vips in left.items():
        violations.append(
            f"left-behind: VIP left behind on {node} after all daemons stopped: {vips}"
        )

    return ChaosReport(
        seed=seed,
        duration=end - t0,
        faults=list(faults),
        phases=phases,
        dual_holder_seconds=dual_total,
        dual_holder_windows=[(s - t0, length, n) for s, length, n in dual_windows],
        outages=judged_outages,
        stale_arp=stale,
        flaps=flaps,
        left_behind=left,
        violations=violations,
        t0=t0,
        stalls=[(st - t0, length, steal) for st, length, steal in stalls if st >= t0],
    )


def _dual_bounds(spans: Spans, start: float, stop: float) -> str:
    """How long a two-holder window could have been, given when the samplers read the changes
    that opened and closed it (each happened within its span; a change of the runner's own
    record, a cut, is exact), as a note for its violation. Names a sampler whose reads around
    a change were more than a sample late: finding 9 in docs/chaos.md."""

    def span_at(t: float) -> tuple[float, float, list[str]]:
        for node, by_time in spans.items():
            if t in by_time:
                a, b = by_time[t]
                late = b - a - SAMPLE_INTERVAL  # beyond one sampling interval
                return a, b, [f"{node}'s {late * 1000:.0f} ms"] if late > SAMPLE_INTERVAL else []
        return t, t, []

    a_start, b_start, late_start = span_at(start)
    a_stop, b_stop, late_stop = span_at(stop)
    if (a_start, b_start, a_stop, b_stop) == (start, start, stop, stop):
        return ""  # no sampler's change opened or closed it
    shortest, longest = max(0.0, a_stop - b_start), b_stop - a_start
    note = f"; the samples bound it to {shortest * 1000:.0f}-{longest * 1000:.0f} ms"
    late = late_start + late_stop
    if late:
        note += f" (reads late by {' and '.join(late)})"
    return note


def _overlapping(
    stalls: Sequence[tuple[float, float, float]], start: float, stop: float
) -> list[tuple[float, float, float]]:
    """The (start, length, steal) stalls that overlap [start, stop)."""
    return [s for s in stalls if s[0] < stop and s[0] + s[1] > start]


def _stalls_within(
    stalls: Sequence[tuple[float, float, float]], start: float, stop: float, t0: float
) -> str:
    """The host stalls that overlap an outage, or began up to a probe timeout before it (an
    attempt that started then timed out in it), as a note for its violation."""
    hit = _overlapping(stalls, start - PROBE_TIMEOUT, stop)
    if not hit:
        return ""
    shown = ", ".join(
        f"{length * 1000:.0f} ms at t={st - t0:.2f} s (steal {steal * 1000:.0f} ms)"
        for st, length, steal in hit
    )
    return f"; the host stalled: {shown}"


def _stalls_in(stalls: Sequence[tuple[float, float, float]], start: float, stop: float) -> str:
    """How much the host stalled during a fault, as a note for its flap violation (one fault
    can take many: a count, the longest and the steal time in them)."""
    hit = _overlapping(stalls, start, stop)
    if not hit:
        return ""
    longest, steal = max(s[1] for s in hit), sum(s[2] for s in hit)
    return (
        f"; the host stalled {len(hit)} times in it, longest {longest * 1000:.0f} ms "
        f"(steal {steal * 1000:.0f} ms in them)"
    )


# --------------------------------------------------------------------------- process sampling


@dataclass
class ProcSample:
    t: float
    name: str
    pid: int
    fds: int
    rss_kb: int


class ProcessSampler:
    """Samples open file descriptors and VmRSS of named processes every ``interval`` s (soak).

    ``pids`` is called at each sample and returns {name: pid}; a name whose pid changed starts
    a new series (a restarted process is a different process)."""

    def __init__(self, pids: Callable[[], dict[str, int]], interval: float = 5.0) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: list[ProcSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)
        self._thread.start()

    @staticmethod
    def read(pid: int) -> tuple[int, int] | None:
        """(open fds, VmRSS in kB) of ``pid``, or None if it is gone."""
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            return None
        return fds, rss

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, pid in self.pids().items():
                got = self.read(pid)
                if got is not None:
                    self.samples.append(ProcSample(now, name, pid, *got))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def series(self) -> dict[tuple[str, int], list[ProcSample]]:
        out: dict[tuple[str, int], list[ProcSample]] = {}
        for s in self.samples:
            out.setdefault((s.name, s.pid), []).append(s)
        return out

    @staticmethod
    def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
        """Least-squares slope of (t seconds, value) in value per hour; 0 for < 2 points."""
        if len(points) < 2:
            return 0.0
        n = len(points)
        mt = sum(t for t, _ in points) / n
        mv = sum(v for _, v in points) / n
        den = sum((t - mt) ** 2 for t, _ in points)
        if den == 0:
            return 0.0
        return sum((t - mt) * (v - mv) for t, v in points) / den * 3600


# --------------------------------------------------------------------------- the runner


class ChaosRunner:
    """Applies a schedule to a started, fenced :class:`Pair` (both daemons and the witness
    running, n1 master) and judges the run. ``say`` gets one line per step."""

    def __init__(
        self,
        pair: Pair,
        schedule: Sequence[Fault],
        timing: Timing,
        seed: int,
        say: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.pair = pair
        self.schedule = list(schedule)
        self.timing = timing
        self.seed = seed
        self.say = say
        self.phases: list[Phase] = []
        self.cut: dict[str, list[tuple[float, Any]]] = {n: [] for n in pair.nodes}
        self.samplers: dict[str, SampleLog] = {}
        self.stalls: SampleLog | None = None
        self.probe: ProbeLog | None = None
        self.problems: list[str] = []
        self._fault_index = -1

    # -- observation -------------------------------------------------------------------------
    def start_watching(self) -> None:
        vip = self.pair.vip
        for name, node in self.pair.nodes.items():
            self.samplers[name] = _start_sampler(node.host, vip, "addr", name)
            self.cut[name].append((time.monotonic(), name in self.pair.cut_off))
        self.samplers["client"] = _start_sampler(self.pair.client, vip, "neigh", "client")
        self.stalls = _start_sampler(self.pair.client, vip, "stalls", "stalls")
        self.probe = self.pair.probe()

    def stop_watching(self) -> None:
        if self.probe is not None:
            self.probe.stop()
        for s in self.samplers.values():
            s.stop()
        if self.stalls is not None:
            self.stalls.stop()

    def holder(self) -> str | None:
        """The single connected holder as the samplers last saw it, else None."""
        held = [
            n for n in self.pair.nodes if self.samplers[n].last() and n not in self.pair.cut_off
        ]
        return held[0] if len(held) == 1 else None

    def wait_single_holder(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.holder()
            if h is not None:
                return h
            time.sleep(SAMPLE_INTERVAL)
        return None

    # -- phases ------------------------------------------------------------------------------
    def phase(
        self, name: str, kind: str, bound: float | None, changes: int = 0, note: str = ""
    ) -> None:
        self.phases.append(
            Phase(time.monotonic(), name, kind, bound, changes, note, self._fault_index)
        )
        self.say(f"  t={self.phases[-1].t - self.phases[0].t:7.2f} s  {name}")

    def _cut(self, name: str) -> None:
        self.pair.cut(name)
        self.cut[name].append((time.monotonic(), True))  # cut from now on, not before

    def _restore(self, name: str) -> None:
        self.cut[name].append((time.monotonic(), False))  # connected from just before
        self.pair.restore(name)

    # -- applying faults -----------------------------------------------------------------------
    def apply(self, fault: Fault) -> None:
        p, tm = self.pair, self.timing
        master = self.wait_single_holder(10.0)
        if master is None:
            self.problems.append(f"setup: no single holder before {fault.describe()}")
            master = "n1"
        backup = next(n for n in p.nodes if n != master)
        target = {"master": master, "backup": backup}.get(fault.target, fault.target)
        k = fault.kind
        # Each phase starts just before its action: an outage the action causes can then never
        # be charged to the phase before it.
        if k == "kill":
            self.phase(f"kill {target}", k, tm.takeover, 1)
            p.kill(target)
            self._cut(target)
            time.sleep(fault.hold)
            self.phase(f"restart {target} after kill", k, tm.handover, 1)
            self._restore(target)
            p.start(target)
        elif k == "crash":
            self.phase(f"crash {target} (link up)", k, tm.takeover, 1)
            p.kill(target)
            time.sleep(fault.hold)
            self.phase(f"restart {target} after crash", k, tm.handover, 1)
            p.start(target)
        elif k == "freeze":
            self.phase(f"freeze {target}", k, tm.takeover, 1)
            p.signal(target, signal.SIGSTOP)
            self._cut(target)
            time.sleep(fault.hold)
            self.phase(f"resume {target}", k, tm.handover, 1)
            self._restore(target)
            p.signal(target, signal.SIGCONT)
        elif k == "partition":
            a, b = (p.nodes[n].host for n in p.nodes)
            self.phase("partition n1-n2", k, 0.0)
            p.lab.partition(a, b)
            time.sleep(fault.hold)
            self.phase("heal n1-n2", k, 0.0)
            p.lab.heal(a, b)
        elif k in ("witness-down", "witness-freeze"):
            freeze = k == "witness-freeze"
            self.phase(k, k, 0.0)
            p.stop_witness(signal.SIGSTOP if freeze else signal.SIGKILL)
            time.sleep(fault.hold)
            self.phase("witness back", k, 0.0)
            if freeze:
                p.stop_witness(signal.SIGCONT)
            else:
                p.start_witness()
        elif k == "witness-restart":
            self.phase("witness restart", k, 0.0)
            p.stop_witness(signal.SIGTERM)
            p.start_witness()
        elif k == "witness-cut":
            assert p.witness_host is not None
            self.phase(f"witness cut from {target}", k, 0.0)
            p.lab.partition(p.nodes[target].host, p.witness_host)
            time.sleep(fault.hold)
            self.phase(f"witness reachable from {target}", k, 0.0)
            p.lab.heal(p.nodes[target].host, p.witness_host)
        elif k == "loss":
            host = p.nodes[target].host
            # The probe's packets cross the holder's lossy link: its failures are the loss,
            # not a failover, so they are not judged; holders and flaps still are.
            bound = None if target == master else 0.0
            self.phase(f"{LOSS_PERCENT:.0f} % loss on {target}", k, bound)
            p.lab.set_loss(host, LOSS_PERCENT)
            time.sleep(fault.hold)
            self.phase(f"loss cleared on {target}", k, 0.0)
            p.lab.clear_loss(host)
        elif k == "delay":
            # Like loss: the probe's own connections cross a delayed holder link and time out
            # (200 ms) when the round trip grows past that; holders and flaps are judged.
            bound = None if target == master else 0.0
            ms = f"{fault.amount * 1000:.0f} ms"
            self.phase(f"{ms} delay on {target}", k, bound)
            with DelayLink(p.lab, p.nodes[target].host, fault.amount):
                time.sleep(fault.hold)
                self.phase(f"delay removed on {target}", k, 0.0)
        elif k == "restart":
            is_master = target == master
            bound = tm.handover if is_master else 0.0
            self.phase(f"SIGTERM {target}", k, bound, int(is_master))
            p.stop(target)
            time.sleep(fault.hold)
            self.phase(f"start {target}", k, bound, int(is_master))
            p.start(target)
        else:
            raise ValueError(k)
        time.sleep(fault.gap)
        self.phase("steady", "steady", 0.0)

    def run(self, on_fault: Callable[[int, Fault], None] | None = None) -> ChaosReport:
        self.start_watching()
        try:
            if self.probe is not None:
                self.probe.wait_for_success(timeout=10)
            if self.wait_single_holder(10.0) is None:
                self.problems.append("setup: no single holder at the start")
            self.phase("steady", "steady", 0.0)
            for i, fault in enumerate(self.schedule):
                if on_fault is not None:
                    on_fault(i, fault)
                self.say(f"fault {i + 1}/{len(self.schedule)}: {fault.describe()}")
                self._fault_index = i
                self.apply(fault)
            end = time.monotonic()
        finally:
            self.stop_watching()
        counters = self.counters()
        left = self.stop_all()
        report = self.judge(end, left)
        report.counters = counters
        return report

    def counters(self) -> dict[str, dict[str, int]]:
        """Each running daemon's instance counters (transitions, lease events, drops...)."""
        out: dict[str, dict[str, int]] = {}
        for name, node in self.pair.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                continue
            with contextlib.suppress(OSError, ValueError, RuntimeError, KeyError, StopIteration):
                status = node.status()
                inst = next(i for i in status["instances"] if i["name"] == "vip")
                out[name] = {k: int(v) for k, v in inst["counters"].items()}
                if status.get("witness"):
                    w = status["witness"]["counters"]
                    out[f"{name} witness client"] = {k: int(v) for k, v in w.items()}
        return out

    def stop_all(self) -> dict[str, list[str]]:
        """Stop every daemon (SIGTERM) and the witness; the VIPs still on any interface."""
        for name, node in self.pair.nodes.items():
            if node.proc is not None:
                if name in self.pair.cut_off:
                    self._restore(name)
                if node.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(node.proc.pid, signal.SIGCONT)
                    self.pair.stop(name)
                else:
                    node.proc = None
        left = {
            name: [a for a in node.host.addresses() if a.split("/")[0] == self.pair.vip]
            for name, node in self.pair.nodes.items()
        }
        return left

    def judge(self, end: float, left: dict[str, list[str]]) -> ChaosReport:
        assert self.probe is not None
        report = evaluate(
            seed=self.seed,
            phases=self.phases,
            holders={n: self.samplers[n].series() for n in self.pair.nodes},
            cut=self.cut,
            arp=self.samplers["client"].series(),
            macs={n: node.host.mac for n, node in self.pair.nodes.items()},
            outages=self.probe.outages(),
            end=end,
            left_behind=left,
            faults=[f.describe() for f in self.schedule],
            stalls=[(t, v[0], v[1]) for t, v in self.stalls.series()] if self.stalls else (),
            spans={n: self.samplers[n].spans() for n in self.pair.nodes},
        )
        report.violations = self.problems + report.violations
        report.samples = sum(s.count for s in self.samplers.values())
        return report


def _start_sampler(host: Any, vip: str, what: str, name: str) -> SampleLog:
    """A ``sample`` process for ``what`` (addr or neigh), or with ``stalls`` the stall watch."""
    argv = ["stalls"] if what == "stalls" else ["sample", "--vip", vip, "--what", what]
    kw: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL, "text": True}
    proc = host.python("vipd.lab.chaos", *argv, **kw)
    log = SampleLog(proc, name, events=what == "stalls")
    wait_until(lambda: log.count > 0 or proc.poll() is not None, 10, what=f"sampler {name}")
    if proc.poll() is not None:
        raise RuntimeError(f"sampler on {name} exited {proc.returncode}")
    return log


ETCD_EXPIRY_TICK = 0.5  # etcd's lessor looks for expired leases twice a second


def start_fenced_pair(
    lab: Lab, workdir: Path, interval: float, witness: str = "embedded", **kw: Any
) -> Pair:
    """A fenced pair, started: the witness, n1 first (master without a start-up race), then
    n2; returns once n1 holds the lease and n2 has heard n1."""
    pair = Pair(lab, workdir=workdir, advert_interval=interval, witness=witness, **kw)
    try:
        pair.start_witness()
        pair.start("n1")
        wait_until(lambda: pair.holders() == ["n1"], 20, what="n1 to hold the VIP")
        pair.start("n2")
        wait_until(
            lambda: pair.nodes["n1"].instance()["witness"]["state"] == "held",
            15,
            what="n1's lease",
        )
        wait_until(
            lambda: pair.nodes["n2"].instance()["master_priority"] is not None,
            15,
            what="n2 to hear n1",
        )
    except BaseException:
        pair.close()
        raise
    return pair


def timing_for(pair: Pair) -> Timing:
    """The bounds' inputs for a started fenced pair (the TTL as the witness granted it)."""
    ttl = lease_ttl_from_log(pair.nodes["n1"].log())
    if ttl is None:
        ttl = float(pair.nodes["n1"].instance()["witness"]["ttl"])
    return Timing(
        advert_interval=pair.advert_interval,
        lease_ttl=ttl,
        witness_expiry=ETCD_EXPIRY_TICK if pair.witness == "etcd" else 0.0,
    )


def lease_ttl_from_log(text: str) -> float | None:
    """The TTL the witness applied, from a daemon's JSON log (``lease-granted`` events)."""
    ttl: float | None = None
    for line in text.splitlines():
        if '"lease-granted"' in line and line.startswith("{"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ttl = float(json.loads(line)["ttl"])
    return ttl


# --------------------------------------------------------------------------- delay


class DelayLink:
    """Delay every frame to and from one lab host by ``delay`` seconds (each way), for as long
    as the context lasts: what ``tc qdisc add ... netem delay`` would do, on a kernel without
    sch_netem (CONFIG_NET_SCH_NETEM is not set here, and no other qdisc delays).

    The host's switch port is taken out of the bridge and a relay process in the switch
    namespace (``python -m vipd.lab.chaos relay``) copies frames between it and a new veth pair
    whose other end joins the bridge in its place, holding each frame ``delay`` seconds (AF_PACKET
    sockets; Python's timer precision, about a millisecond, adds some jitter). While it lasts,
    partition/isolate/loss rules naming the host's port do not apply to it: the chaos schedule
    never overlaps faults.
    """

    def __init__(self, lab: Lab, host: Any, delay: float) -> None:
        self.lab = lab
        self.host = host
        self.delay = delay
        self.inner = f"d-{host.name}"  # the relay's side
        self.outer = f"e-{host.name}"  # joins the bridge
        self.proc: subprocess.Popen[str] | None = None

    def _ip(self, *argv: str, check: bool = True) -> None:
        cmd = ["ip", "-n", self.lab.switch_ns, *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")

    def __enter__(self) -> DelayLink:
        port = self.host.port
        self._ip("link", "add", self.inner, "type", "veth", "peer", "name", self.outer)
        self._ip("link", "set", self.outer, "master", "br0")
        self._ip("link", "set", self.inner, "up")
        self._ip("link", "set", self.outer, "up")
        argv = [sys.executable, "-m", "vipd.lab.chaos", "relay", port, self.inner]
        argv += ["--delay", str(self.delay)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.switch_ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.__exit__()
            raise RuntimeError(f"delay relay did not start: {err}")
        self._ip("link", "set", port, "nomaster")  # from now on frames go through the relay
        return self

    def __exit__(self, *exc: object) -> None:
        self._ip("link", "set", self.host.port, "master", "br0", check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._ip("link", "del", self.inner, check=False)  # takes its peer along


_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
_PACKET_AUXDATA = 8
_TP_STATUS_CSUMNOTREADY = 1 << 3


def _fix_checksum(frame: bytearray) -> None:
    """Complete the TCP/UDP checksum of a frame the sender left to offload (veth hands such
    frames over with only the pseudo-header sum; the next veth would drop them)."""
    offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
    if ethertype == 0x8100:
        offset, ethertype = 18, int.from_bytes(frame[16:18], "big")
    if ethertype == 0x0800:
        ihl = (frame[offset] & 0x0F) * 4
        proto, total = frame[offset + 9], int.from_bytes(frame[offset + 2 : offset + 4], "big")
        l4, end = offset + ihl, offset + total
        addrs = bytes(frame[offset + 12 : offset + 20])
    elif ethertype == 0x86DD:  # no extension headers in the lab's traffic
        proto = frame[offset + 6]
        l4 = offset + 40
        end = l4 + int.from_bytes(frame[offset + 4 : offset + 6], "big")
        addrs = bytes(frame[offset + 8 : offset + 40])
    else:
        return
    field_at = {6: 16, 17: 6}.get(proto)
    if field_at is None or end > len(frame) or l4 + field_at + 2 > end:
        return
    seg_len = end - l4
    if ethertype == 0x0800:
        pseudo = addrs + bytes([0, proto]) + seg_len.to_bytes(2, "big")
    else:
        pseudo = addrs + seg_len.to_bytes(4, "big") + bytes([0, 0, 0, proto])
    frame[l4 + field_at : l4 + field_at + 2] = b"\0\0"
    data = pseudo + bytes(frame[l4:end])
    if len(data) % 2:
        data += b"\0"
    total_sum = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total_sum >> 16:
        total_sum = (total_sum & 0xFFFF) + (total_sum >> 16)
    checksum = ~total_sum & 0xFFFF
    if proto == 17 and checksum == 0:
        checksum = 0xFFFF
    frame[l4 + field_at : l4 + field_at + 2] = checksum.to_bytes(2, "big")


def _relay(a: str, b: str, delay: float) -> None:
    """Copy frames between interfaces ``a`` and ``b`` (both ways), each ``delay`` s late."""
    import heapq
    import selectors
    import socket
    import struct

    socks = {}
    for name in (a, b):
        sk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        sk.bind((name, 0))
        sk.setsockopt(263, _PACKET_AUXDATA, 1)  # SOL_PACKET
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sk.setblocking(False)
        socks[name] = sk
    other = {socks[a]: socks[b], socks[b]: socks[a]}
    sel = selectors.DefaultSelector()
    for sk in socks.values():
        sel.register(sk, selectors.EVENT_READ)
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.is_set():
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            with contextlib.suppress(OSError):  # too big, link down: lost, like on a wire
                out.send(frame)
        timeout = min(0.5, max(0.0, queue[0][0] - time.monotonic())) if queue else 0.5
        for key, _ in sel.select(timeout):
            src = key.fileobj
            assert isinstance(src, socket.socket)
            while True:
                try:
                    data, anc, _, addr = src.recvmsg(65536, 64)
                except BlockingIOError:
                    break
                if addr[2] == _PACKET_OUTGOING:
                    continue  # our own sends
                buf = bytearray(data)
                for level, kind, value in anc:
                    if level == 263 and kind == _PACKET_AUXDATA:
                        status = struct.unpack_from("I", value)[0]
                        if status & _TP_STATUS_CSUMNOTREADY:
                            _fix_checksum(buf)
                seq += 1
                heapq.heappush(queue, (time.monotonic() + delay, seq, other[src], bytes(buf)))


# --------------------------------------------------------------------------- the sampler


def _sample(vip: str, what: str, ifname: str, interval: float, out: IO[str]) -> None:
    """Inside a namespace: every ``interval`` s dump the addresses of ``ifname`` (what="addr",
    value: the VIP is there) or the neighbour entry for ``vip`` (what="neigh", value: its MAC
    or null); print a JSON line on every change and once a second. ``t`` is when the read
    began; a change also carries ``span``, from the previous read's start to this read's end:
    the kernel's state changed somewhere in it (a sampler held up by the host widens it)."""
    from pyroute2 import IPRoute

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        last: Any = object()
        last_print = previous = 0.0
        count = 0
        while not stop.is_set():
            t = time.monotonic()
            value: Any
            if what == "addr":
                value = any(a.get_attr("IFA_ADDRESS") == vip for a in ipr.get_addr(index=index))
            else:
                value = None
                for n in ipr.get_neighbours(ifindex=index, dst=vip):
                    mac = n.get_attr("NDA_LLADDR")
                    if mac and n.get_attr("NDA_DST") == vip:
                        value = str(mac).lower()
            done = time.monotonic()
            count += 1
            if value != last or t - last_print >= 1.0:
                line = {"t": t, "v": value, "n": count}
                if value != last and previous:  # changed after the last read began, before
                    # this one ended
                    line["span"] = [previous, done]
                out.write(json.dumps(line) + "\n")
                out.flush()
                last, last_print, count = value, t, 0
            previous = t
            stop.wait(max(0.0, t + interval - time.monotonic()))


def _steal() -> float:
    """Seconds of steal time of all the host's CPUs so far (/proc/stat, USER_HZ ticks)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _watch_stalls(out: IO[str]) -> None:
    """Sleep STALL_TICK at a time; print ``{"t", "v": [late, steal]}`` for every wake-up at
    least STALL_MIN late (``t`` when the stall began) and ``{"t", "v": null}`` once a second."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    last_print = 0.0
    count = 0
    before, steal = time.monotonic(), _steal()
    while not stop.wait(STALL_TICK):
        now, steal_now = time.monotonic(), _steal()
        late = now - before - STALL_TICK
        count += 1
        if late >= STALL_MIN:
            line = {"t": now - late, "v": [round(late, 4), round(steal_now - steal, 3)], "n": count}
        elif now - last_print >= 1.0:
            line = {"t": now, "v": None, "n": count}
        else:
            line = None
        if line is not None:
            out.write(json.dumps(line) + "\n")
            out.flush()
            last_print, count = now, 0
        before, steal = now, steal_now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vipd.lab.chaos")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="watch the VIP on eth0 or the neighbour entry for it")
    s.add_argument("--vip", required=True)
    s.add_argument("--what", choices=("addr", "neigh"), required=True)
    s.add_argument("--ifname", default="eth0")
    s.add_argument("--interval", type=float, default=SAMPLE_INTERVAL)
    sub.add_parser("stalls", help="report the wake-ups of a 10 ms sleep loop 50 ms late or more")
    r = sub.add_parser("relay", help="copy frames between two interfaces, each DELAY s late")
    r.add_argument("a")
    r.add_argument("b")
    r.add_argument("--delay", type=float, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        if args.cmd == "relay":
            _relay(args.a, args.b, args.delay)
        elif args.cmd == "stalls":
            _watch_stalls(sys.stdout)
        else:
            _sample(args.vip, args.what, args.ifname, args.interval, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
