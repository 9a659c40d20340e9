"""vipd beside a real keepalived (the Debian keepalived 2.2 package), as in a rolling migration:
one node of the pair already runs vipd, the other still keepalived, same VRID, VRRPv3, IPv4.

vipd's configuration is not written by hand: the test writes one keepalived.conf per node and
converts the vipd node's with ``vipd import-keepalived`` (vipd.importer), so the mixed pair also
checks that an imported configuration interoperates.

* keepalived master / vipd backup: keepalived crashes, vipd takes over, the client follows.
* vipd master / keepalived backup: vipd crashes, keepalived takes over, the client follows.
* tshark captures vipd's adverts on the lab bridge and dissects them without a malformed or
  bad-checksum warning (keepalived's adverts are the control).

Each pair starts with the lower-priority node alone (it becomes master), then the higher one
joins and must preempt it: so before any fault, each implementation has both sent adverts the
other accepted and yielded to the other's adverts.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from vipd.importer import import_keepalived
from vipd.lab.keepalived import KeepalivedNode, keepalived_conf
from vipd.lab.pair import Node, Pair, wait_until

from .conftest import PairFactory

pytestmark = pytest.mark.netns

VRID = 51
ADVERT = 1.0
INSTANCE = "VI_1"  # the vrrp_instance name, which the importer keeps


@pytest.fixture(autouse=True)
def _tools() -> None:
    from tests.conftest import skip_or_fail

    missing = [t for t in ("keepalived", "tshark") if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"interop tests need {', '.join(missing)} (scripts/install --test)")


@pytest.fixture
def keepalived_nodes() -> Any:
    """Keepalived processes started by a test; killed afterwards, their logs printed."""
    made: list[KeepalivedNode] = []
    yield made
    for node in made:
        node.close()
        print(f"--- keepalived on {node.host.name} ---\n{node.log()[-6000:]}")


def conf_for(pair: Pair, node: Node) -> str:
    return keepalived_conf(
        router_id=node.name,
        priority=node.spec.priority,
        vrid=VRID,
        advert_int=ADVERT,
        vips=[pair.vip_cidr],
        instance=INSTANCE,
    )


def use_imported_config(pair: Pair, node: Node, tmp_path: Path) -> None:
    """Write ``node``'s keepalived.conf, convert it with the importer, run vipd on that."""
    source = tmp_path / f"{node.name}-keepalived.conf"
    source.write_text(conf_for(pair, node))
    result = import_keepalived(source)
    assert result.unconverted == ()
    # The lab reaches the daemon through its own control socket and reads JSON logs.
    lab_settings = (
        f'control_socket = "{node.socket_path}"\nlog_format = "json"\nlog_level = "debug"\n'
    )
    assert "\n[daemon]\n" in result.toml
    node.config_path.write_text(result.toml.replace("[daemon]\n", "[daemon]\n" + lab_settings, 1))


def start_keepalived(pair: Pair, node: Node, tmp_path: Path, made: list[KeepalivedNode]) -> Any:
    ka = KeepalivedNode(node.host, tmp_path)
    made.append(ka)
    ka.start(conf_for(pair, node))
    ka.wait_started()
    return ka


def vipd_state(node: Node) -> tuple[str, int | None]:
    inst = node.instance(INSTANCE)
    return inst["state"], inst["master_priority"]


def client_follows(pair: Pair, probe: Any, t_fault: float, to: Node) -> None:
    """The client reaches the VIP on ``to`` again, with its 4-hour neighbour entry updated."""
    wait_until(
        lambda: probe.first_success_after(t_fault, node=to.name) is not None,
        30,
        what=f"the client to reach the VIP on {to.name}",
    )
    assert pair.client_mac_for_vip() == to.host.mac


def test_keepalived_master_fails_over_to_vipd(
    make_pair: PairFactory, keepalived_nodes: list[KeepalivedNode], tmp_path: Path
) -> None:
    pair = make_pair(vrid=VRID, advert_interval=ADVERT, priorities=(150, 100))
    ka_node, vipd_node = pair.nodes["n1"], pair.nodes["n2"]
    use_imported_config(pair, vipd_node, tmp_path)
    pair.start("n2")
    wait_until(lambda: pair.holders() == ["n2"], 15, what="vipd (alone) to take the VIP")

    ka = start_keepalived(pair, ka_node, tmp_path, keepalived_nodes)
    # keepalived (150) ignores vipd's priority-100 adverts, takes over; vipd hears it, yields.
    wait_until(lambda: pair.holders() == ["n1"], 30, what="keepalived to preempt vipd")
    wait_until(lambda: vipd_state(vipd_node) == ("backup", 150), 15, what="vipd backup")

    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 15)
    assert pair.client_mac_for_vip() == ka_node.host.mac
    t_fault = time.monotonic()
    ka.kill()
    pair.lab.cut(ka_node.host)
    client_follows(pair, probe, t_fault, vipd_node)
    assert vipd_state(vipd_node)[0] == "master"


