"""Metrics built from a status dict, rendered, parsed back; and a real HTTP scrape on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vipd.metrics import Metrics, on_loop, start_http

STATUS: dict[str, Any] = {
    "node": "lb1",
    "uptime": 12.5,
    "drops": {"unknown-vrid": 3},
    "instances": [
        {
            "name": "web",
            "interface": "eth0",
            "vrid": 51,
            "state": "master",
            "priority": 150,
            "effective_priority": 150,
            "vips": ["192.0.2.100/24"],
            "primary": "192.0.2.11",
            "master": "192.0.2.11",
            "master_priority": 150,
            "advert_interval": 100,
            "master_adver_interval": 100,
            "last_transition": None,
            "counters": {
                "adverts_sent": 40,
                "adverts_received": 2,
                "announcements": 5,
                "transitions": 3,
                "transition:master-down": 1,
                "transition:preempted": 1,
                "drop:bad-checksum": 4,
                "drop:ttl": 1,
                "lease:granted": 2,
                "lease:refused": 1,
                "peer:pings-sent": 12,
                "send_errors": 0,
                "some_new_counter": 7,
            },
            # The shape of Daemon._lease_status, plus keys a backend may add.
            "witness": {
                "lease": "web",
                "state": "held",
                "epoch": 17,
                "remaining": 1.25,
                "lease_remaining": 2.75,
                "policy": "hold-with-peer",
                "ttl": 3.0,
                "rtt": 0.0042,
                "backend": "embedded",
                "counters": {"grants": 2, "refusals": 1, "fences": 0},
                "clock_skew_bound": 0.01,
                "holder": "lb1",
            },
        },
        {
            "name": "db",
            "interface": "eth1",
            "vrid": 52,
            "state": "backup",
            "priority": 100,
            "effective_priority": 100,
            "master_priority": None,
            "counters": {"adverts_received": 9},
            "witness": None,
        },
    ],
}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def value(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return got[(name, frozenset(labels.items()))]


def test_status_to_metrics() -> None:
    got = samples(Metrics(lambda: STATUS))
    assert value(got, "vipd_up") == 1
    assert value(got, "vipd_node_info", node="lb1") == 1
    assert value(got, "vipd_uptime_seconds") == 12.5
    assert value(got, "vipd_unattributed_drops_total", reason="unknown-vrid") == 3

    web = {"instance": "web"}
    assert value(got, "vipd_instance_info", vrid="51", interface="eth0", **web) == 1
    assert value(got, "vipd_instance_state", state="master", **web) == 1
    assert value(got, "vipd_instance_state", state="backup", **web) == 0
    assert value(got, "vipd_instance_state", state="initialize", **web) == 0
    assert value(got, "vipd_instance_state", state="backup", instance="db") == 1
    assert value(got, "vipd_instance_priority", **web) == 150
    assert value(got, "vipd_instance_effective_priority", instance="db") == 100
    assert value(got, "vipd_instance_master_priority", **web) == 150
    assert ("vipd_instance_master_priority", frozenset({("instance", "db")})) not in got

    assert value(got, "vipd_adverts_sent_total", **web) == 40
    assert value(got, "vipd_adverts_received_total", **web) == 2
    assert value(got, "vipd_adverts_received_total", instance="db") == 9
    assert value(got, "vipd_announcements_total", **web) == 5
    assert value(got, "vipd_send_errors_total", **web) == 0
    assert value(got, "vipd_advert_drops_total", reason="bad-checksum", **web) == 4
    assert value(got, "vipd_advert_drops_total", reason="ttl", **web) == 1
    # 3 transitions, 2 with a per-reason counter: the third is "other".
    assert value(got, "vipd_transitions_total", reason="master-down", **web) == 1
    assert value(got, "vipd_transitions_total", reason="preempted", **web) == 1
    assert value(got, "vipd_transitions_total", reason="other", **web) == 1
    assert value(got, "vipd_lease_events_total", event="granted", **web) == 2
    assert value(got, "vipd_lease_events_total", event="refused", **web) == 1
    assert value(got, "vipd_events_total", event="some_new_counter", **web) == 7

    assert value(got, "vipd_peer_events_total", event="pings-sent", **web) == 12

    info = {"lease": "web", "policy": "hold-with-peer", "backend": "embedded"}
    assert value(got, "vipd_witness_info", **info, **web) == 1
    assert value(got, "vipd_witness_lease_state", state="held", **web) == 1
    assert value(got, "vipd_witness_lease_state", state="acquiring", **web) == 0
    assert value(got, "vipd_witness_lease_held", **web) == 1
    assert value(got, "vipd_witness_epoch", **web) == 17
    assert value(got, "vipd_witness_hold_remaining_seconds", **web) == 1.25
    assert value(got, "vipd_witness_lease_remaining_seconds", **web) == 2.75
    assert value(got, "vipd_witness_lease_ttl_seconds", **web) == 3.0
    assert value(got, "vipd_witness_round_trip_seconds", **web) == pytest.approx(0.0042)
    assert value(got, "vipd_witness_events_total", event="grants", **web) == 2
    assert value(got, "vipd_witness_events_total", event="fences", **web) == 0
    assert value(got, "vipd_witness_clock_skew_bound", **web) == 0.01
    assert not any(name.startswith("vipd_witness") and ("instance", "db") in lb for name, lb in got)

    # Its own registry, with the process metrics of this process.
    assert value(got, "process_open_fds") > 0


def test_lease_not_held_leaves_out_nulls() -> None:
    status = {
        "instances": [
            {
                "name": "v",
                "state": "backup",
                "witness": {
                    "lease": "v",
                    "state": "idle",
                    "epoch": None,
                    "remaining": None,
                    "lease_remaining": None,
                    "policy": "release",
                    "ttl": 3.0,
                    "rtt": None,
                },
            }
        ]
    }
    got = samples(Metrics(lambda: status, process=False))
    assert value(got, "vipd_witness_lease_state", instance="v", state="idle") == 1
    assert value(got, "vipd_witness_lease_held", instance="v") == 0
    assert value(got, "vipd_witness_lease_ttl_seconds", instance="v") == 3.0
    present = {name for name, _ in got}
    assert "vipd_witness_epoch" not in present
    assert "vipd_witness_round_trip_seconds" not in present


def test_per_reason_transitions_only_no_other() -> None:
    status = {
        "instances": [
            {"name": "v", "state": "backup", "counters": {"transitions": 2, "transition:x": 2}}
        ]
    }
    got = samples(Metrics(lambda: status, process=False))
    assert value(got, "vipd_transitions_total", instance="v", reason="x") == 2
    assert (
        "vipd_transitions_total",
        frozenset({("instance", "v"), ("reason", "other")}),
    ) not in got


def test_colliding_keys_never_duplicate_a_sample() -> None:
    status = {
        "instances": [
            {
                "name": "v",
                "counters": {"witness:grants": 4},
                "witness": {
                    "counters": {"grants": 5},
                    "round_trip": 0.5,
                    "rtt": 0.7,
                    "info": 3,  # would be vipd_witness_info, which has a backend label
                    "backend": "etcd",
                },
            }
        ]
    }
    got = samples(Metrics(lambda: status, process=False))  # asserts no duplicates
    assert value(got, "vipd_witness_events_total", instance="v", event="grants") == 4
    assert value(got, "vipd_witness_round_trip_seconds", instance="v") == 0.5
    assert value(got, "vipd_witness_info", instance="v", backend="etcd") == 1
    assert ("vipd_witness_info", frozenset({("instance", "v")})) not in got


def test_unreadable_status_reports_down_not_an_error() -> None:
    def broken() -> dict[str, Any]:
        raise TimeoutError("loop wedged")

    got = samples(Metrics(broken, process=False))
    assert got == {("vipd_up", frozenset()): 0.0}


def test_registry_is_not_the_global_one() -> None:
    from prometheus_client import REGISTRY

    metrics = Metrics(lambda: STATUS, process=False)
    assert metrics.registry is not REGISTRY
    assert b"vipd_" not in generate_latest(REGISTRY)


def test_on_loop_runs_the_source_on_the_loop_thread() -> None:
    threads: list[threading.Thread] = []

    def source() -> dict[str, Any]:
        threads.append(threading.current_thread())
        return STATUS

    async def main() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        metrics = Metrics(on_loop(asyncio.get_running_loop(), source), process=False)
        return await asyncio.to_thread(samples, metrics)

    got = asyncio.run(main())
    assert value(got, "vipd_up") == 1
    assert threads == [threading.main_thread()]


def test_on_loop_timeout_is_vipd_up_zero() -> None:
    result: list[dict[tuple[str, frozenset[tuple[str, str]]], float]] = []

    async def main() -> None:
        metrics = Metrics(on_loop(asyncio.get_running_loop(), lambda: STATUS, 0.2), process=False)
        scrape = threading.Thread(target=lambda: result.append(samples(metrics)))
        scrape.start()
        time.sleep(0.6)  # the loop is wedged for longer than the scrape waits
        scrape.join(5)

    asyncio.run(main())
    assert result == [{("vipd_up", frozenset()): 0.0}]


def test_http_scrape_on_loopback() -> None:
    server = start_http(Metrics(lambda: STATUS), port=0)
    try:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
    finally:
        server.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["vipd_instance_state"].type == "gauge"
    assert families["vipd_adverts_sent"].type == "counter"
    states = {
        (s.labels["instance"], s.labels["state"]): s.value
        for s in families["vipd_instance_state"].samples
    }
    assert states[("web", "master")] == 1
    assert states[("db", "master")] == 0
