"""A vipd pair in a namespace lab: two nodes running real ``vipd`` processes, a client on the
same bridge whose neighbour entries live four hours (like the upstream device of incident A),
and TCP responders so the client can tell which node answers on the VIP.

Used by ``vipd demo``, the integration tests and the benchmarks, so all three exercise the
same thing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipd.control import request
from vipd.lab.netns import Host, Lab

RESPONDER_PORT = 8080


@dataclass
class NodeSpec:
    name: str
    ipv4: str
    ipv6: str
    priority: int
    extra: dict[str, Any] = field(default_factory=dict)  # more [[instance]] keys


@dataclass
class Node:
    spec: NodeSpec
    host: Host
    config_path: Path
    socket_path: Path
    log_path: Path
    proc: subprocess.Popen[Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        answer = request(str(self.socket_path), "status", timeout=timeout)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.name}: {answer}")
        result: dict[str, Any] = answer["result"]
        return result

    def instance(self, name: str = "vip") -> dict[str, Any]:
        for inst in self.status()["instances"]:
            if inst["name"] == name:
                return inst  # type: ignore[no-any-return]
        raise KeyError(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


class Pair:
    """Two vipd nodes sharing one instance named ``vip``, and a client.

    ``family`` picks the VIP's family (4 or 6); both nodes get IPv4 and IPv6 addresses.
    """

    VIP4 = "192.0.2.100"
    VIP6 = "2001:db8::100"

    def __init__(
        self,
        lab: Lab,
        workdir: Path | None = None,
        family: int = 4,
        advert_interval: float = 1.0,
        priorities: tuple[int, int] = (150, 100),
        vrid: int = 51,
        common: dict[str, Any] | None = None,
    ) -> None:
        self.lab = lab
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="vipd-lab-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.family = family
        self.advert_interval = advert_interval
        self.vrid = vrid
        self.common = dict(common or {})
        self.vip = self.VIP4 if family == 4 else self.VIP6
        self.vip_cidr = f"{self.VIP4}/24" if family == 4 else f"{self.VIP6}/64"
        self.nodes: dict[str, Node] = {}
        for i, prio in enumerate(priorities, start=1):
            spec = NodeSpec(f"n{i}", f"192.0.2.{10 + i}/24", f"2001:db8::{10 + i}/64", prio)
            self._add_node(spec)
        self.client = lab.add_host("client", "192.0.2.50/24", "2001:db8::50/64")
        self.client.set_long_arp()

    def _add_node(self, spec: NodeSpec) -> None:
        host = self.lab.add_host(spec.name, spec.ipv4, spec.ipv6)
        base = self.workdir / spec.name
        node = Node(
            spec,
            host,
            config_path=base.with_suffix(".toml"),
            socket_path=base.with_suffix(".sock"),
            log_path=base.with_suffix(".log"),
        )
        self.nodes[spec.name] = node
        self.write_config(node)
        host.start_responder(RESPONDER_PORT)

    def write_config(self, node: Node, **overrides: Any) -> None:
        instance: dict[str, Any] = {
            "name": "vip",
            "interface": node.host.ifname,
            "vrid": self.vrid,
            "priority": node.spec.priority,
            "advert_interval": self.advert_interval,
            "vips": [self.vip_cidr],
        }
        instance.update(self.common)
        instance.update(node.spec.extra)
        instance.update(overrides)
        lines = [
            "[daemon]",
            f"node_name = {_toml_value(node.name)}",
            f"control_socket = {_toml_value(str(node.socket_path))}",
            'log_format = "json"',
            'log_level = "debug"',
            "",
            "[[instance]]",
            *(f"{k} = {_toml_value(v)}" for k, v in instance.items()),
            "",
        ]
        node.config_path.write_text("\n".join(lines))

    # ---- processes -----------------------------------------------------------------------
    def start(self, *names: str, wait: bool = True) -> None:
        for name in names or tuple(self.nodes):
            node = self.nodes[name]
            log = node.log_path.open("ab")
            node.proc = node.host.python(
                "vipd", "run", "-c", str(node.config_path), stdout=log, stderr=log
            )
            log.close()
        if wait:
            for name in names or tuple(self.nodes):
                self.wait_ready(self.nodes[name])

    def wait_ready(self, node: Node, timeout: float = 10.0) -> None:
        """Until the daemon answers on its control socket with every instance started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited {node.proc.returncode}:\n{node.log()}")
            try:
                states = [i["state"] for i in node.status(timeout=0.5)["instances"]]
                if states and "initialize" not in states:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{node.name} not ready in {timeout} s:\n{node.log()}")

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.nodes[name].proc
        assert proc is not None
        os.kill(proc.pid, sig)

    def stop(self, name: str, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        node = self.nodes[name]
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        code = node.proc.wait(timeout)
        node.proc = None
        return code

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(5)
        node.proc = None

    def crash(self, name: str) -> float:
        """A node dies hard: its vipd is SIGKILLed (no priority-0 advert, no cleanup) and its
        link is cut. Returns the time.monotonic() of the fault."""
        t_fault = time.monotonic()
        self.kill(name)
        self.lab.cut(self.nodes[name].host)
        return t_fault

    # ---- observation ---------------------------------------------------------------------
    def holders(self) -> list[str]:
        """Nodes whose eth0 carries the VIP right now (as the kernel says)."""
        return [
            name
            for name, node in self.nodes.items()
            if any(a.split("/")[0] == self.vip for a in node.host.addresses())
        ]

    def probe(self, **kw: Any) -> Any:
        return self.client.start_probe(self.vip, RESPONDER_PORT, **kw)

    def client_mac_for_vip(self) -> str | None:
        return self.client.neighbour(self.vip)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(5)
        if self._tmp is not None:
            self._tmp.cleanup()


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.02, what: str = ""
) -> float:
    """Poll ``predicate`` until true; returns the time.monotonic() it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def logs(nodes: Sequence[Node]) -> str:
    return "\n".join(f"--- {n.name} ---\n{n.log()[-4000:]}" for n in nodes)
