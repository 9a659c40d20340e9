"""vipd as containers: the project's Dockerfile built with podman, two containers joining the
network namespaces of lab hosts n1 and n2, the master container killed, the client following
the VIP to the other one.

A second test adds the witness as a third container (no capabilities) and fences the pair
through it, as configs/compose.yaml does.

The image is built once per session on a local base image made with debootstrap (no registry
here; docs/containers.md), and both are removed at the end. Set VIPD_TEST_BASE_IMAGE to an
existing base (e.g. ``localhost/vipd-base:bookworm``) to skip debootstrap when iterating; that
image is left alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from vipd.lab.containers import IMAGE_UID, Container, Podman
from vipd.lab.netns import Lab
from vipd.lab.pair import WITNESS_PORT, WITNESS_V4, Node, Pair, logs, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.containers, pytest.mark.timeout(1200)]

ADVERT_INTERVAL = 0.5
CAP_NET_ADMIN_RAW = 0x3000  # bits 12 and 13


class ContainerPair:
    """A :class:`Pair` whose nodes run as containers instead of processes.

    Each container gets its node's config at /etc/vipd/vipd.toml and a host directory at
    /run/vipd, where vipd makes its control socket at the default path (so the image's
    HEALTHCHECK, plain ``vipctl status``, finds it) and the test reaches it from outside.
    """

    def __init__(self, pair: Pair, podman: Podman, image: str) -> None:
        self.pair = pair
        self.podman = podman
        self.image = image
        self.containers: dict[str, Container] = {}
        self.run_dirs: dict[str, Path] = {}
        # Pair(witness="embedded") names its key file by its host path in the configs: it is
        # mounted at that same path (read-only) in every container.
        self.key_mounts = (
            [(pair.key_path, pair.key_path, "ro")] if pair.witness == "embedded" else []
        )
        for name, node in pair.nodes.items():
            run_dir = pair.workdir / f"{name}-run"
            run_dir.mkdir()
            os.chown(run_dir, IMAGE_UID, IMAGE_UID)
            self.run_dirs[name] = run_dir
            # The config names the socket as the container sees it; the test uses the host path.
            node.socket_path = Path("/run/vipd/vipd.sock")
            pair.write_config(node)
            node.socket_path = run_dir / "vipd.sock"

    def start(self, name: str, extra: Sequence[str] = ()) -> Container:
        node = self.pair.nodes[name]
        container = self.podman.run(
            self.image,
            f"vipd-{self.pair.lab.prefix}-{name}",
            host=node.host,
            volumes=[
                (node.config_path, "/etc/vipd/vipd.toml", "ro"),
                (self.run_dirs[name], "/run/vipd", ""),
                *self.key_mounts,
            ],
            extra=extra,
        )
        self.containers[name] = container
        return container

    def start_witness(self) -> Container:
        """``vipd witness`` from the same image on lab host ``w``: plain ``vipd`` entrypoint
        (not the capability-carrying interpreter), no capabilities at all, its state in a
        host directory."""
        host = self.pair.witness_host
        assert host is not None and self.pair.witness == "embedded"
        state_dir = self.pair.workdir / "witness-state"
        state_dir.mkdir(exist_ok=True)
        os.chown(state_dir, IMAGE_UID, IMAGE_UID)
        container = self.podman.run(
            self.image,
            f"vipd-{self.pair.lab.prefix}-w",
            command=[
                "witness",
                "--listen",
                f"{WITNESS_V4}:{WITNESS_PORT}",
                "--state",
                "/var/lib/vipd-witness/state.json",
                "--key-file",
                str(self.pair.key_path),
                "--lease",
                "vip",
                "--log-format",
                "json",
            ],
            host=host,
            volumes=[(state_dir, "/var/lib/vipd-witness", ""), *self.key_mounts],
            caps=(),
            extra=["--entrypoint", "vipd", "--no-healthcheck"],
        )
        self.containers["w"] = container
        ss = ["ss", "-Hnul", f"sport = :{WITNESS_PORT}"]
        wait_until(
            lambda: bool(host.run(*ss, check=False).stdout.strip()) or not container.running(),
            10,
            what="the witness to listen",
        )
        assert container.running(), container.logs()
        return container

    def wait_ready(self, name: str, timeout: float = 20.0) -> None:
        node = self.pair.nodes[name]
        container = self.containers[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not container.running():
                raise RuntimeError(f"{name}: container exited:\n{container.logs()}")
            try:
                states = [i["state"] for i in node.status(timeout=0.5)["instances"]]
                if states and "initialize" not in states:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{name} not ready in {timeout} s:\n{container.logs()}")

    def state(self, name: str) -> str:
        state: str = self.pair.nodes[name].instance()["state"]
        return state

    def logs(self) -> str:
        return "\n".join(
            f"--- container {name} ---\n{c.logs()[-4000:]}" for name, c in self.containers.items()
        )

    def close(self) -> None:
        for container in self.containers.values():
            container.remove()


@pytest.fixture
def make_container_pair(
    podman: Podman, vipd_image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ContainerPair]]:
    """Build a ContainerPair in a fresh lab (Pair's keyword arguments); everything is torn
    down after the test, and the containers' logs are printed when it failed."""
    made: list[tuple[Lab, Pair, ContainerPair]] = []

    def factory(**kw: Any) -> ContainerPair:
        kw.setdefault("advert_interval", ADVERT_INTERVAL)
        lab = Lab()
        try:
            pair = Pair(lab, workdir=tmp_path, **kw)
            made.append((lab, pair, ContainerPair(pair, podman, vipd_image)))
        except BaseException:
            lab.close()
            raise
        return made[-1][2]

    yield factory
    for lab, pair, cpair in made:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cpair.logs())
            print(logs(list(pair.nodes.values())))
        cpair.close()
        pair.close()
        lab.close()


