"""A vipd pair in a namespace lab: two nodes running real ``vipd`` processes, a client on the
same bridge whose neighbour entries live four hours (like the upstream device of incident A),
and TCP responders so the client can tell which node answers on the VIP.

Used by ``vipd demo``, the integration tests and the benchmarks, so all three exercise the
same thing.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipd.control import request
from vipd.lab.netns import Host, Lab

RESPONDER_PORT = 8080
WITNESS_V4 = "192.0.2.10"
WITNESS_PORT = 7480
ETCD_CLIENT_PORT = 2379


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
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


class Pair:
    """Two vipd nodes sharing one instance named ``vip``, and a client.

    ``family`` picks the VIP's family (4 or 6); both nodes get IPv4 and IPv6 addresses.
    ``witness`` ("embedded" or "etcd") adds a witness host ``w`` (192.0.2.10) on the same
    bridge and fences the instance through it; ``witness_options`` are more [witness] keys.
    ``instances`` are more [[instance]] tables for every node (each with at least name, vrid
    and vips; interface and priority default to the node's), ``groups`` [[group]] tables.
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
        witness: str | None = None,
        witness_options: dict[str, Any] | None = None,
        instances: Sequence[dict[str, Any]] = (),
        groups: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.lab = lab
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="vipd-lab-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.family = family
        self.advert_interval = advert_interval
        self.vrid = vrid
        self.common = dict(common or {})
        self.more_instances = [dict(i) for i in instances]
        self.groups = [dict(g) for g in groups]
        self.vip = self.VIP4 if family == 4 else self.VIP6
        self.vip_cidr = f"{self.VIP4}/24" if family == 4 else f"{self.VIP6}/64"
        self.nodes: dict[str, Node] = {}
        self.cut_off: set[str] = set()  # nodes whose switch port is down (pair.cut)
        self.witness = witness
        self.witness_options = dict(witness_options or {})
        self.witness_host: Host | None = None
        self.witness_proc: subprocess.Popen[Any] | None = None
        self.etcd: Any = None  # vipd.lab.etcd.EtcdProcess
        self.key_path = self.workdir / "witness.key"
        if witness is not None:
            self.key_path.write_text(secrets.token_hex(32) + "\n")
            self.witness_host = lab.add_host("w", f"{WITNESS_V4}/24", "2001:db8::10/64")
        for i, prio in enumerate(priorities, start=1):
            spec = NodeSpec(f"n{i}", f"192.0.2.{10 + i}/24", f"2001:db8::{10 + i}/64", prio)
            self._add_node(spec)
        for node in self.nodes.values():
            self.write_config(node)  # again, now that each knows its peers
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

    def write_config(
        self,
        node: Node,
        *,
        daemon: dict[str, Any] | None = None,
        instances: Sequence[dict[str, Any]] = (),
        **overrides: Any,
    ) -> None:
        """Write the node's config: the ``vip`` instance with ``overrides``, then the extra
        ``instances`` (complete [[instance]] tables; ``interface`` defaults to the node's),
        and extra ``daemon`` keys."""
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
        if self.witness is not None and "peers" not in instance:
            others = [n.spec for n in self.nodes.values() if n is not node]
            instance["peers"] = [
                (o.ipv4 if self.family == 4 else o.ipv6).split("/")[0] for o in others
            ]
        lines = [
            "[daemon]",
            f"node_name = {_toml_value(node.name)}",
            f"control_socket = {_toml_value(str(node.socket_path))}",
            'log_format = "json"',
            'log_level = "debug"',
            *(f"{k} = {_toml_value(v)}" for k, v in (daemon or {}).items()),
            "",
            *self._witness_lines(),
        ]
        extra = (
            {
                "interface": node.host.ifname,
                "priority": node.spec.priority,
                "advert_interval": self.advert_interval,
            }
            | t
            for t in self.more_instances
        )
        given = ({"interface": node.host.ifname} | t for t in instances)
        for table in (instance, *extra, *given):
            lines += ["[[instance]]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()), ""]
        for group in self.groups:
            lines += ["[[group]]", *(f"{k} = {_toml_value(v)}" for k, v in group.items()), ""]
        node.config_path.write_text("\n".join(lines))

    def _witness_lines(self) -> list[str]:
        if self.witness is None:
            return []
        table: dict[str, Any] = {"backend": self.witness, "key_file": str(self.key_path)}
        if self.witness == "etcd":
            table["endpoints"] = [f"http://{WITNESS_V4}:{ETCD_CLIENT_PORT}"]
        else:
            table["address"] = f"{WITNESS_V4}:{WITNESS_PORT}"
        table.update(self.witness_options)
        return ["[witness]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()), ""]

    # ---- the witness ---------------------------------------------------------------------
    def start_witness(self) -> None:
        """Start (or restart, on the same state) the witness on host ``w``."""
        host = self.witness_host
        assert host is not None, "Pair(witness=...) was not set"
        if self.witness == "etcd":
            if self.etcd is None:
                from vipd.lab.etcd import start_etcd

                self.etcd = start_etcd(
                    self.workdir / "etcd",
                    f"http://{WITNESS_V4}:{ETCD_CLIENT_PORT}",
                    f"http://{WITNESS_V4}:{ETCD_CLIENT_PORT + 1}",
                    host=host,
                )
            else:
                self.etcd.start()
            return
        log = (self.workdir / "witness.log").open("ab")
        self.witness_proc = host.python(
            "vipd",
            "witness",
            "--listen",
            f"{WITNESS_V4}:{WITNESS_PORT}",
            "--state",
            str(self.workdir / "witness.state"),
            "--key-file",
            str(self.key_path),
            "--lease",
            "vip",
            stdout=log,
            stderr=log,
        )
        log.close()
        time.sleep(0.3)  # bind; a request before that is lost and retransmitted anyway
        if self.witness_proc.poll() is not None:
            raise RuntimeError(
                f"witness exited {self.witness_proc.returncode}:\n{self.witness_log()}"
            )

    def stop_witness(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the witness (SIGKILL: a crash). SIGSTOP/SIGCONT freeze and thaw it."""
        if self.witness == "etcd":
            assert self.etcd is not None
            {
                signal.SIGKILL: self.etcd.kill,
                signal.SIGSTOP: self.etcd.freeze,
                signal.SIGCONT: self.etcd.thaw,
            }.get(sig, self.etcd.stop)()
            return
        proc = self.witness_proc
        assert proc is not None
        proc.send_signal(sig)
        if sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
            proc.wait(10)
            self.witness_proc = None

    def witness_log(self) -> str:
        path = self.workdir / ("etcd.log" if self.witness == "etcd" else "witness.log")
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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
        self.cut(name)
        return t_fault

    def cut(self, name: str) -> None:
        """Take the node's switch port down; its VIP then reaches nobody, so it no longer
        counts as a holder for :class:`HolderMonitor`."""
        self.cut_off.add(name)
        self.lab.cut(self.nodes[name].host)

    def restore(self, name: str) -> None:
        self.lab.restore(self.nodes[name].host)
        self.cut_off.discard(name)

    # ---- observation ---------------------------------------------------------------------
    def holders(self) -> list[str]:
        """Nodes whose eth0 carries the VIP right now (as the kernel says)."""
        return [
            name
            for name, node in self.nodes.items()
            if any(a.split("/")[0] == self.vip for a in node.host.addresses())
        ]

    def connected_holders(self) -> list[str]:
        """Holders that can reach the client network: the ones that count for split brain."""
        cut = set(self.cut_off)
        return [name for name in self.holders() if name not in cut]

    def watch_holders(self, interval: float = 0.02) -> HolderMonitor:
        return HolderMonitor(self, interval)

    def probe(self, **kw: Any) -> Any:
        return self.client.start_probe(self.vip, RESPONDER_PORT, **kw)

    def client_mac_for_vip(self) -> str | None:
        return self.client.neighbour(self.vip)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(5)
        if self.witness_proc is not None and self.witness_proc.poll() is None:
            self.witness_proc.kill()
            self.witness_proc.wait(5)
        if self.etcd is not None:
            self.etcd.kill()
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


class HolderMonitor:
    """Samples who holds the VIP (and can reach the client) every ``interval`` seconds in a
    thread, for split-brain accounting: ``dual_holder_seconds`` counts from every sample that
    saw two or more connected holders to the next sample (fencing.md S1; the goal is 0)."""

    def __init__(self, pair: Pair, interval: float = 0.02) -> None:
        self.pair = pair
        self.interval = interval
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holder-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), tuple(self.pair.connected_holders())))
            self._stop.wait(self.interval)

    def stop(self) -> HolderMonitor:
        self._stop.set()
        self._thread.join(5)
        return self

    def dual_holder_seconds(self) -> float:
        total = 0.0
        for (t0, h0), (t1, _) in zip(self.samples, self.samples[1:], strict=False):
            if len(h0) > 1:
                total += t1 - t0
        return total

    def dual_holder_samples(self) -> list[tuple[float, tuple[str, ...]]]:
        return [s for s in self.samples if len(s[1]) > 1]

    def holders_seen(self) -> set[str]:
        return {name for _, holders in self.samples for name in holders}
