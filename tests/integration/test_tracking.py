"""Health tracking, hooks and sync groups with real vipd processes (docs/tracking.md).

Incidents A and B failed on the proxy and the host, not on VRRP: these tests fail the health
of the master's "proxy" (an HTTP endpoint that hangs, a TCP service that stops, a hung check
script, an interface that goes down) and check that the VIP moves, that the client follows,
and that recovery moves it back (preempt on). Waits are generous and conditions are polled:
nothing here asserts how fast it happens.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from vipd.control import request
from vipd.lab.pair import Pair, wait_until

from .conftest import PairFactory

pytestmark = pytest.mark.netns

INTERVAL = 0.2  # seconds between adverts
HEALTH_PORT = 8081
VIP2 = "192.0.2.101"


def inst(pair: Pair, node: str, name: str = "vip") -> dict[str, Any]:
    return pair.nodes[node].instance(name)


def tracker(pair: Pair, node: str, name: str, instance: str = "vip") -> dict[str, Any]:
    found: dict[str, Any] = next(
        t for t in inst(pair, node, instance)["trackers"] if t["name"] == name
    )
    return found


def counter(pair: Pair, node: str, key: str, instance: str = "vip") -> int:
    return int(inst(pair, node, instance)["counters"].get(key, 0))


def holders_of(pair: Pair, vip: str) -> list[str]:
    return [
        name
        for name, node in pair.nodes.items()
        if any(a.split("/")[0] == vip for a in node.host.addresses())
    ]


def configure(pair: Pair, node: str, **keys: Any) -> None:
    """More [[instance]] keys for the main instance of one node (before it starts)."""
    pair.nodes[node].spec.extra.update(keys)
    pair.write_config(pair.nodes[node])


def start_health(pair: Pair, node: str, port: int = HEALTH_PORT) -> tuple[Path, Any]:
    """The stand-in for the proxy's /health on ``node``: returns the file that sets its mode
    ("ok", "fail", "hang") and the process."""
    mode = pair.workdir / f"{node}.health"
    mode.write_text("ok")
    host = pair.nodes[node].host
    proc = host.python(
        "vipd.lab.health",
        "--port",
        str(port),
        "--mode-file",
        str(mode),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: bool(host.run("ss", "-Htln", f"sport = :{port}", check=False).stdout.strip()),
        10,
        what=f"health endpoint on {node}",
    )
    return mode, proc


def start(pair: Pair) -> None:
    """n1 first, so it is master without a start-up race; then n2, following it."""
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 20, what="n1 to hold the VIP")
    pair.start("n2")
    wait_until(lambda: inst(pair, "n2")["master_priority"] == 150, 10, what="n2 to follow n1")


def gone(pid: int) -> bool:
    """No such process, or a zombie about to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def hook_command(log: Path, word: str) -> list[str]:
    """A hook that appends its arguments (after ``word``) to ``log``."""
    return ["sh", "-c", f'echo "$*" >> {log}', "hook", word]


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# ---- trackers ---------------------------------------------------------------------------------


def test_hung_http_health_check_moves_the_vip_and_recovery_moves_it_back(
    make_pair: PairFactory,
) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    mode, _ = start_health(pair, "n1")
    check = {
        "name": "health",
        "url": f"http://127.0.0.1:{HEALTH_PORT}/health",
        "interval": 0.5,
        "timeout": 0.5,
        "fall": 2,
        "rise": 2,
        "weight": -60,
    }
    configure(pair, "n1", track_http=[check])
    start(pair)
    assert tracker(pair, "n1", "health")["ok"] is True
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 10)

    mode.write_text("hang")  # accepts, never answers: only a timeout can tell
    t_fail = time.monotonic()
    wait_until(lambda: pair.holders() == ["n2"], 30, what="n2 to take the VIP")
    wait_until(lambda: probe.first_success_after(t_fail, node="n2") is not None, 15)
    n1 = inst(pair, "n1")
    assert (n1["state"], n1["effective_priority"], n1["priority"]) == ("backup", 90, 150)
    assert n1["last_transition"]["reason"] == "higher-priority-master"
    health = tracker(pair, "n1", "health")
    assert health["ok"] is False and health["adjustment"] == -60
    assert health["last_error"] == "no answer within 0.5 s"
    assert inst(pair, "n2")["last_transition"]["reason"] == "master-down"

    mode.write_text("ok")
    t_ok = time.monotonic()
    wait_until(lambda: pair.holders() == ["n1"], 30, what="n1 to take the VIP back")
    wait_until(lambda: probe.first_success_after(t_ok, node="n1") is not None, 15)
    assert inst(pair, "n1")["effective_priority"] == 150
    assert counter(pair, "n1", "transition:higher-priority-master") == 1
    assert counter(pair, "n2", "transition:higher-priority-master") == 1


