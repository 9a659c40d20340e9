"""Fencing benchmark: what the witness costs vipd in failover time, and what it buys against
split brain, with keepalived measured in the same run.

Run as root::

    python benchmarks/fencing.py [--runs N] [--partition-runs N] [--intervals 1.0,0.1]
                                 [--impls vipd,vipd+embedded,vipd+etcd,keepalived]
                                 [--etcd-election-ms 1000] [--out docs/benchmarks-fencing.md]

Implementations, each in a fresh lab of the same topology as benchmarks/failover.py (a bridge
namespace, n1 priority 150, n2 priority 100, a client whose neighbour entries stay REACHABLE for
4 hours, a TCP responder on each node):

* ``vipd``: no witness, the configuration ``vipd.lab.pair.Pair`` writes.
* ``vipd+embedded``: the same pair fenced through ``vipd witness`` on a third host ``w``.
* ``vipd+etcd``: fenced through a single-node etcd 3.4 on ``w``, by default with etcd's own
  Raft timing (heartbeat 100 ms, election 1000 ms), so its minimum lease TTL is what an operator
  gets (2 s); ``--etcd-election-ms 100`` gives the 1 s floor the integration tests run with.
* ``keepalived``: its default configuration (as in failover.py).

Scenarios:

* ``kill+cut`` and ``sigterm`` at every advert interval: the client-visible outage, measured
  with failover.py's probe and ``measure`` (fault applied right after one of the master's
  adverts, as the client sees them). For the fenced pairs the backup's witness round trip
  (``rtt`` in ``vipctl status --json``) is read after the takeover, for the goal column: a
  fenced failover is at most one witness round trip + 50 ms slower than an unfenced one
  (fencing.md L1).
* ``partition``: the link between n1 and n2 alone is cut for 8 s (``Lab.partition``; both
  still reach the client and the witness), then healed. Dual-holder seconds are sampled every
  20 ms (``HolderMonitor``; for keepalived the same monitor on the same kernel view of who
  carries the VIP). The goal with a witness is 0.000 (fencing.md S1, S6).

Every lab is torn down (namespaces deleted) after each run, also on error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from failover import (
    GOAL_SLACK,
    MASTER_IP,
    STEADY,
    VRID,
    AdvertSniffer,
    KeepalivedCluster,
    VipdCluster,
    fmt_ms,
    machine,
    master_down_interval,
    measure,
    parse_intervals,
    summary,
)

from vipd.lab.etcd import min_lease_ttl, start_etcd
from vipd.lab.netns import Host, Lab
from vipd.lab.pair import ETCD_CLIENT_PORT, WITNESS_V4, HolderMonitor, Pair, wait_until

IMPLS = ("vipd", "vipd+embedded", "vipd+etcd", "keepalived")
FAILOVER_SCENARIOS = ("kill+cut", "sigterm")
PARTITION_SECONDS = 8.0
PARTITION_INTERVAL = 1.0
SETTLE = 3.0  # after the heal: long enough for any leftover holder to step down


# --------------------------------------------------------------------------- #
# Clusters                                                                     #
# --------------------------------------------------------------------------- #


class FencedCluster(VipdCluster):
    """failover.py's vipd cluster, fenced through a witness on host ``w``."""

    def __init__(
        self, lab: Lab, interval: float, workdir: Path, backend: str, election_ms: int
    ) -> None:
        self.pair = Pair(lab, workdir=workdir, advert_interval=interval, vrid=VRID, witness=backend)
        self.client = self.pair.client
        self.backend = backend
        self.election_ms = election_ms
        self.takeover_rtt: float | None = None
        self.refused_before = 0
        self._watcher: threading.Thread | None = None

    def fault(self, scenario: str) -> None:
        self._watcher = threading.Thread(target=self._watch_takeover, daemon=True)
        self._watcher.start()
        super().fault(scenario)

    def _watch_takeover(self) -> None:
        """Poll n2 (every 20 ms, from the fault on) until it is master, then keep the ``rtt``
        its status shows: the round trip of the request that was granted, which gated the
        promotion (the first renewal is sent a whole advert interval later). Read later,
        ``rtt`` would be a renewal's, and renewals cost the witness no disk write."""
        node = self.pair.nodes["n2"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, RuntimeError, KeyError):
                inst = node.instance()
                if inst["state"] == "master":
                    self.takeover_rtt = (inst["witness"] or {}).get("rtt")
                    return
            time.sleep(0.02)

    def wait_takeover_rtt(self) -> float | None:
        if self._watcher is not None:
            self._watcher.join(35)
        return self.takeover_rtt

    def converge(self) -> None:
        if self.backend == "etcd":
            assert self.pair.witness_host is not None
            # Pair.start_witness would use the tests' shortened Raft timing; start it with the
            # timing asked for instead, on the URLs the pair's configs name. Pair.close kills it.
            self.pair.etcd = start_etcd(
                self.pair.workdir / "etcd",
                f"http://{WITNESS_V4}:{ETCD_CLIENT_PORT}",
                f"http://{WITNESS_V4}:{ETCD_CLIENT_PORT + 1}",
                host=self.pair.witness_host,
                heartbeat_ms=max(1, self.election_ms // 10),
                election_ms=self.election_ms,
                timeout=30,
            )
        else:
            self.pair.start_witness()
        super().converge()
        wait_until(
            lambda: self.witness("n1").get("state") == "held", 15, what="n1 to hold the lease"
        )
        # Refusals n2 got in the start-up race do not count: only those after the fault.
        self.refused_before = n2_refusals(self)

    def witness(self, node: str) -> dict[str, Any]:
        status: dict[str, Any] = self.pair.nodes[node].instance()["witness"] or {}
        return status

    def granted_ttls(self, node: str) -> list[float]:
        """The TTLs the witness applied to ``node``'s grants (etcd rounds up), from its log."""
        found = []
        for line in self.pair.nodes[node].log().splitlines():
            if line.startswith("{") and '"lease-granted"' in line:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == "lease-granted":
                        found.append(float(record["ttl"]))
        return found

    def diagnostics(self) -> str:
        return f"{super().diagnostics()}\n--- witness ---\n{self.pair.witness_log()[-4000:]}"


@dataclass
class HolderSource:
    """What :class:`HolderMonitor` samples (``connected_holders``), for a keepalived pair: the
    nodes whose eth0 carries the VIP. No node is cut in the partition scenario, so every holder
    reaches the client, exactly as ``Pair.connected_holders`` counts for vipd."""

    connected_holders: Callable[[], list[str]]


def watch_holders(c: Any) -> HolderMonitor:
    if isinstance(c, VipdCluster):
        return c.pair.watch_holders()
    # HolderMonitor only ever calls .connected_holders() on its pair.
    return HolderMonitor(cast(Pair, HolderSource(c.holders)))


def node_hosts(c: Any) -> tuple[Lab, Host, Host]:
    if isinstance(c, VipdCluster):
        return c.pair.lab, c.pair.nodes["n1"].host, c.pair.nodes["n2"].host
    assert isinstance(c, KeepalivedCluster)
    return c.lab, c.nodes["n1"].host, c.nodes["n2"].host


@contextlib.contextmanager
def cluster(impl: str, interval: float, election_ms: int) -> Iterator[Any]:
    with tempfile.TemporaryDirectory(prefix="bench-fence-") as tmp, Lab() as lab:
        workdir = Path(tmp)
        c: Any
        if impl == "vipd":
            c = VipdCluster(lab, interval, workdir)
        elif impl == "keepalived":
            c = KeepalivedCluster(lab, interval, workdir)
        else:
            c = FencedCluster(lab, interval, workdir, impl.split("+")[1], election_ms)
        try:
            for host in node_hosts(c)[1:]:
                no_forwarding(host)
            yield c
        finally:
            c.close()


def no_forwarding(host: Host) -> None:
    """Make a node a plain host. New namespaces inherit IPv4 forwarding from the machine (on
    here when other tools enabled it); a node that forwards keeps relaying the client's packets
    for the VIP after it dropped the VIP itself, holding them until the new master appears,
    and hides up to one probe timeout (200 ms) of a SIGTERM outage from the probe."""
    host.run("sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")


def machine_forwarding() -> str:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- #
# Measuring                                                                    #
# --------------------------------------------------------------------------- #


@dataclass
class Sample:
    value: float  # seconds: the outage (failover scenarios) or dual-holder time (partition)
    rtt: float | None = None  # the backup's witness round trip after the takeover
    ttl: float | None = None  # the TTL the witness applied to the backup's grant
    outage: float | None = None  # partition: longest client outage from the partition on
    promoted: bool | None = None  # partition: did n2 ever hold the VIP
    refused: int | None = None  # lease refusals n2 got (fenced pairs)


def failover_run(c: Any, scenario: str, steady: float) -> Sample:
    outage = measure(c, scenario, steady)
    if not isinstance(c, FencedCluster):
        return Sample(outage)
    rtt = c.wait_takeover_rtt()
    ttls = c.granted_ttls("n2")
    refused = n2_refusals(c) - c.refused_before
    return Sample(outage, rtt=rtt, ttl=ttls[-1] if ttls else None, refused=refused)


def n2_refusals(c: Any) -> int:
    if not isinstance(c, FencedCluster):
        return 0
    return int(c.pair.nodes["n2"].instance()["counters"].get("lease:refused", 0))


def partition_run(c: Any, seconds: float, steady: float) -> Sample:
    """Converge, partition n1 from n2 for ``seconds`` (right after one of n1's adverts), heal,
    settle; dual-holder seconds over the whole window."""
    sniffer = AdvertSniffer(c.client)
    c.converge()
    probe = c.start_probe()
    probe.wait_for_success(node="n1", timeout=10)
    time.sleep(steady)
    lab, h1, h2 = node_hosts(c)
    monitor = watch_holders(c)
    refused_before = n2_refusals(c)
    try:
        sniffer.wait_next(MASTER_IP)
        t0 = time.monotonic()
        lab.partition(h1, h2)
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    finally:
        lab.heal(h1, h2)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: c.holders() == ["n1"], 15)
    time.sleep(SETTLE)
    monitor.stop()
    probe.stop()
    return Sample(
        monitor.dual_holder_seconds(),
        outage=probe.longest_outage_after(t0),
        promoted="n2" in monitor.holders_seen(),
        refused=n2_refusals(c) - refused_before if isinstance(c, FencedCluster) else None,
    )


