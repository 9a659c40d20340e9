"""``vipd demo``: a live pair on this machine, in network namespaces, in about half a minute.

Two vipd nodes fenced through the embedded witness (``vipd witness``) and a client on one
bridge; the client's ARP entries live four hours, like the upstream device of incident A, so it
follows the VIP only because vipd announces it. The demo kills the master (SIGKILL and its link
cut), shows the backup taking the lease (a higher epoch) and the client following the VIP, how
long the client saw no answer, then removes everything it made. ``--no-witness`` shows plain
VRRP instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from vipd.lab.netns import Lab
from vipd.lab.pair import Pair, wait_until


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(advert_interval: float = 1.0, witness: bool = True) -> int:
    if os.geteuid() != 0:
        print("vipd demo builds network namespaces: run it as root", file=sys.stderr)
        return 1
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            print(f"vipd demo needs '{tool}' (Debian: iproute2, nftables)", file=sys.stderr)
            return 1
    with Lab() as lab:
        fencing = ", the embedded witness w" if witness else ""
        _say(f"lab {lab.prefix}: nodes n1 (priority 150), n2 (priority 100){fencing}, a client")
        pair = Pair(lab, advert_interval=advert_interval, witness="embedded" if witness else None)
        try:
            return _script(pair)
        finally:
            pair.close()


def _script(pair: Pair) -> int:
    n1, n2 = pair.nodes["n1"], pair.nodes["n2"]
    if pair.witness is not None:
        pair.start_witness()
    pair.start("n1")
    wait_until(lambda: pair.holders() == ["n1"], 15, what="n1 to become master")
    pair.start("n2")
    _say(f"VIP {pair.vip} is held by: {', '.join(pair.holders())}{_lease(n1.instance())}")
    probe = pair.probe()
    wait_until(lambda: probe.first_success_after(0, node="n1") is not None, 10)
    _say(f"client reaches the VIP; its ARP entry: {pair.client_mac_for_vip()} (n1 {n1.host.mac})")
    _say("killing n1's vipd (SIGKILL) and cutting its link ...")
    t_fault = pair.crash("n1")
    wait_until(
        lambda: probe.first_success_after(t_fault, node="n2") is not None,
        30,
        what="the client to reach the VIP on n2",
    )
    outage = probe.longest_outage_after(t_fault - 1.0)
    probe.stop()
    state = n2.instance()
    holders = pair.holders()
    _say(f"VIP {pair.vip} is now on: {', '.join(holders)}")
    if "n1" in holders:
        _say(
            "  (n1's kernel still carries it: its guard has not removed it yet, but n1 is cut"
            " off, so nobody reaches that copy)"
        )
    _say(f"client's ARP entry: {pair.client_mac_for_vip()} (n2 {n2.host.mac})")
    _say(
        f"n2 took over ({state['last_transition']['reason']}){_lease(state)}; "
        f"the client saw no answer for "
        f"{outage:.2f} s (advert interval {pair.advert_interval} s, RFC Master_Down_Interval "
        f"{3 * pair.advert_interval + (256 - 100) * pair.advert_interval / 256:.2f} s)"
    )
    _say("cleaning up")
    return 0


def _lease(instance: dict[str, Any]) -> str:
    lease = instance.get("witness")
    if not lease or lease["state"] != "held":
        return ""
    return f" (lease epoch {lease['epoch']}, witness round trip {lease['rtt'] * 1000:.1f} ms)"
