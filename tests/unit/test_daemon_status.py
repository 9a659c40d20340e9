"""systemd's status line (STATUS=, ``systemctl status vipd``) follows the instances' states
once the daemon is ready: one short line of counts, sent once per pass of the loop however
many instances changed state in it. On a fake loop."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.test_daemon_neighbours import FakeLoop, RecordingAddrs, daemon
from vipd import sdnotify
from vipd.vrrp.machine import State


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(sdnotify, "status", lines.append)
    return lines


def test_the_status_line_follows_the_states_once_per_pass(sent: list[str]) -> None:
    loop = FakeLoop()
    d = daemon(RecordingAddrs(loop), loop)
    states = [State.BACKUP] * 3
    instances: Any = {
        f"vi{i}": SimpleNamespace(machine=SimpleNamespace(state=s)) for i, s in enumerate(states)
    }
    d.instances = instances
    d._status_changed()  # a transition during start-up: READY=1 carries the first line
    loop.advance()
    assert sent == []

    d._ready = True
    d._notify_status()
    for inst in d.instances.values():  # a takeover of every instance in one pass
        inst.machine.state = State.MASTER
        d._status_changed()
    d.instances["vi2"].machine.state = State.FAULT
    d._status_changed()
    loop.advance()
    assert sent == ["n1: 3 backup", "n1: 1 fault, 2 master"]

    d._status_changed()  # then shutdown: nothing after STOPPING=1
    d.instances = {}
    d._teardown()
    loop.advance()
    assert len(sent) == 2