def one_run(impl: str, interval: float, scenario: str, args: argparse.Namespace) -> Sample:
    with cluster(impl, interval, args.etcd_election_ms) as c:
        try:
            if scenario == "partition":
                return partition_run(c, args.partition_seconds, args.steady)
            return failover_run(c, scenario, args.steady)
        except Exception:
            print(c.diagnostics(), file=sys.stderr)
            raise


# --------------------------------------------------------------------------- #
# Report                                                                       #
# --------------------------------------------------------------------------- #


@dataclass
class Row:
    scenario: str
    interval: float
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def values(self, impl: str) -> list[float]:
        return [s.value for s in self.samples.get(impl, [])]

    def median(self, impl: str) -> float | None:
        v = self.values(impl)
        return statistics.median(v) if v else None


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def failover_goal(row: Row, impl: str) -> tuple[str, str]:
    """(budget, verdict): a fenced median within the unfenced median + rtt + 50 ms?"""
    base, this = row.median("vipd"), row.median(impl)
    rtt = median_of([s.rtt for s in row.samples.get(impl, [])])
    if base is None or this is None or rtt is None:
        return "n/a", "n/a"
    budget = base + rtt + GOAL_SLACK
    return fmt_ms(budget), "yes" if this <= budget else "NO"


def failover_table(rows: list[Row], impls: list[str]) -> str:
    lines = [
        "| scenario | advert (s) | implementation | outage ms median (min-max) "
        "| vs vipd without witness (median, ms) | witness rtt ms (median) "
        "| lease TTL applied (s) | n2 refused (median) | goal: <= vipd + rtt + 50 ms "
        "| ratio keepalived/this |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for impl in impls:
            if impl not in row.samples:
                continue
            samples = row.samples[impl]
            this, base, ka = row.median(impl), row.median("vipd"), row.median("keepalived")
            delta = "-" if impl == "vipd" or this is None or base is None else _signed(this - base)
            rtt = median_of([s.rtt for s in samples])
            ttls = sorted({s.ttl for s in samples if s.ttl is not None})
            refused = median_of([float(s.refused) for s in samples if s.refused is not None])
            fenced = impl.startswith("vipd+")
            goal = "-"
            if fenced:
                budget, verdict = failover_goal(row, impl)
                goal = f"{verdict} (budget {budget})"
            ratio = "-" if impl == "keepalived" or not this or ka is None else _ratio(ka / this)
            lines.append(
                f"| {row.scenario} | {row.interval:g} | {impl} | {summary(row.values(impl))} "
                f"| {delta} | {'-' if rtt is None else f'{rtt * 1000:.1f}'} "
                f"| {', '.join(f'{t:.3g}' for t in ttls) or '-'} "
                f"| {'-' if refused is None else f'{refused:g}'} | {goal} | {ratio} |"
            )
    return "\n".join(lines)


def partition_table(row: Row, impls: list[str]) -> str:
    lines = [
        "| implementation | dual-holder s median (min-max) | n2 promoted (runs) "
        "| n2's lease refusals (median) | longest client outage s (median) | goal |",
        "|---|---|---|---|---|---|",
    ]
    for impl in impls:
        samples = row.samples.get(impl)
        if not samples:
            continue
        values = [s.value for s in samples]
        dual = (
            f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
            if values
            else "n/a"
        )
        promoted = f"{sum(1 for s in samples if s.promoted)} of {len(samples)}"
        refused = median_of([float(s.refused) for s in samples if s.refused is not None])
        outage = median_of([s.outage for s in samples])
        if impl.startswith("vipd+"):
            goal = "0.000: " + ("yes" if max(values) == 0.0 else "NO")
        elif impl == "keepalived":
            goal = "- (anchor: 5.0 s)"
        else:
            goal = "- (no fencing)"
        lines.append(
            f"| {impl} | {dual} | {promoted} | {'-' if refused is None else f'{refused:g}'} "
            f"| {_seconds(outage)} | {goal} |"
        )
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _signed(seconds: float) -> str:
    return f"{seconds * 1000:+.0f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "not back by the end"
    return f"{value:.2f}"


def release_note(rows: list[Row]) -> list[str]:
    """Findings, when the data show them: SIGTERM runs whose backup was refused after the
    fault, either briefly (its request overtook the release) or for the rest of the lease."""
    notes = []
    for row in rows:
        if row.scenario != "sigterm":
            continue
        for impl, samples in row.samples.items():
            if not impl.startswith("vipd+"):
                continue
            slow = [s for s in samples if s.ttl and s.value >= s.ttl / 2]
            raced = [s for s in samples if s.refused and s not in slow]
            where = f"{impl}, sigterm at {row.interval:g} s"
            if slow:
                notes.append(
                    f"  - **{where}: in {len(slow)} of {len(samples)} runs n2 waited for n1's"
                    " lease to expire at the witness** instead of taking over on the release"
                    " (fencing.md L2 not met)."
                )
            if raced:
                notes.append(
                    f"  - {where}: in {len(raced)} of {len(samples)} runs n2's first request"
                    " reached the witness before n1's release and was refused; after a"
                    " priority-0 advert n2 asks again a quarter advert interval later"
                    " (`Machine.lease_refused`), not when the lease would run out."
                )
    return notes


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Revision:
    """The commit vipd ran from, whether vipd/ had uncommitted changes (other engineers work in
    the same tree), and the code that actually ran: a hash of every vipd/**/*.py."""

    head: str
    dirty: bool
    files: dict[str, str]

    @classmethod
    def now(cls) -> Revision:
        def git(*argv: str) -> str:
            proc = subprocess.run(
                ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=False
            )
            return proc.stdout.strip()

        files = {
            str(path.relative_to(REPO)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((REPO / "vipd").rglob("*.py"))
        }
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        return cls(head, bool(git("status", "--porcelain", "--", "vipd")), files)

    def describe(self) -> str:
        digest = hashlib.sha256(repr(sorted(self.files.items())).encode()).hexdigest()[:12]
        dirty = " + uncommitted changes in vipd/" if self.dirty else ""
        return f"{self.head}{dirty} (code hash {digest})"

    def changed(self, later: Revision) -> list[str]:
        return sorted(
            f
            for f in self.files.keys() | later.files.keys()
            if self.files.get(f) != later.files.get(f)
        )


def revision_line(before: Revision, after: Revision) -> str:
    changed = before.changed(after)
    if not changed:
        return f"- vipd: {before.describe()}, unchanged during the run"
    return (
        f"- vipd: {before.describe()} at the start, {after.describe()} at the end; changed"
        f" during the run (other engineers' commits): {', '.join(changed)}"
    )


def etcd_version() -> str:
    proc = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def raw_lines(rows: list[Row], impls: list[str]) -> list[str]:
    out = []
    for row in rows:
        for impl in impls:
            samples = row.samples.get(impl)
            if not samples:
                continue
            parts = []
            for s in samples:
                if row.scenario == "partition":
                    text = f"{s.value:.3f} s dual, outage {_seconds(s.outage)} s"
                    if s.refused is not None:
                        text += f", {s.refused} refusals"
                else:
                    text = fmt_ms(s.value)
                    if s.rtt is not None:
                        text += f" (rtt {s.rtt * 1000:.1f}, ttl {s.ttl:.3g}, refused {s.refused})"
                parts.append(text)
            out.append(f"- {row.scenario}, {row.interval:g} s, {impl}: {'; '.join(parts)}")
    return out


@dataclass
class RunInfo:
    command: str
    impls: list[str]
    runs: dict[float, int]
    partition_runs: int
    elapsed: float
    load_before: str
    load_after: str
    revision_before: Revision
    revision_after: Revision
    args: argparse.Namespace


def write_markdown(
    path: Path, failover_rows: list[Row], partition: Row | None, info: RunInfo
) -> None:
    a = info.args
    runs_text = ", ".join(f"{n} at {i:g} s" for i, n in info.runs.items())
    heartbeat = max(1, a.etcd_election_ms // 10)
    min_ttl = min_lease_ttl(heartbeat, a.etcd_election_ms)
    mdi = {i: master_down_interval(i) for i in info.runs}
    n1_mdi = {i: master_down_interval(i, 150) for i in info.runs}
    etcd_ttls = ", ".join(
        f"{v:.2f} s -> {max(min_ttl, math.ceil(v))} s at {i:g} s" for i, v in n1_mdi.items()
    )
    text = [
        "# Fencing benchmark: vipd with and without a witness, and keepalived",
        "",
        "Generated by `benchmarks/fencing.py`; do not edit the numbers by hand.",
        "",
        "```",
        info.command,
        "```",
        "",
        *machine(),
        revision_line(info.revision_before, info.revision_after),
        f"- net.ipv4.ip_forward on the machine: {machine_forwarding()}; switched off on the"
        " lab's nodes (see the sigterm note)",
        f"- etcd: {etcd_version()}, single node on the witness host, heartbeat {heartbeat} ms,"
        f" election timeout {a.etcd_election_ms} ms (minimum lease TTL {min_ttl} s)",
        f"- load average (1/5/15 min) before: {info.load_before}; after: {info.load_after}"
        " (2 cores shared with other test runs)",
        f"- runs per failover cell: {runs_text}; partition: {info.partition_runs} per"
        f" implementation; whole run took {info.elapsed / 60:.1f} min",
        "",
        "## Failover: client-visible outage",
        "",
        failover_table(failover_rows, info.impls),
        "",
        "Milliseconds of client-visible outage, measured exactly as in",
        "[benchmarks-failover.md](benchmarks-failover.md) (benchmarks/failover.py's `measure`):",
        "the longest gap between two successful TCP probe attempts (a new connection to the VIP",
        "every 10 ms, 200 ms timeout) from the last success before the fault to the first one",
        "answered by n2; the client's neighbour entries stay REACHABLE for 4 hours, so it",
        "follows the VIP only when n2 announces it. Faults are applied "
        f"{a.steady:g} s after convergence, right after the",
        "client received one of n1's adverts (the worst-case phase, the same for everyone).",
        "",
        "- `kill+cut`: SIGKILL of n1 (keepalived: parent and VRRP child) and its switch port",
        "  taken down. Without a witness n2 promotes when its Master_Down_Interval runs out"
        f" ({', '.join(f'{fmt_ms(v)} ms at {i:g} s' for i, v in mdi.items())});",
        "  with one it first asks the witness, which grants only once n1's lease has expired",
        "  there. n1's lease TTL is its own Master_Down_Interval (priority 150: shorter than",
        "  n2's), so with the embedded witness the lease is gone when n2 asks and the",
        "  promotion costs one round trip. etcd leases are whole seconds and at least",
        f"  {min_ttl} s here, so n1's TTL becomes {etcd_ttls};",
        "  n2's first request is refused, and it retries when etcd says the lease runs out",
        "  (etcd reports whole seconds, rounded up): the etcd rows show that higher floor.",
        "- `sigterm`: planned handover. n1 sends a priority-0 advert and (fenced) releases its",
        "  lease; n2 waits Skew_Time, then asks for the lease, which is free. The nodes run",
        "  with IP forwarding off: a node that forwards (lab namespaces inherit the machine's",
        "  setting) relays the client's SYNs for the VIP after dropping it, holding them in its",
        "  ARP queue until n2 appears, so a probe attempt started up to 200 ms before n2's",
        "  takeover still succeeds and the start-time gap shrinks by that much (with forwarding",
        "  on, failover.py measures ~430 ms at 1 s for both vipd and keepalived, not ~620).",
        "- witness rtt: `rtt` from n2's `vipctl status --json` (the round trip of its last",
        "  witness request), read the first time n2's status shows it master (polled every",
        "  20 ms from the fault on), so it is the round trip of the request that was granted:",
        "  it includes the embedded witness writing and fsyncing its state file (a grant to a",
        "  new holder is durable before the reply), and for etcd a lease grant plus a",
        "  transaction. A renewal's round trip, which `rtt` shows later, is shorter. Median",
        "  over the runs.",
        "- lease TTL applied: the `ttl` of n2's `lease-granted` log event (what the witness",
        "  granted; etcd rounds up).",
        "- n2 refused: how many of n2's lease requests the witness refused between the fault",
        "  and the grant (median). After a kill the embedded witness's lease has run out when",
        "  n2 asks; etcd's has not (see above). After a SIGTERM a refusal means n1's release",
        "  had not reached the witness yet when n2 asked.",
        *release_note(failover_rows),
        "- goal (fencing.md L1): the fenced median at most the unfenced vipd median + the",
        "  median witness rtt + 50 ms; budget in ms. Judged at this phase only (right after an",
        "  advert, the worst case for VRRP's timer). n1's lease at the witness runs out TTL",
        "  after its last *renewal*, which is not tied to its adverts: a crash just after a",
        "  renewal that lags the last advert can make the fenced takeover slower than the",
        "  unfenced one for the same crash instant (see docs/fencing.md).",
        "- ratio: keepalived median / this median (> 1: faster than keepalived).",
        "",
    ]
    if partition is not None:
        text += [
            f"## Node-to-node partition ({a.partition_seconds:g} s,"
            f" advert {partition.interval:g} s)",
            "",
            partition_table(partition, info.impls),
            "",
            f"n1 and n2 cannot exchange any frame for {a.partition_seconds:g} s"
            " (`Lab.partition`: an",
            "nftables drop in the lab switch, both directions); both still reach the client and",
            "the witness. The partition starts right after one of n1's adverts. Dual-holder",
            "seconds: a thread samples every 20 ms which nodes carry the VIP on eth0",
            "(`HolderMonitor`, the same monitor for keepalived) and adds the time from each",
            f"sample that saw both to the next sample, from the partition to {SETTLE:g} s after n1",
            "alone holds the VIP again after the heal. Longest client outage: the longest gap",
            "between probe successes from the partition on (`not back by the end`: the client",
            "still reached nobody when the run ended, e.g. its ARP entry kept pointing at a node",
            "that dropped the VIP without anyone announcing the other).",
            "",
            "- Without a witness (vipd and keepalived alike) n2 stops hearing n1, promotes after",
            "  its Master_Down_Interval and holds the VIP beside n1 until the heal lets it hear",
            "  n1 again: dual-holder time = partition - Master_Down_Interval + up to one advert.",
            "- With a witness n2's timer still fires, but the witness refuses it (n1 keeps",
            "  renewing), so n2 stays backup and asks again when n1's lease would run out",
            "  (fencing.md S6).",
            "",
        ]
    text += [
        "## Raw samples",
        "",
        "Failover: outage ms (witness rtt ms, TTL s). Partition: dual-holder s, longest outage.",
        "",
        *raw_lines([*failover_rows, *([partition] if partition else [])], info.impls),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


# --------------------------------------------------------------------------- #
# Driver                                                                       #
# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per failover cell (default: 4 for intervals below 1 s, 3 otherwise)",
    )
    parser.add_argument(
        "--partition-runs", type=int, default=2, help="runs per implementation (default 2)"
    )
    parser.add_argument("--intervals", type=parse_intervals, default=[1.0, 0.1])
    parser.add_argument(
        "--scenarios",
        default=",".join((*FAILOVER_SCENARIOS, "partition")),
        help="kill+cut,sigterm,partition (default: all)",
    )
    parser.add_argument("--impls", default=",".join(IMPLS), help="default: %(default)s")
    parser.add_argument(
        "--partition-seconds", type=float, default=PARTITION_SECONDS, help="default %(default)s"
    )
    parser.add_argument(
        "--partition-interval",
        type=float,
        default=PARTITION_INTERVAL,
        help="advert interval for the partition scenario (default %(default)s)",
    )
    parser.add_argument(
        "--etcd-election-ms",
        type=int,
        default=1000,
        help="etcd election timeout (heartbeat: a tenth); default %(default)s, etcd's own",
    )
    parser.add_argument(
        "--steady",
        type=float,
        default=STEADY,
        help="seconds between convergence and the fault (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks-fencing.md"))
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the labs, daemons and CPU hogs are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces)")
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in (*FAILOVER_SCENARIOS, "partition"):
            parser.error(f"unknown scenario {s!r}")
    impls = [i for i in args.impls.split(",") if i]
    for i in impls:
        if i not in IMPLS:
            parser.error(f"unknown implementation {i!r}; known: {', '.join(IMPLS)}")
    if args.etcd_election_ms < 50:
        parser.error("--etcd-election-ms must be at least 50")
    runs = {
        i: args.runs if args.runs is not None else (4 if i < 1.0 else 3) for i in args.intervals
    }
    command = shlex.join(["python", "benchmarks/fencing.py", *sys.argv[1:]])

    failover_rows = [
        Row(s, i, {impl: [] for impl in impls})
        for i in args.intervals
        for s in scenarios
        if s in FAILOVER_SCENARIOS
    ]
    partition = (
        Row("partition", args.partition_interval, {impl: [] for impl in impls})
        if "partition" in scenarios
        else None
    )
    load_before, revision_before = load(), Revision.now()
    started = time.monotonic()
    total = max([*runs.values(), args.partition_runs if partition else 0])
    for run in range(total):
        cells = [(row, runs[row.interval]) for row in failover_rows]
        if partition is not None:
            cells.append((partition, args.partition_runs))
        for row, n in cells:
            if run >= n:
                continue
            for impl in impls:  # interleaved, so slow phases of the machine hit everyone
                t0 = time.monotonic()
                sample = one_run(impl, row.interval, row.scenario, args)
                row.samples[impl].append(sample)
                unit = "dual" if row.scenario == "partition" else "outage"
                value = (
                    f"{sample.value:.3f} s"
                    if row.scenario == "partition"
                    else f"{fmt_ms(sample.value)} ms"
                )
                extra = "" if sample.rtt is None else f" rtt {sample.rtt * 1000:.1f} ms"
                print(
                    f"run {run + 1}/{n} {row.scenario:9} {row.interval:g}s {impl:13} "
                    f"{unit} {value:>8}{extra} ({time.monotonic() - t0:.1f} s, load {load()})",
                    flush=True,
                )
    elapsed = time.monotonic() - started
    info = RunInfo(
        command,
        impls,
        runs,
        args.partition_runs if partition else 0,
        elapsed,
        load_before,
        load(),
        revision_before,
        Revision.now(),
        args,
    )
    print()
    if failover_rows:
        print(failover_table(failover_rows, impls))
    if partition is not None:
        print()
        print(partition_table(partition, impls))
    write_markdown(args.out, failover_rows, partition, info)
    print(f"\nwrote {args.out} ({elapsed / 60:.1f} min; load {load_before} -> {info.load_after})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
