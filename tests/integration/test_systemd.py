"""The shipped units under a real systemd: a container running systemd as its init in a lab
host's network namespace, vipd installed the way docs/systemd.md says (the image's virtualenv
linked into /usr/local/bin) and ``systemd/vipd.service`` copied in unchanged.

What systemd does here and nothing else can check: Type=notify start-up (READY=1), the
watchdog pings, ExecReload through vipctl, the dynamic user with exactly the two ambient
capabilities, the sandbox and syscall filter around a working daemon (the 1 ms scheduler slice
must not be refused), and a clean stop. The container is privileged (systemd builds the
sandbox of each service itself) and runs the image the container tests build (conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vipd.lab.containers import REPO_ROOT, Container, Podman
from vipd.lab.netns import Host
from vipd.lab.pair import Node, Pair, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.containers, pytest.mark.timeout(1200)]

ADVERT_INTERVAL = 0.5
CAP_NET_ADMIN_RAW = 0x3000  # bits 12 and 13
WATCHDOG_SEC = 10  # the unit's WatchdogSec=
SOCKET = "/run/vipd/vipd.sock"  # RuntimeDirectory=vipd, vipctl's default


class SystemdHost:
    """systemd as PID 1 of a container in ``host``'s network namespace, with vipd's commands
    in /usr/local/bin as the units expect."""

    def __init__(self, podman: Podman, image: str, name: str, host: Host) -> None:
        self.container: Container = podman.run(
            image,
            name,
            host=host,
            caps=None,
            extra=[
                "--systemd=always",
                "--user",
                "root",
                "--entrypoint",
                "/lib/systemd/systemd",
                "--no-healthcheck",
            ],
        )
        try:
            wait_until(self._booted, 60, what=f"systemd in {name} to finish booting")
            for tool in ("vipd", "vipctl"):
                self.exec("ln", "-sf", f"/opt/vipd/venv/bin/{tool}", f"/usr/local/bin/{tool}")
        except BaseException:
            self.close()
            raise

    def _booted(self) -> bool:
        state = self.exec("systemctl", "is-system-running", check=False)[1].strip()
        return state in ("running", "degraded")

    def exec(self, *argv: str, check: bool = True) -> tuple[int, str]:
        proc = self.container.exec(*argv, check=check)
        return proc.returncode, proc.stdout + proc.stderr

    def install(self, source: Path, target: str, mode: str = "0644") -> None:
        self.container.podman("cp", str(source), f"{self.container.name}:{target}")
        self.exec("chmod", mode, target)

    def systemctl(self, *args: str, check: bool = True) -> int:
        return self.exec("systemctl", *args, check=check)[0]

    def show(self, unit: str) -> dict[str, str]:
        out = self.exec("systemctl", "show", unit)[1]
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.exec("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False)[1]

    def proc_status(self, pid: str) -> dict[str, str]:
        out = self.exec("cat", f"/proc/{pid}/status")[1]
        return {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}

    @property
    def root(self) -> Path:
        """The container's file system, as the host sees it (its control socket is there)."""
        pid = self.container.state()["Pid"]
        return Path(f"/proc/{pid}/root")

    def close(self) -> None:
        self.container.remove()


@pytest.fixture
def boot(
    podman: Podman, vipd_image: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[Pair, str], SystemdHost]]:
    """Boot a systemd container on one of a pair's lab hosts; removed after the test, its
    journal printed when the test failed."""
    booted: list[SystemdHost] = []

    def factory(pair: Pair, host: str) -> SystemdHost:
        name = f"vipd-{pair.lab.prefix}-{host}"
        booted.append(SystemdHost(podman, vipd_image, name, pair.nodes[host].host))
        return booted[-1]

    yield factory
    report = getattr(request.node, "rep_call", None)
    for host in booted:
        if report is not None and report.failed:
            print(f"--- journal of {host.container.name} ---")
            print(host.exec("journalctl", "--no-pager", "-o", "cat", check=False)[1][-8000:])
        host.close()


def install_config(systemd: SystemdHost, pair: Pair, node: Node, **overrides: Any) -> None:
    """Write the node's config as the service sees it and copy it to /etc/vipd/vipd.toml; the
    test then talks to the control socket through the container's root."""
    node.socket_path = Path(SOCKET)
    pair.write_config(node, **overrides)
    systemd.exec("mkdir", "-p", "/etc/vipd")
    systemd.install(node.config_path, "/etc/vipd/vipd.toml")
    node.socket_path = systemd.root / SOCKET.lstrip("/")


