"""Metrics for tracking: tracker gauges and counters, hook outcomes, the FAULT state, groups."""

from __future__ import annotations

from typing import Any

from vipd.metrics import Metrics

from ..test_metrics import samples, value

STATUS: dict[str, Any] = {
    "node": "lb1",
    "instances": [
        {
            "name": "web",
            "interface": "eth0",
            "vrid": 51,
            "state": "fault",
            "priority": 150,
            "effective_priority": 90,
            "fault": "track:nginx",
            "counters": {
                "transitions": 2,
                "transition:track:nginx": 1,
                "transition:startup": 1,
                "hook:ok": 3,
                "hook:timed-out": 1,
            },
            # The shape of TrackerRunner.status.
            "trackers": [
                {
                    "name": "nginx",
                    "kind": "script",
                    "ok": False,
                    "weight": 0,
                    "adjustment": 0,
                    "fault": True,
                    "last_error": "timed out after 5 s (process group killed)",
                    "checks": 20,
                    "failed_checks": 2,
                },
                {
                    "name": "http://127.0.0.1:8080/health",
                    "kind": "http",
                    "ok": None,
                    "weight": -60,
                    "adjustment": -60,
                    "fault": False,
                    "last_error": None,
                    "checks": 0,
                    "failed_checks": 0,
                },
            ],
        }
    ],
    "groups": [
        {"name": "edge", "instances": ["web", "api"], "state": "FAULT"},
        {"name": "new", "instances": ["x"], "state": None},
    ],
}


def test_tracking_metrics() -> None:
    got = samples(Metrics(lambda: STATUS))
    web = {"instance": "web"}
    assert value(got, "vipd_instance_state", state="fault", **web) == 1
    assert value(got, "vipd_instance_state", state="master", **web) == 0
    assert value(got, "vipd_transitions_total", reason="track:nginx", **web) == 1
    assert value(got, "vipd_hook_runs_total", outcome="ok", **web) == 3
    assert value(got, "vipd_hook_runs_total", outcome="timed-out", **web) == 1

    nginx = {**web, "tracker": "nginx", "kind": "script"}
    assert value(got, "vipd_tracker_ok", **nginx) == 0
    assert value(got, "vipd_tracker_fault", **nginx) == 1
    assert value(got, "vipd_tracker_adjustment", **nginx) == 0
    assert value(got, "vipd_tracker_checks_total", **nginx) == 20
    assert value(got, "vipd_tracker_failed_checks_total", **nginx) == 2
    http = {**web, "tracker": "http://127.0.0.1:8080/health", "kind": "http"}
    assert ("vipd_tracker_ok", frozenset(http.items())) not in got  # no result yet
    assert value(got, "vipd_tracker_adjustment", **http) == -60

    assert value(got, "vipd_group_state", group="edge", state="FAULT") == 1
    assert value(got, "vipd_group_state", group="edge", state="MASTER") == 0
    assert not any(("group", "new") in labels for _, labels in got)