def test_stopped_tcp_service_faults_the_master(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    _, service = start_health(pair, "n1")
    configure(pair, "n1", track_tcp=[{"name": "svc", "address": f"127.0.0.1:{HEALTH_PORT}"}])
    start(pair)
    service.terminate()
    service.wait(10)
    wait_until(lambda: inst(pair, "n1")["state"] == "fault", 20, what="n1 in FAULT")
    wait_until(lambda: pair.holders() == ["n2"], 20, what="n2 to take the VIP")
    n1 = inst(pair, "n1")
    assert n1["fault"] == "track:svc"
    assert (n1["last_transition"]["from"], n1["last_transition"]["reason"]) == (
        "master",
        "track:svc",
    )
    assert tracker(pair, "n1", "svc")["last_error"] == "Connection refused"
    # A node in FAULT sent priority 0 on its way out: the backup took over at once.
    assert inst(pair, "n2")["last_transition"]["reason"] == "master-released"

    start_health(pair, "n1")
    wait_until(lambda: pair.holders() == ["n1"], 30, what="n1 back after its service returned")
    assert inst(pair, "n1")["fault"] is None
    assert counter(pair, "n1", "transition:fault-cleared") == 1


def test_hung_script_is_killed_at_its_timeout_and_counts_as_a_failure(
    make_pair: PairFactory,
) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    flag, pidfile = pair.workdir / "hang", pair.workdir / "child.pid"
    # Healthy: exits 0 at once. With the flag: starts a child and waits for it, forever.
    script = f"if [ -e {flag} ]; then sleep 300 & echo $! > {pidfile}; wait; fi; exit 0"
    check = {"name": "chk", "command": ["sh", "-c", script], "interval": 0.5, "timeout": 1}
    configure(pair, "n1", track_scripts=[check])
    start(pair)

    flag.touch()
    wait_until(lambda: pair.holders() == ["n2"], 20, what="n2 to take the VIP")
    n1 = inst(pair, "n1")
    assert (n1["state"], n1["fault"]) == ("fault", "track:chk")
    chk = tracker(pair, "n1", "chk")
    assert chk["ok"] is False
    assert chk["last_error"] == "timed out after 1 s (process group killed)"
    # The script's child went with it: killing the process group, not just the script.
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 10)
    child = int(pidfile.read_text())
    wait_until(lambda: gone(child), 10, what=f"the hung script's child {child} to be killed")

    flag.unlink()
    wait_until(lambda: pair.holders() == ["n1"], 30, what="n1 to take the VIP back")
    assert tracker(pair, "n1", "chk")["ok"] is True


def test_interface_tracker_with_weight_zero_puts_the_node_in_fault(
    make_pair: PairFactory,
) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    host = pair.nodes["n1"].host
    host.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    host.run("ip", "link", "set", "up0", "up")
    host.run("ip", "link", "set", "up1", "up")
    configure(pair, "n1", track_interfaces=["up0"])
    start(pair)
    assert tracker(pair, "n1", "up0")["ok"] is True

    def faults_then_recovers(action: list[str], undo: list[str], error: str) -> None:
        host.run("ip", "link", *action)
        wait_until(lambda: inst(pair, "n1")["state"] == "fault", 20, what=f"FAULT ({error})")
        wait_until(lambda: pair.holders() == ["n2"], 20, what="n2 to take the VIP")
        assert inst(pair, "n1")["fault"] == "track:up0"
        assert tracker(pair, "n1", "up0")["last_error"] == error
        host.run("ip", "link", *undo)
        wait_until(lambda: pair.holders() == ["n1"], 30, what="n1 back")

    faults_then_recovers(["set", "up0", "down"], ["set", "up0", "up"], "interface is down")
    faults_then_recovers(["set", "up1", "down"], ["set", "up1", "up"], "no carrier")
    host.run("ip", "link", "del", "up0")
    wait_until(lambda: inst(pair, "n1")["state"] == "fault", 20, what="FAULT (removed)")
    assert tracker(pair, "n1", "up0")["last_error"] == "interface removed"