def test_vipd_master_fails_over_to_keepalived(
    make_pair: PairFactory, keepalived_nodes: list[KeepalivedNode], tmp_path: Path
) -> None:
    pair = make_pair(vrid=VRID, advert_interval=ADVERT, priorities=(150, 100))
    vipd_node, ka_node = pair.nodes["n1"], pair.nodes["n2"]
    use_imported_config(pair, vipd_node, tmp_path)
    start_keepalived(pair, ka_node, tmp_path, keepalived_nodes)
    wait_until(lambda: pair.holders() == ["n2"], 30, what="keepalived (alone) to take the VIP")

    pair.start("n1")
    # vipd (150) preempts; keepalived hears the higher priority and removes its VIP.
    wait_until(lambda: pair.holders() == ["n1"], 30, what="vipd to preempt keepalived")
    assert vipd_state(vipd_node)[0] == "master"

    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 15)
    assert pair.client_mac_for_vip() == vipd_node.host.mac
    t_fault = time.monotonic()
    pair.kill("n1")
    pair.lab.cut(vipd_node.host)
    client_follows(pair, probe, t_fault, ka_node)


# --------------------------------------------------------------------------- tshark


def capture(pair: Pair, src: str, count: int, out: Path) -> None:
    """Capture ``count`` VRRP packets from ``src`` on the lab's bridge into ``out``."""
    bpf = f"ip proto 112 and src host {src}"
    tshark = ["tshark", "-i", "br0", "-n", "-q", "-f", bpf, "-c", str(count), "-w", str(out)]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pair.lab.switch_ns, *tshark],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=count * ADVERT + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err


def dissect(pcap: Path, *prefs: str) -> list[dict[str, str]]:
    """One dict of VRRP fields (and any malformed/expert markers) per packet."""
    fields = [
        "ip.src",
        "ip.ttl",
        "vrrp.version",
        "vrrp.type",
        "vrrp.virt_rtr_id",
        "vrrp.prio",
        "vrrp.addr_count",
        "vrrp.short_adver_int",
        "vrrp.checksum.status",
        "vrrp.ip_addr",
        "_ws.malformed",
        "_ws.expert.message",
    ]
    argv = ["tshark", "-r", str(pcap), "-n", "-T", "fields", "-E", "separator=|"]
    for pref in prefs:
        argv += ["-o", pref]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [dict(zip(fields, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]


def test_tshark_dissects_vipd_adverts_cleanly(
    make_pair: PairFactory, keepalived_nodes: list[KeepalivedNode], tmp_path: Path
) -> None:
    pair = make_pair(vrid=VRID, advert_interval=ADVERT, priorities=(150, 100))
    vipd_node, ka_node = pair.nodes["n1"], pair.nodes["n2"]
    vipd_ip, ka_ip = (n.spec.ipv4.split("/")[0] for n in (vipd_node, ka_node))
    use_imported_config(pair, vipd_node, tmp_path)
    start_keepalived(pair, ka_node, tmp_path, keepalived_nodes)
    wait_until(lambda: pair.holders() == ["n2"], 30, what="keepalived to take the VIP")
    capture(pair, ka_ip, 3, tmp_path / "keepalived.pcap")
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 30, what="vipd to preempt keepalived")
    capture(pair, vipd_ip, 5, tmp_path / "vipd.pcap")

    # Both default to the IPv4 pseudo-header checksum (RFC 5798 reading); tell the dissector.
    pseudo_header = "vrrp.v3_checksum_as_in_v2:FALSE"
    for name, src, prio, count in (("keepalived", ka_ip, "100", 3), ("vipd", vipd_ip, "150", 5)):
        packets = dissect(tmp_path / f"{name}.pcap", pseudo_header)
        assert len(packets) == count, name
        for p in packets:
            assert p["_ws.malformed"] == "" and p["_ws.expert.message"] == "", (name, p)
            assert p["vrrp.checksum.status"] == "1", (name, p)  # 1: good
            assert (p["ip.src"], p["ip.ttl"]) == (src, "255"), (name, p)
            assert (p["vrrp.version"], p["vrrp.type"]) == ("3", "1"), (name, p)
            assert (p["vrrp.virt_rtr_id"], p["vrrp.prio"]) == (str(VRID), prio), (name, p)
            assert (p["vrrp.addr_count"], p["vrrp.ip_addr"]) == ("1", pair.vip), (name, p)
            assert p["vrrp.short_adver_int"] == "100", (name, p)  # centiseconds
    # The check has teeth: read as RFC 9568 message-only checksums, every advert is bad.
    for p in dissect(tmp_path / "vipd.pcap", "vrrp.v3_checksum_as_in_v2:TRUE"):
        assert p["vrrp.checksum.status"] == "0" and p["_ws.expert.message"] != "", p
