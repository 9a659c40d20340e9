"""Prometheus metrics, read from the daemon's status at scrape time.

Nothing in the daemon updates a metric: :class:`Metrics` holds a callable that returns the same
dict as ``Daemon.status()`` (what ``vipctl status --json`` prints), and its collector turns that
into metric families whenever Prometheus scrapes. So the numbers cannot drift from the status,
and the hot path (adverts) pays nothing for metrics.

The HTTP endpoint runs on a thread (:func:`start_http`); the status is built by the asyncio
loop that owns the daemon's state when the source is wrapped with :func:`on_loop`.

What is read, per instance (``status["instances"][i]``), labelled ``instance=<name>``:

- ``state``: ``vipd_instance_state{state=...}``, 1 for the current state, 0 for the others;
- ``priority``, ``effective_priority``, ``master_priority`` (when not null):
  ``vipd_instance_priority``, ``vipd_instance_effective_priority``,
  ``vipd_instance_master_priority``; ``vrid`` and ``interface`` label ``vipd_instance_info``;
- counters ``transition:<reason>``: ``vipd_transitions_total{reason=...}``; if the plain
  ``transitions`` counter is larger than their sum, the rest is ``reason="other"``;
- counters ``adverts_sent``, ``adverts_received``, ``announcements``, ``send_errors``,
  ``vip_errors``, ``neighbours_flushed``, ``neighbour_errors``: ``vipd_<name>_total``;
- counters ``drop:<reason>``: ``vipd_advert_drops_total{reason=...}``;
- counters ``hook:<outcome>`` (notify hooks: ``ok``, ``failed``, ``timed-out``):
  ``vipd_hook_runs_total{outcome=...}``;
- ``trackers`` (docs/tracking.md), labelled ``tracker=<name>`` and ``kind=...``:
  ``vipd_tracker_ok`` (1 OK, 0 failed; left out before the first result),
  ``vipd_tracker_adjustment`` (what it adds to the priority now), ``vipd_tracker_fault`` (1 if
  it keeps the instance in FAULT), ``vipd_tracker_checks_total``,
  ``vipd_tracker_failed_checks_total``;
- counters ``lease:<event>``, ``peer:<event>``, ``fence:<event>``, ``witness:<event>``:
  ``vipd_lease_events_total``, ``vipd_peer_events_total``, ``vipd_fence_events_total``,
  ``vipd_witness_events_total``, each with ``event=...`` (e.g. ``lease:granted``,
  ``lease:refused``, ``lease:lost-<reason>``, ``peer:pings-sent``, ``fence:failed``);
- any other counter ``<name>``: ``vipd_events_total{event=<name>}``, so a new counter shows up
  without a change here.

The ``witness`` sub-dict of a fenced instance (``Daemon._lease_status``; null otherwise), every
key optional: ``lease``, ``policy`` and ``backend`` (labels of ``vipd_witness_info``), ``state``
(``vipd_witness_lease_state{state=...}`` 1 / 0 over idle, acquiring, held, and
``vipd_witness_lease_held``), ``epoch`` (``vipd_witness_epoch``), ``remaining`` (seconds this
node may still act on the lease, ``vipd_witness_hold_remaining_seconds``), ``lease_remaining``
(seconds until the lease runs out by this node's conservative clock,
``vipd_witness_lease_remaining_seconds``), ``ttl`` (``vipd_witness_lease_ttl_seconds``), ``rtt``
(last request's round trip, ``vipd_witness_round_trip_seconds``), ``counters`` (a dict, as
``vipd_witness_events_total{event=...}``), and any other number ``<key>`` as the gauge
``vipd_witness_<key>``. Null values are left out.

Sync groups (``status["groups"]``): ``vipd_group_state{group=...,state=...}``, 1 for the group's
state (MASTER, BACKUP, FAULT, STOP), 0 for the others.

Daemon-wide: ``vipd_up`` (1 when the status could be read), ``vipd_node_info{node=...}``,
``vipd_uptime_seconds``, ``drops`` as ``vipd_unattributed_drops_total{reason=...}`` (packets no
instance could be found for), and the standard ``process_*`` metrics of this process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Metrics",
    "MetricsServer",
    "StatusSource",
    "on_loop",
    "start_http",
]

log = logging.getLogger(__name__)

#: Loopback by default: the status reveals topology; expose it deliberately.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9650

StatusSource = Callable[[], Mapping[str, Any]]

STATES = ("initialize", "backup", "master", "fault")
GROUP_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")

# counter prefix -> (metric name, label name, help)
_PREFIXED: dict[str, tuple[str, str, str]] = {
    "transition": ("vipd_transitions", "reason", "VRRP state transitions, by reason."),
    "drop": ("vipd_advert_drops", "reason", "Received adverts dropped, by reason."),
    "lease": ("vipd_lease_events", "event", "Witness lease events (grants, refusals, ...)."),
    "peer": ("vipd_peer_events", "event", "Peer channel events (pings, confirmations)."),
    "fence": ("vipd_fence_events", "event", "Fencing events."),
    "witness": ("vipd_witness_events", "event", "Witness client events."),
    "hook": ("vipd_hook_runs", "outcome", "Notify hook runs, by outcome."),
}
# plain counter -> (metric name, help)
_PLAIN: dict[str, tuple[str, str]] = {
    "adverts_sent": ("vipd_adverts_sent", "VRRP adverts sent."),
    "adverts_received": ("vipd_adverts_received", "VRRP adverts received and accepted."),
    "announcements": ("vipd_announcements", "VIP announcement bursts (GARP / unsolicited NA)."),
    "send_errors": ("vipd_send_errors", "Adverts that could not be sent."),
    "vip_errors": ("vipd_vip_errors", "Netlink failures adding or removing a VIP."),
    "neighbours_flushed": (
        "vipd_neighbours_flushed",
        "Stuck unresolved neighbour entries deleted as the VIP is announced.",
    ),
    "neighbour_errors": ("vipd_neighbour_errors", "Netlink failures flushing neighbour entries."),
}
_WITNESS_GAUGES: dict[str, tuple[str, str]] = {
    "rtt": ("vipd_witness_round_trip_seconds", "Round trip of the last witness request."),
    "round_trip": ("vipd_witness_round_trip_seconds", "Round trip of the last witness request."),
    "remaining": (
        "vipd_witness_hold_remaining_seconds",
        "Seconds this node may still act on its lease.",
    ),
    "lease_remaining": (
        "vipd_witness_lease_remaining_seconds",
        "Seconds until this node's lease runs out, by its own conservative clock.",
    ),
    "ttl": ("vipd_witness_lease_ttl_seconds", "Lease TTL asked of the witness."),
    "epoch": ("vipd_witness_epoch", "Epoch of the lease this node holds."),
    "held": ("vipd_witness_lease_held", "1 if this node holds the lease."),
    "reachable": ("vipd_witness_reachable", "1 if the witness answered recently."),
}
_WITNESS_LABELS = ("lease", "policy", "backend")
LEASE_STATES = ("idle", "acquiring", "held")
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number (bools count as 0/1), else None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class _Families:
    """Metric families created on first use, so that absent data yields no empty families,
    and every sample of one name lands in one family (a family name may appear only once).

    Status keys are free-form, so two of them may map to one sample (``witness.counters.x``
    and counter ``witness:x``) or to one name with other labels: the first sample wins and the
    rest are dropped, so an exposition never carries duplicates Prometheus would reject.
    """

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        self._labels: dict[str, tuple[str, ...]] = {}
        self._seen: set[tuple[str, tuple[str, ...]]] = set()

    def _family(
        self,
        kind: type[GaugeMetricFamily | CounterMetricFamily],
        name: str,
        doc: str,
        labels: Mapping[str, str],
    ) -> GaugeMetricFamily | CounterMetricFamily | None:
        key = name + "_total" if kind is CounterMetricFamily else name
        names = tuple(labels)
        family = self._families.get(key)
        if family is None:
            family = self._families[key] = kind(name, doc, labels=list(names))
            self._labels[key] = names
        elif self._labels[key] != names or not isinstance(family, kind):
            return None
        sample = (key, tuple(labels.values()))
        if sample in self._seen:
            return None
        self._seen.add(sample)
        return family

    def gauge(self, name: str, doc: str, labels: Mapping[str, str], value: float) -> None:
        family = self._family(GaugeMetricFamily, name, doc, labels)
        if family is not None:
            family.add_metric(list(labels.values()), value)

    def counter(self, name: str, doc: str, labels: Mapping[str, str], value: float) -> None:
        family = self._family(CounterMetricFamily, name, doc, labels)
        if family is not None:
            # add_metric would also emit a _created sample; a status has no creation time.
            family.samples.append(Sample(name + "_total", dict(labels), value))

    def __iter__(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(self._families.values())


class StatusCollector(Collector):
    """Turns one status dict into metric families at every scrape."""

    def __init__(self, source: StatusSource) -> None:
        self._source = source

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering must not call the source (the daemon may not be running yet).
        return []

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        out = _Families()
        try:
            status = self._source()
        except Exception as exc:
            # A scrape must still answer: vipd_up 0 is the signal, not an HTTP 500.
            log.warning("metrics: cannot read status: %s", exc)
            out.gauge("vipd_up", "1 if the daemon's status could be read.", {}, 0.0)
            return out
        out.gauge("vipd_up", "1 if the daemon's status could be read.", {}, 1.0)
        self._daemon(out, status)
        for inst in status.get("instances", []):
            self._instance(out, inst)
        for group in status.get("groups") or []:
            StatusCollector._group(out, group)
        return out

    @staticmethod
    def _group(out: _Families, group: Mapping[str, Any]) -> None:
        state = group.get("state")
        if not isinstance(state, str):
            return
        for s in (*GROUP_STATES, *([state] if state not in GROUP_STATES else [])):
            out.gauge(
                "vipd_group_state",
                "1 for the sync group's current state, 0 for the others.",
                {"group": str(group.get("name", "")), "state": s},
                1.0 if s == state else 0.0,
            )

    @staticmethod
    def _trackers(out: _Families, lab: dict[str, str], trackers: Iterable[Any]) -> None:
        for t in trackers:
            if not isinstance(t, Mapping):
                continue
            labels = {**lab, "tracker": str(t.get("name", "")), "kind": str(t.get("kind", ""))}
            for key, metric, doc in (
                ("ok", "vipd_tracker_ok", "1 if the tracker is OK, 0 if it has failed."),
                ("adjustment", "vipd_tracker_adjustment", "What the tracker adds to priority."),
                ("fault", "vipd_tracker_fault", "1 if the tracker keeps the instance in FAULT."),
            ):
                value = _number(t.get(key))
                if value is not None:
                    out.gauge(metric, doc, labels, value)
            for key, metric, doc in (
                ("checks", "vipd_tracker_checks", "Checks run by the tracker."),
                ("failed_checks", "vipd_tracker_failed_checks", "Checks that failed."),
            ):
                value = _number(t.get(key))
                if value is not None:
                    out.counter(metric, doc, labels, value)

    @staticmethod
    def _daemon(out: _Families, status: Mapping[str, Any]) -> None:
        node = status.get("node")
        if node is not None:
            out.gauge("vipd_node_info", "The node's name.", {"node": str(node)}, 1.0)
        uptime = _number(status.get("uptime"))
        if uptime is not None:
            out.gauge("vipd_uptime_seconds", "Seconds since the daemon started.", {}, uptime)
        for reason, count in sorted((status.get("drops") or {}).items()):
            out.counter(
                "vipd_unattributed_drops",
                "Received VRRP packets no instance could be found for, by reason.",
                {"reason": str(reason)},
                float(count),
            )

    @staticmethod
    def _instance(out: _Families, inst: Mapping[str, Any]) -> None:
        name = str(inst.get("name", ""))
        lab = {"instance": name}
        out.gauge(
            "vipd_instance_info",
            "Static facts about an instance.",
            {**lab, "vrid": str(inst.get("vrid", "")), "interface": str(inst.get("interface", ""))},
            1.0,
        )
        state = inst.get("state")
        if state is not None:
            for s in (*STATES, *([state] if state not in STATES else [])):
                out.gauge(
                    "vipd_instance_state",
                    "1 for the instance's current VRRP state, 0 for the others.",
                    {**lab, "state": str(s)},
                    1.0 if s == state else 0.0,
                )
        for key, metric, doc in (
            ("priority", "vipd_instance_priority", "Configured VRRP priority."),
            (
                "effective_priority",
                "vipd_instance_effective_priority",
                "Priority advertised now (255 as address owner, 0 when releasing, ...).",
            ),
            ("master_priority", "vipd_instance_master_priority", "Priority the master adverts."),
        ):
            value = _number(inst.get(key))
            if value is not None:
                out.gauge(metric, doc, lab, value)

        counters: Mapping[str, Any] = inst.get("counters") or {}
        per_reason = 0.0
        for key, raw in sorted(counters.items()):
            value = _number(raw)
            if value is None:
                continue
            prefix, sep, rest = key.partition(":")
            if sep and prefix in _PREFIXED:
                metric, label, doc = _PREFIXED[prefix]
                out.counter(metric, doc, {**lab, label: rest}, value)
                if prefix == "transition":
                    per_reason += value
            elif key in _PLAIN:
                metric, doc = _PLAIN[key]
                out.counter(metric, doc, lab, value)
            elif key != "transitions":
                out.counter(
                    "vipd_events",
                    "Other per-instance event counters.",
                    {**lab, "event": key},
                    value,
                )
        total = _number(counters.get("transitions"))
        if total is not None and total > per_reason:
            doc = _PREFIXED["transition"][2]
            out.counter("vipd_transitions", doc, {**lab, "reason": "other"}, total - per_reason)

        trackers = inst.get("trackers")
        if isinstance(trackers, list):
            StatusCollector._trackers(out, lab, trackers)

        witness = inst.get("witness")
        if isinstance(witness, Mapping):
            StatusCollector._witness(out, lab, witness)

    @staticmethod
    def _witness(out: _Families, lab: dict[str, str], witness: Mapping[str, Any]) -> None:
        info = {k: str(witness[k]) for k in _WITNESS_LABELS if isinstance(witness.get(k), str)}
        out.gauge("vipd_witness_info", "The instance's lease and witness.", {**lab, **info}, 1.0)
        state = witness.get("state")
        if isinstance(state, str):
            for s in (*LEASE_STATES, *([state] if state not in LEASE_STATES else [])):
                out.gauge(
                    "vipd_witness_lease_state",
                    "1 for the lease's current state, 0 for the others.",
                    {**lab, "state": s},
                    1.0 if s == state else 0.0,
                )
            if "held" not in witness:
                doc = _WITNESS_GAUGES["held"][1]
                out.gauge("vipd_witness_lease_held", doc, lab, 1.0 if state == "held" else 0.0)
        for key, raw in sorted(witness.items()):
            if key == "counters" and isinstance(raw, Mapping):
                for event, count in sorted(raw.items()):
                    n = _number(count)
                    if n is not None:
                        doc = _PREFIXED["witness"][2]
                        out.counter("vipd_witness_events", doc, {**lab, "event": str(event)}, n)
                continue
            value = _number(raw)
            if value is None:
                continue
            if key in _WITNESS_GAUGES:
                metric, doc = _WITNESS_GAUGES[key]
            else:
                metric, doc = "vipd_witness_" + _NAME_UNSAFE.sub("_", key), f"Witness {key}."
            out.gauge(metric, doc, lab, value)  # round_trip and rtt both there: first wins


class Metrics:
    """A registry of vipd's metrics (not the global one), fed by ``source`` at scrape time.

    ``source`` returns a ``Daemon.status()``-shaped dict. It is called on the scraping thread;
    wrap it with :func:`on_loop` to run it on the daemon's event loop instead.
    """

    def __init__(self, source: StatusSource, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StatusCollector(source)
        self.registry.register(self.collector)
        if process:
            ProcessCollector(registry=self.registry)


def on_loop(
    loop: asyncio.AbstractEventLoop, source: StatusSource, timeout: float = 2.0
) -> StatusSource:
    """Wrap ``source`` so a call from another thread runs it on ``loop`` and waits for it.

    The daemon's state is only consistent on its loop; a loop that cannot answer within
    ``timeout`` makes the scrape report ``vipd_up 0`` (which is itself worth alerting on).
    """

    async def call() -> Mapping[str, Any]:
        return source()

    def threaded() -> Mapping[str, Any]:
        future = asyncio.run_coroutine_threadsafe(call(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"event loop did not answer within {timeout} s") from None

    return threaded


@dataclass
class MetricsServer:
    """A running /metrics endpoint; ``port`` is the bound one (useful when asked for port 0)."""

    host: str
    port: int
    _server: Any
    _thread: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_http(
    metrics: Metrics, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` from a daemon thread.

    Bound to loopback unless told otherwise. Port 0 picks a free port (see ``.port``).
    """
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    bound = server.server_address[1]
    log.info("metrics: serving on %s:%d", host, bound)
    return MetricsServer(host, int(bound), server, thread)
