"""vipctl status shows faults, trackers and groups under the table."""

from __future__ import annotations

from vipd.cli import _status_table


def test_status_table_lists_faults_trackers_and_groups() -> None:
    status = {
        "node": "lb1",
        "uptime": 3.0,
        "instances": [
            {
                "name": "web",
                "interface": "eth0",
                "vrid": 51,
                "state": "fault",
                "priority": 150,
                "effective_priority": 90,
                "vips": ["192.0.2.100/24"],
                "master": None,
                "master_priority": None,
                "last_transition": None,
                "fault": "track:nginx",
                "trackers": [
                    {
                        "name": "nginx",
                        "kind": "script",
                        "weight": 0,
                        "ok": False,
                        "last_error": "exit status 1",
                    },
                    {
                        "name": "eth1",
                        "kind": "interface",
                        "weight": -60,
                        "ok": True,
                        "last_error": "interface is down",
                    },
                    {"name": "up", "kind": "tcp", "weight": 5, "ok": None, "last_error": None},
                ],
            }
        ],
        "groups": [{"name": "edge", "instances": ["web", "api"], "state": "FAULT"}],
    }
    table = _status_table(status)
    assert "90/150" in table
    assert "web: in FAULT because of track:nginx" in table
    assert "web: tracker nginx (script, weight 0): FAILED: exit status 1" in table
    assert "web: tracker eth1 (interface, weight -60): ok\n" in table
    assert "web: tracker up (tcp, weight 5): pending" in table
    assert "group edge (web, api): FAULT" in table
