"""keepalived in the namespace lab: the incumbent, run beside vipd (interop tests) or instead
of it (benchmarks/failover.py).

keepalived runs in the foreground inside a lab host (``--dont-fork``, logging to the console,
which is redirected to a log file), VRRP only, with its configuration and both pid files in a
work directory, so it never touches the machine's own /run/keepalived.pid or syslog. The
parent forks a VRRP child that stays in the parent's process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vipd.lab.netns import Host

__all__ = ["KeepalivedNode", "keepalived_conf", "keepalived_version"]


def keepalived_conf(
    *,
    priority: int,
    vrid: int,
    advert_int: float,
    vips: Iterable[str],
    interface: str = "eth0",
    state: str = "BACKUP",
    router_id: str | None = None,
    instance: str = "VI_1",
) -> str:
    """A minimal VRRPv3 keepalived.conf with one instance; everything else at keepalived's
    defaults."""
    router = f"    router_id {router_id}\n" if router_id else ""
    addresses = "".join(f"        {vip}\n" for vip in vips)
    return (
        "global_defs {\n"
        f"{router}"
        "    vrrp_version 3\n"
        "}\n"
        "\n"
        f"vrrp_instance {instance} {{\n"
        f"    state {state}\n"
        f"    interface {interface}\n"
        f"    virtual_router_id {vrid}\n"
        f"    priority {priority}\n"
        f"    advert_int {advert_int:g}\n"
        "    virtual_ipaddress {\n"
        f"{addresses}"
        "    }\n"
        "}\n"
    )


def keepalived_version() -> str:
    proc = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0] if first else "unknown"


class KeepalivedNode:
    """One keepalived process on a lab host; files are ``keepalived-NAME.*`` in ``workdir``."""

    def __init__(self, host: Host, workdir: Path, name: str | None = None) -> None:
        self.host = host
        base = workdir / f"keepalived-{name or host.name}"
        self.conf_path = base.with_suffix(".conf")
        self.pid_path = base.with_suffix(".pid")
        self.vrrp_pid_path = base.with_name(base.name + "-vrrp.pid")
        self.log_path = base.with_suffix(".log")
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, conf: str) -> None:
        """Write ``conf`` and start keepalived with it (returns at once; see wait_started)."""
        self.conf_path.write_text(conf)
        argv = [
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--use-file",
            str(self.conf_path),
            "--pid",
            str(self.pid_path),
            "--vrrp_pid",
            str(self.vrrp_pid_path),
        ]
        with self.log_path.open("ab") as log:
            # Host.popen starts a new session: `ip netns exec` execs keepalived, so its parent
            # process leads the group and the VRRP child stays in it.
            self.proc = self.host.popen(argv, stdout=log, stderr=log)

    def vrrp_pid(self) -> int | None:
        """The VRRP child's pid (from its pid file), or None before it has started."""
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(self.vrrp_pid_path.read_text().split()[0])
        return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_started(self, timeout: float = 10.0) -> None:
        """Until the parent runs and has started its VRRP child."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"keepalived on {self.host.name} exited {self.proc.returncode}:\n{self.log()}"
                )
            if self.vrrp_pid() is not None:
                return
            time.sleep(0.02)
        raise TimeoutError(f"keepalived on {self.host.name} not started in {timeout} s")

    def kill(self) -> None:
        """A crash: SIGKILL parent and VRRP child at once, so neither sends anything."""
        child = self.vrrp_pid()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)

    def stop(self, timeout: float = 15.0) -> int:
        """A clean shutdown: SIGTERM the parent, which stops the VRRP child (priority-0
        advert, VIPs removed). Returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill whatever still runs (idempotent)."""
        self.kill()