def lease(node: Node) -> dict[str, Any]:
    witness: dict[str, Any] = node.instance()["witness"]
    return witness


def cap_eff(container: Container) -> tuple[int, int]:
    """(uid, effective capabilities) of the container's main process."""
    status = container.exec("cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return int(fields["Uid"].split()[0]), int(fields["CapEff"], 16)


def test_failover_between_containers(make_container_pair: Callable[..., ContainerPair]) -> None:
    cp = make_container_pair()
    pair = cp.pair
    n1, n2 = pair.nodes["n1"], pair.nodes["n2"]

    c1 = cp.start("n1")
    c2 = cp.start("n2")
    cp.wait_ready("n1")
    cp.wait_ready("n2")
    wait_until(lambda: pair.holders() == ["n1"], 10, what="n1 (priority 150) to hold the VIP")
    assert cp.state("n2") == "backup"

    # Unprivileged inside, with exactly CAP_NET_ADMIN and CAP_NET_RAW (file capabilities).
    for c in (c1, c2):
        uid, caps = cap_eff(c)
        assert uid != 0
        assert caps == CAP_NET_ADMIN_RAW, hex(caps)
        assert c.healthcheck() == 0, c.logs()  # vipctl status: MASTER / BACKUP

    probe = pair.probe()
    probe.wait_for_success(after=0, node="n1", timeout=10)
    assert pair.client_mac_for_vip() == n1.host.mac

    # Crash: the master container is SIGKILLed; no priority-0 advert, no cleanup by vipd.
    t_kill = time.monotonic()
    c1.kill()
    wait_until(lambda: cp.state("n2") == "master", 10, what="n2 to take over")
    # The VIP guard removes the dead daemon's VIP if it runs before the kernel reaps the PID
    # namespace (the daemon is its init): a race either side may win, so both paths are checked.
    stale = "n1" in pair.holders()
    # The client's ARP entry lives four hours: it moves only because n2 announced the VIP.
    t_moved = wait_until(
        lambda: pair.client_mac_for_vip() == n2.host.mac, 10, what="client ARP to follow"
    )
    probe.wait_for_success(after=t_kill, node="n2", timeout=10)
    assert c1.exit_code() == 137  # 128 + SIGKILL
    # Master down after 3 intervals + skew; the rest is announcement and polling slack.
    assert t_moved - t_kill < 3 * ADVERT_INTERVAL + 2.0, probe.outages()

    # Restart n1's container: it finds its stale VIP, removes it, and preempts back.
    c1.start()
    cp.wait_ready("n1")
    wait_until(lambda: pair.holders() == ["n1"], 15, what="n1 to preempt back")
    t_back = wait_until(
        lambda: pair.client_mac_for_vip() == n1.host.mac, 10, what="client ARP back"
    )
    probe.wait_for_success(after=t_back, node="n1", timeout=10)
    if stale:
        assert "stale-vip-removed" in c1.logs()
    else:
        assert "vip-guard-removed" in c1.logs()

    # podman stop sends SIGTERM: vipd releases (priority 0) and exits 0 with its VIP removed.
    c1.stop()
    assert c1.wait_exited() == 0, c1.logs()
    wait_until(lambda: pair.holders() == ["n2"], 10, what="n2 to take over on release")
    probe.stop()


def test_fenced_failover_with_a_witness_container(
    make_container_pair: Callable[..., ContainerPair],
) -> None:
    """The compose setup in the lab: the witness as a third container with no capabilities;
    after the master container is SIGKILLed, the backup promotes only through the lease, and
    the dead master's VIP leaves its kernel by itself (lifetimes tied to the lease)."""
    cp = make_container_pair(witness="embedded")
    pair = cp.pair
    n1, n2 = pair.nodes["n1"], pair.nodes["n2"]

    w = cp.start_witness()
    assert cap_eff(w) == (IMAGE_UID, 0)

    c1 = cp.start("n1")
    cp.wait_ready("n1")
    wait_until(lambda: pair.holders() == ["n1"], 15, what="n1 to hold the VIP")
    c2 = cp.start("n2")
    cp.wait_ready("n2")
    wait_until(lambda: lease(n1)["state"] == "held", 10, what="n1's lease")
    wait_until(lambda: n2.instance()["master_priority"] is not None, 10, what="n2 to hear n1")
    epoch = lease(n1)["epoch"]
    probe = pair.probe()
    probe.wait_for_success(after=0, node="n1", timeout=10)

    t_kill = time.monotonic()
    c1.kill()
    wait_until(lambda: "n2" in pair.holders(), 15, what="n2 to take over")
    assert n2.instance()["last_transition"]["reason"] == "master-down"
    assert lease(n2)["epoch"] > epoch
    # n1's kernel drops its VIP when the lease it was added under runs out: one holder.
    wait_until(lambda: pair.holders() == ["n2"], 10, what="n1's VIP to expire")
    wait_until(lambda: pair.client_mac_for_vip() == n2.host.mac, 10, what="client ARP")
    probe.wait_for_success(after=t_kill, node="n2", timeout=10)
    assert c2.healthcheck() == 0, c2.logs()
    assert w.running(), w.logs()
    probe.stop()


def test_vmac_mode_needs_a_writable_proc_sys(
    make_container_pair: Callable[..., ContainerPair],
) -> None:
    """use_vmac writes per-interface ARP sysctls, and containers get /proc/sys read-only: vipd
    refuses to start with a clear error, and starts with /proc/sys unmasked (still as its
    unprivileged user: CAP_NET_ADMIN is enough for net sysctls)."""
    cp = make_container_pair(common={"use_vmac": True})
    pair = cp.pair

    c1 = cp.start("n1")
    assert c1.wait_exited() == 1
    assert "cannot start: cannot write /proc/sys/net/ipv4/conf/" in c1.logs(), c1.logs()
    assert "Read-only file system" in c1.logs()
    c1.remove()

    cp.start("n1", extra=["--security-opt", "unmask=/proc/sys"])
    cp.wait_ready("n1")
    wait_until(lambda: cp.state("n1") == "master", 10, what="n1 to become master")
    vmac = f"00:00:5e:00:01:{pair.vrid:02x}"
    probe = pair.probe()
    probe.wait_for_success(after=0, node="n1", timeout=10)
    assert pair.client_mac_for_vip() == vmac
    probe.stop()
    sysctl = "/proc/sys/net/ipv4/conf/eth0/arp_announce"
    assert pair.nodes["n1"].host.run("cat", sysctl).stdout.strip() == "2"