# ---- hooks ------------------------------------------------------------------------------------


def test_hooks_run_with_keepalived_arguments_on_every_transition(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    logs = {name: pair.workdir / f"{name}.hooks" for name in pair.nodes}
    maint = pair.workdir / "n2.maint"
    maint.write_text("0\n")
    for name, log in logs.items():
        hooks = {
            key: hook_command(log, key)
            for key in ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")
        }
        configure(pair, name, **hooks)
    configure(pair, "n2", track_files=[{"name": "maint", "path": str(maint), "weight": 0}])
    start(pair)
    n1_start = [
        "notify_backup",
        "notify INSTANCE vip BACKUP 150",
        "notify_master",
        "notify INSTANCE vip MASTER 150",
    ]
    n2_start = ["notify_backup", "notify INSTANCE vip BACKUP 100"]
    wait_until(lambda: lines(logs["n1"]) == n1_start, 10, what=f"n1 hooks: {lines(logs['n1'])}")
    wait_until(lambda: lines(logs["n2"]) == n2_start, 10, what=f"n2 hooks: {lines(logs['n2'])}")

    maint.write_text("1\n")  # track_file with weight 0: non-zero means FAULT
    n2_fault = [*n2_start, "notify_fault", "notify INSTANCE vip FAULT 100"]
    wait_until(lambda: lines(logs["n2"]) == n2_fault, 15, what=f"n2 hooks: {lines(logs['n2'])}")
    maint.write_text("0\n")
    n2_back = [*n2_fault, "notify_backup", "notify INSTANCE vip BACKUP 100"]
    wait_until(lambda: lines(logs["n2"]) == n2_back, 15, what=f"n2 hooks: {lines(logs['n2'])}")

    assert pair.stop("n1") == 0  # vipd waits for its STOP hooks before it exits
    assert lines(logs["n1"]) == [*n1_start, "notify_stop", "notify INSTANCE vip STOP 150"]
    n2_master = [*n2_back, "notify_master", "notify INSTANCE vip MASTER 100"]
    wait_until(lambda: lines(logs["n2"]) == n2_master, 15, what=f"n2 hooks: {lines(logs['n2'])}")
    assert counter(pair, "n2", "hook:ok") == len(n2_master)


def test_a_slow_hook_does_not_delay_adverts(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    done = pair.workdir / "hook.done"
    configure(pair, "n1", notify_master=["sh", "-c", f"sleep 5; echo done > {done}"])
    start(pair)  # n1's hook starts sleeping as it becomes master, before n2 even starts
    n2_transitions = counter(pair, "n2", "transitions")
    sent = counter(pair, "n1", "adverts_sent")
    saw_pending = False
    # The hook sleeps 5 s, 25 advert intervals; were adverts held up behind it, n2 would take
    # over after ~3.
    deadline = time.monotonic() + 30
    while not done.exists() and time.monotonic() < deadline:
        saw_pending |= inst(pair, "n1")["hooks_pending"] > 0
        assert pair.holders() == ["n1"]
        assert inst(pair, "n2")["state"] == "backup"
        time.sleep(0.1)
    assert done.exists(), "the hook never finished"
    assert saw_pending, "the hook was not seen running"
    assert counter(pair, "n2", "transitions") == n2_transitions
    assert counter(pair, "n1", "adverts_sent") > sent + 5
    assert inst(pair, "n1")["hooks_pending"] == 0


def test_reload_adds_and_removes_trackers_and_hooks_in_place(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    start(pair)
    n1 = pair.nodes["n1"]
    drain, log = pair.workdir / "drain", pair.workdir / "n1.hooks"
    drain.write_text("1")
    configure(
        pair,
        "n1",
        track_files=[{"name": "drain", "path": str(drain), "weight": 0}],
        notify=hook_command(log, "notify"),
    )
    answer = request(str(n1.socket_path), "reload", timeout=20)
    assert answer["ok"] and answer["result"]["changed"] == ["vip"], answer
    wait_until(lambda: pair.holders() == ["n2"], 20, what="n2 to take the VIP")
    assert inst(pair, "n1")["fault"] == "track:drain"
    wait_until(lambda: lines(log) == ["notify INSTANCE vip FAULT 150"], 10, what="FAULT hook")

    drain.write_text("0")
    wait_until(lambda: pair.holders() == ["n1"], 30, what="n1 to take the VIP back")
    wait_until(lambda: lines(log)[-1:] == ["notify INSTANCE vip MASTER 150"], 10)

    del n1.spec.extra["track_files"], n1.spec.extra["notify"]
    pair.write_config(n1)
    answer = request(str(n1.socket_path), "reload", timeout=20)
    assert answer["ok"] and answer["result"]["changed"] == ["vip"], answer
    assert inst(pair, "n1")["trackers"] == []
    assert inst(pair, "n1")["state"] == "master"  # never left it


# ---- sync groups ------------------------------------------------------------------------------


def test_sync_group_members_fail_over_together(make_pair: PairFactory) -> None:
    pair = make_pair(
        advert_interval=INTERVAL,
        instances=[{"name": "vip2", "vrid": 52, "vips": [f"{VIP2}/24"]}],
        groups=[{"name": "edge", "instances": ["vip", "vip2"]}],
    )
    group_log = pair.workdir / "group.hooks"
    # One command for both nodes; `ip netns identify` tells them apart in the log.
    pair.groups[0]["notify"] = ["sh", "-c", f'echo "$(ip netns identify) $*" >> {group_log}']
    weight, maint = pair.workdir / "n1.weight", pair.workdir / "n1.maint"
    weight.write_text("0")
    maint.write_text("0")
    configure(
        pair,
        "n1",
        track_files=[
            {"name": "weight", "path": str(weight), "weight": -100},
            {"name": "maint", "path": str(maint), "weight": 0},
        ],
    )
    pair.write_config(pair.nodes["n2"])

    def both_on(node: str) -> bool:
        return holders_of(pair, Pair.VIP4) == [node] and holders_of(pair, VIP2) == [node]

    def group_states(node: str) -> list[str]:
        ns = pair.nodes[node].host.ns
        # "NS edge STATE 0": sh -c takes "GROUP" as $0, so $* starts at the name.
        return [line.split()[2] for line in lines(group_log) if line.startswith(f"{ns} ")]

    pair.start("n1")
    wait_until(lambda: both_on("n1"), 20, what="n1 to hold both VIPs")
    pair.start("n2")
    wait_until(lambda: inst(pair, "n2", "vip2")["master_priority"] == 150, 10, what="n2 follows")
    wait_until(lambda: group_states("n1") == ["BACKUP", "MASTER"], 10, what="n1 group hooks")
    wait_until(lambda: group_states("n2") == ["BACKUP"], 10, what="n2 group hooks")

    # A tracker lowers one member's priority: n2 preempts it, and n1's other member steps
    # down with it, though nothing is wrong with that one.
    weight.write_text("1")
    wait_until(lambda: both_on("n2"), 30, what="n2 to hold both VIPs")
    assert inst(pair, "n1", "vip")["effective_priority"] == 50
    assert inst(pair, "n1", "vip2")["effective_priority"] == 150
    assert inst(pair, "n1", "vip2")["last_transition"]["reason"] == "group:edge"
    wait_until(lambda: group_states("n1")[-1:] == ["BACKUP"], 10, what="n1 group BACKUP")

    # Recovery: n1 preempts its member back, n2 steps its other member down, n1 takes it.
    weight.write_text("0")
    wait_until(lambda: both_on("n1"), 30, what="n1 to take both VIPs back")
    assert inst(pair, "n2", "vip2")["last_transition"]["reason"] == "group:edge"

    # A FAULT of one member is a FAULT of the group.
    maint.write_text("1")
    wait_until(lambda: both_on("n2"), 30, what="n2 to hold both VIPs")
    vip, vip2 = inst(pair, "n1", "vip"), inst(pair, "n1", "vip2")
    assert (vip["state"], vip["fault"]) == ("fault", "track:maint")
    assert (vip2["state"], vip2["fault"]) == ("fault", "group:edge")
    status = pair.nodes["n1"].status()
    assert status["groups"] == [{"name": "edge", "instances": ["vip", "vip2"], "state": "FAULT"}]
    wait_until(lambda: group_states("n1")[-1:] == ["FAULT"], 10, what="n1 group FAULT")
    maint.write_text("0")
    wait_until(lambda: both_on("n1"), 30, what="n1 to take both VIPs back")
    wait_until(lambda: group_states("n1")[-1:] == ["MASTER"], 10, what="n1 group MASTER")
    assert counter(pair, "n1", "transition:group:edge", "vip2") == 2  # step-down, FAULT
