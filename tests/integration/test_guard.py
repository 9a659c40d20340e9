"""The VIP guard (vipd.net.guard) against a real kernel: a process that holds VIPs through an
AddressManager with a guard is SIGKILLed inside a lab namespace, and its VIPs must go."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vipd.lab.netns import Lab
from vipd.lab.pair import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip"),
]

# More than net.unix.max_dgram_qlen (10 here), all added before the guard reads its socket.
HELD = ("192.0.2.100/24", "2001:db8::100/64", *(f"198.51.100.{i}/32" for i in range(1, 31)))
DROPPED = "192.0.2.101/24"

# Runs in the host's namespace: puts HELD on eth0 and takes DROPPED on and off again, through
# an AddressManager with a guard; optionally kills its first guard and restarts it first.
HOLDER = """
import os, select, signal, sys
from ipaddress import ip_interface
from vipd.net.addrs import AddressManager
from vipd.net.guard import VipGuard

guard = VipGuard()
addrs = AddressManager(guard=guard)
held, dropped, kill_guard = sys.argv[1].split(","), sys.argv[2], sys.argv[3] == "yes"
for vip in held + [dropped]:
    addrs.add_vip("eth0", ip_interface(vip))
addrs.remove_vip("eth0", ip_interface(dropped))
if kill_guard:
    first = guard.pid
    os.kill(first, signal.SIGKILL)
    select.select([guard], [], [], 10)
    status = guard.restart()
    assert status == -signal.SIGKILL and guard.pid != first, (status, guard.pid, first)
print("ready", guard.pid, flush=True)
signal.pause()
"""


@pytest.mark.parametrize("kill_guard", [False, True], ids=["guard", "restarted-guard"])
def test_a_killed_holder_s_vips_are_removed_by_its_guard(kill_guard: bool) -> None:
    with Lab() as lab:
        host = lab.add_host("n1", "192.0.2.11/24", "2001:db8::11/64")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        holder = host.popen(
            [sys.executable, "-c", HOLDER, ",".join(HELD), DROPPED, "yes" if kill_guard else "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert holder.stdout is not None and holder.stderr is not None
        line = holder.stdout.readline()
        assert line.startswith("ready"), holder.stderr.read() if holder.poll() else line
        guard_pid = int(line.split()[1])
        assert set(HELD) <= host.addresses()
        host.add_address(DROPPED)  # somebody else's now: the guard must leave it alone

        holder.kill()
        holder.wait(5)
        wait_until(lambda: not set(HELD) & host.addresses(), 10, what="the guard to remove")
        wait_until(lambda: not os.path.exists(f"/proc/{guard_pid}"), 10, what="guard to exit")
        assert DROPPED in host.addresses()
        logged = holder.stderr.read()
        for vip in HELD:
            assert f'"vip": "{vip}"' in logged and "vip-guard-removed" in logged, logged