def test_vipd_service_under_systemd(
    make_pair: Callable[..., Pair], boot: Callable[[Pair, str], SystemdHost]
) -> None:
    pair = make_pair(advert_interval=ADVERT_INTERVAL)
    sd = boot(pair, "n1")
    n1, n2 = pair.nodes["n1"], pair.nodes["n2"]
    install_config(sd, pair, n1)
    sd.install(REPO_ROOT / "systemd" / "vipd.service", "/etc/systemd/system/vipd.service")
    sd.systemctl("daemon-reload")

    # Type=notify: start returns once vipd said READY=1, after every instance started.
    started = time.monotonic()
    assert sd.systemctl("start", "vipd", check=False) == 0, sd.journal("vipd.service")
    unit = sd.show("vipd.service")
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
    main_pid = unit["MainPID"]
    wait_until(lambda: pair.holders() == ["n1"], 10, what="n1 to hold the VIP")
    # STATUS= follows the state (systemctl status vipd).
    wait_until(lambda: sd.show("vipd.service")["StatusText"] == "n1: 1 master", 5, what="STATUS=")

    # The dynamic user, with CAP_NET_ADMIN and CAP_NET_RAW and nothing else, in the sandbox.
    status = sd.proc_status(main_pid)
    assert int(status["Uid"].split()[0]) != 0, status["Uid"]
    for caps in ("CapPrm", "CapEff", "CapAmb", "CapBnd"):
        assert int(status[caps], 16) == CAP_NET_ADMIN_RAW, (caps, status[caps])
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SystemCallFilter=
    journal = sd.journal("vipd.service")
    assert "instance-start" in journal
    # SystemCallFilter= gives sched_setattr back from @resources: the slice is granted.
    assert "sched-slice-refused" not in journal, journal
    assert sd.exec("vipctl", "status", check=False)[0] == 0  # the default socket path

    pair.start("n2")
    wait_until(lambda: n2.instance()["state"] == "backup", 10, what="n2 to be backup")

    # ExecReload=vipctl reload: the new priority is applied in place, same process.
    install_config(sd, pair, n1, priority=140)
    assert sd.systemctl("reload", "vipd", check=False) == 0, sd.journal("vipd.service")
    assert n1.instance()["priority"] == 140
    # A broken config: reload fails, the daemon keeps running on the old one.
    broken = pair.workdir / "broken.toml"
    broken.write_text(n1.config_path.read_text().replace("priority = 140", "priority = 400"))
    sd.install(broken, "/etc/vipd/vipd.toml")
    assert sd.systemctl("reload", "vipd", check=False) != 0
    unit = sd.show("vipd.service")
    assert (unit["ActiveState"], unit["MainPID"]) == ("active", main_pid), unit
    assert n1.instance()["priority"] == 140
    install_config(sd, pair, n1, priority=140)

    # The watchdog: alive past WatchdogSec=, so the pings reach systemd...
    time.sleep(max(0.0, started + WATCHDOG_SEC + 2 - time.monotonic()))
    unit = sd.show("vipd.service")
    assert (unit["NRestarts"], unit["MainPID"]) == ("0", main_pid), unit
    # ...and a stalled loop is killed and restarted; n2 covers meanwhile, n1 preempts back.
    sd.exec("sh", "-c", f"kill -STOP {main_pid}")
    wait_until(lambda: n2.instance()["state"] == "master", 10, what="n2 to take over")

    def restarted() -> bool:
        unit = sd.show("vipd.service")
        return unit["NRestarts"] == "1" and unit["SubState"] == "running"

    wait_until(restarted, 3 * WATCHDOG_SEC + 10, what="systemd to restart the stalled vipd")
    assert "Watchdog timeout" in sd.journal("vipd.service")
    wait_until(lambda: pair.holders() == ["n1"], 15, what="n1 to preempt back")

    # systemctl stop: SIGTERM, priority-0 advert, VIPs removed, exit 0; n2 takes over.
    assert sd.systemctl("stop", "vipd", check=False) == 0
    unit = sd.show("vipd.service")
    assert (unit["ActiveState"], unit["Result"], unit["ExecMainStatus"]) == (
        "inactive",
        "success",
        "0",
    ), unit
    wait_until(lambda: pair.holders() == ["n2"], 5, what="n2 to take over on release")
