"""What an operator touches: vipctl against running daemons in the namespace lab (status,
failover, maintenance, reload, events), sd_notify, metrics, and bad input on the control socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vipd.cli import _status_table
from vipd.control import request, stream
from vipd.lab.pair import Pair, wait_until

from .conftest import PairFactory

pytestmark = pytest.mark.netns

INTERVAL = 0.2


def vipctl(
    pair: Pair, node: str, *args: str, timeout: float = 40
) -> subprocess.CompletedProcess[str]:
    """Run the real vipctl inside the node's namespace."""
    argv = [
        sys.executable,
        "-c",
        "from vipd.cli import vipctl_main; raise SystemExit(vipctl_main())",
    ]
    argv += ["-s", str(pair.nodes[node].socket_path), *args]
    return subprocess.run(
        ["ip", "netns", "exec", pair.nodes[node].host.ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def started(make_pair: PairFactory, witness: str | None = "embedded", **kw: Any) -> Pair:
    kw.setdefault("advert_interval", INTERVAL)
    pair = make_pair(witness=witness, **kw)
    if witness:
        pair.start_witness()
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 20, what="n1 to hold the VIP")
    pair.start("n2")
    wait_until(lambda: pair.nodes["n2"].instance()["master_priority"] is not None, 10)
    return pair


def test_status_table_json_and_exit_codes(make_pair: PairFactory) -> None:
    pair = started(make_pair)
    table = vipctl(pair, "n1", "status")
    assert table.returncode == 0, table.stderr
    assert "MASTER" in table.stdout and "epoch" in table.stdout and "vip" in table.stdout
    as_json = vipctl(pair, "n2", "status", "--json")
    assert as_json.returncode == 0
    inst = json.loads(as_json.stdout)["instances"][0]
    assert inst["state"] == "backup" and inst["master"] == "192.0.2.11"
    assert inst["witness"]["state"] == "idle"
    # Degraded (maintenance: FAULT) exits 1; unreachable exits 2.
    assert vipctl(pair, "n2", "maintenance", "on").returncode == 0
    assert vipctl(pair, "n2", "status").returncode == 1
    pair.stop("n2")
    gone = vipctl(pair, "n2", "status")
    assert gone.returncode == 2 and "cannot reach" in gone.stderr


def test_failover_hands_over_and_reports_the_gap(make_pair: PairFactory) -> None:
    pair = started(make_pair)
    wait_until(lambda: pair.nodes["n1"].instance()["peer_ready"], 10, what="peer ready")
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 5)
    monitor = pair.watch_holders()
    t0 = time.monotonic()
    done = vipctl(pair, "n1", "failover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "192.0.2.12 took over" in done.stdout
    wait_until(lambda: probe.first_success_after(t0, node="n2") is not None, 10)
    time.sleep(2.0)  # n1 (higher priority, preempt on) must not take it back
    assert pair.holders() == ["n2"]
    assert pair.nodes["n1"].instance()["last_transition"]["reason"] == "handover"
    monitor.stop()
    assert monitor.dual_holder_seconds() == 0.0
    print(done.stdout.strip(), f"| client gap {probe.longest_outage_after(t0) * 1000:.0f} ms")


def test_failover_refuses_when_no_peer_is_ready(make_pair: PairFactory) -> None:
    pair = started(make_pair)
    assert vipctl(pair, "n2", "maintenance", "on").returncode == 0
    time.sleep(4 * INTERVAL)  # n2's confirmations now say "not ready"
    refused = vipctl(pair, "n1", "failover")
    assert refused.returncode == 1 and "no peer is ready" in refused.stderr
    assert pair.holders() == ["n1"]
    not_master = vipctl(pair, "n2", "failover")
    assert not_master.returncode == 1 and "master of no such instance" in not_master.stderr


def test_maintenance_drains_and_undrains(make_pair: PairFactory) -> None:
    pair = started(make_pair)
    probe = pair.probe()
    on = vipctl(pair, "n1", "maintenance", "on")
    assert on.returncode == 0 and "vip: fault" in on.stdout
    wait_until(lambda: pair.holders() == ["n2"], 10, what="n2 to take over")
    assert pair.nodes["n1"].instance()["faults"] == {"maintenance": "maintenance"}
    t_off = time.monotonic()
    assert vipctl(pair, "n1", "maintenance", "off").returncode == 0
    wait_until(lambda: pair.holders() == ["n1"], 15, what="n1 to take back (preempt)")
    wait_until(lambda: probe.first_success_after(t_off, node="n1") is not None, 10)


def test_reload_adds_changes_and_removes_instances_without_a_gap_on_untouched_vips(
    make_pair: PairFactory,
) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    keep = {"name": "keep", "vrid": 61, "priority": 150, "advert_interval": INTERVAL}
    drop = {"name": "drop", "vrid": 62, "advert_interval": INTERVAL}
    n1 = pair.nodes["n1"]
    pair.write_config(
        n1,
        instances=[keep | {"vips": ["192.0.2.101/24"]}, drop | {"vips": ["192.0.2.102/24"]}],
    )
    pair.start("n1")
    wait_until(lambda: {"192.0.2.100/24", "192.0.2.101/24"} <= n1.host.addresses(), 15)
    probe = pair.client.start_probe("192.0.2.101", 8080)  # the untouched VIP
    wait_until(lambda: probe.first_success_after(0) is not None, 5)
    t0 = time.monotonic()
    # change vip (priority, one more VIP), keep keep, remove drop, add new
    pair.write_config(
        n1,
        priority=200,
        vips=[pair.vip_cidr, "192.0.2.110/24"],
        instances=[
            keep | {"vips": ["192.0.2.101/24"]},
            {"name": "new", "vrid": 63, "vips": ["192.0.2.103/24"], "advert_interval": INTERVAL},
        ],
    )
    done = vipctl(pair, "n1", "reload")
    assert done.returncode == 0, done.stderr
    assert "added: new" in done.stdout and "removed: drop" in done.stdout
    assert "changed: vip" in done.stdout and "unchanged: keep" in done.stdout
    wait_until(lambda: "192.0.2.103/24" in n1.host.addresses(), 15, what="new instance")
    assert "192.0.2.110/24" in n1.host.addresses()
    assert "192.0.2.102/24" not in n1.host.addresses()
    assert n1.instance("vip")["effective_priority"] == 200
    time.sleep(0.5)
    assert probe.outages(after=t0) == []
    # A bad config is refused and changes nothing.
    text = n1.config_path.read_text()
    n1.config_path.write_text(text.replace("priority = 200", "priority = 999"))
    bad = vipctl(pair, "n1", "reload")
    assert bad.returncode == 1 and "priority" in bad.stderr and "still running" in bad.stderr
    assert n1.instance("vip")["effective_priority"] == 200
    # SIGHUP reloads too (the good file again, minus the new instance).
    pair.write_config(
        n1,
        priority=200,
        vips=[pair.vip_cidr, "192.0.2.110/24"],
        instances=[keep | {"vips": ["192.0.2.101/24"]}],
    )
    pair.signal("n1", signal.SIGHUP)
    wait_until(lambda: "192.0.2.103/24" not in n1.host.addresses(), 10, what="SIGHUP reload")
    assert probe.outages(after=t0) == []


def test_events_stream_transitions(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    pair.start("n2")
    events: list[dict[str, Any]] = []

    def collect() -> None:
        ns_sock = str(pair.nodes["n2"].socket_path)  # a Unix socket: reachable from here
        for event in stream(ns_sock):
            events.append(event)
            if event.get("new") == "master":
                return

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    reader.join(20)
    assert any(e["event"] == "transition" and e["new"] == "master" for e in events), events


def test_sd_notify_ready_and_watchdog(make_pair: PairFactory, tmp_path: Path) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    node = pair.nodes["n1"]
    log = node.log_path.open("ab")
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    node.proc = node.host.python(
        "vipd", "run", "-c", str(node.config_path), stdout=log, stderr=log, env=env
    )
    log.close()
    seen: list[str] = []
    try:
        while not ("READY=1" in seen and seen.count("WATCHDOG=1") >= 2):
            seen += sock.recv(4096).decode().split("\n")
        assert node.instance()["state"] in ("backup", "master")  # READY came after start
        pair.stop("n1")
        while "STOPPING=1" not in seen:
            seen += sock.recv(4096).decode().split("\n")
    finally:
        sock.close()


def test_metrics_scraped_over_http(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    pair.write_config(pair.nodes["n1"], daemon={"metrics_listen": "127.0.0.1:9469"})
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 15)
    scrape = (
        pair.nodes["n1"]
        .host.run(
            sys.executable,
            "-c",
            "import urllib.request as u;"
            "print(u.urlopen('http://127.0.0.1:9469/metrics', timeout=5).read().decode())",
        )
        .stdout
    )
    lines = scrape.splitlines()
    assert 'vipd_instance_state{instance="vip",state="master"} 1.0' in lines, scrape[:2000]
    assert any(
        line.startswith("vipd_transitions_total") and 'reason="master-down"' in line
        for line in lines
    ), [line for line in lines if "transition" in line]
    assert any(line.startswith("vipd_adverts_sent_total") for line in lines)


def test_control_socket_bad_input_and_permissions(make_pair: PairFactory) -> None:
    pair = make_pair(advert_interval=INTERVAL)
    pair.start("n1")
    path = str(pair.nodes["n1"].socket_path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        f = s.makefile("rwb")
        for line, fragment in (
            (b"\xff\xfe garbage\n", "not JSON"),
            (b'{"cmd": "explode"}\n', "unknown command"),
            (b'{"cmd": "maintenance", "on": "yes"}\n', "maintenance needs"),
            (b"[]\n", "expected an object"),
        ):
            f.write(line)
            f.flush()
            answer = json.loads(f.readline())
            assert not answer["ok"] and fragment in answer["error"]
        f.write(b'{"cmd": "status"}\n')
        f.flush()
        assert json.loads(f.readline())["ok"]  # the connection is still usable
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b"x" * (70 * 1024) + b"\n")
        assert b"too large" in s.recv(4096)
    # Not root: the socket is 0600, so nobody else gets in.
    other = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            f"import socket; socket.socket(socket.AF_UNIX).connect({path!r})",
        ],
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0 and "Permission denied" in other.stderr
    assert request(path, "status")["ok"]  # and the daemon keeps running


def test_realtime_priority_runs_the_loop_sched_rr_and_drops_back_on_sigxcpu(
    make_pair: PairFactory,
) -> None:
    """``realtime_priority``: the event loop's thread runs SCHED_RR once the daemon is up, its
    children (the VIP guard) do not; SIGXCPU (the kernel's RLIMIT_RTTIME warning) drops it to
    SCHED_OTHER, and it asks again after REALTIME_RETRY. The overrun itself: test_sched.py."""
    pair = make_pair(advert_interval=INTERVAL)
    node = pair.nodes["n1"]
    pair.write_config(node, daemon={"realtime_priority": 1})
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 15)
    assert node.proc is not None
    pid = node.proc.pid
    rr = os.SCHED_RR | os.SCHED_RESET_ON_FORK
    wait_until(lambda: node.status()["scheduler"]["realtime"], 10, what="SCHED_RR")
    assert os.sched_getscheduler(pid) == rr
    assert os.sched_getparam(pid).sched_priority == 1
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        [guard] = map(int, f.read().split())
    assert os.sched_getscheduler(guard) == os.SCHED_OTHER
    assert '"event": "realtime"' in node.log()
    assert _status_table(node.status()).endswith(", SCHED_RR 1")

    os.kill(pid, signal.SIGXCPU)
    wait_until(lambda: node.status()["scheduler"]["realtime_drops"] == 1, 5, what="the drop")
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    assert not node.status()["scheduler"]["realtime"]
    assert "realtime-dropped" in node.log()
    assert _status_table(node.status()).endswith(", NOT realtime (dropped 1 times)")
    assert node.instance()["state"] == "master"  # nothing else changed
    wait_until(lambda: os.sched_getscheduler(pid) == rr, 15, what="SCHED_RR again")
    assert node.status()["scheduler"] == {"realtime": True, "priority": 1, "realtime_drops": 1}
    pair.write_config(node, daemon={"realtime_priority": 2})
    refused = vipctl(pair, "n1", "reload")
    assert refused.returncode == 1 and "realtime_priority needs a restart" in refused.stderr
