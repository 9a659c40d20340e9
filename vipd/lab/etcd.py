"""Run a real single-node etcd for tests and demos: on loopback, or inside a lab namespace host.

Test tooling, not part of the daemon. It runs Debian's ``etcd`` (etcd-server 3.4, installed by
``scripts/install --test``) with a private data directory and its own cluster token, so parallel
runs cannot join each other, and hands back an :class:`EtcdProcess` that can stop, crash
(SIGKILL), freeze (SIGSTOP), thaw and restart the server on the same data directory, which is
what the witness-failure tests need.

Timing: the Raft heartbeat and election timeout are shortened for tests (10 ms / 100 ms by
default, instead of etcd's 100 ms / 1000 ms). Besides making the single node elect itself at
once, this lowers the minimum lease TTL etcd applies: etcd raises every lease to at least
``ceil(1.5 * election timeout)`` (precisely ``(3 * election_ticks) // 2`` heartbeats, rounded up
to whole seconds), so a 1 s lease becomes 2 s with the default timing and stays 1 s with the
test timing; see :func:`min_lease_ttl`. Such short timeouts are for a single node on one
machine only; a real cluster needs timeouts above its network round trip.

Addresses: ``start_loopback_etcd`` listens on 127.0.0.1 with free ports picked per run (and
picks again if a port was taken meanwhile); ``start_etcd(..., host=lab_host)`` runs etcd inside
a :class:`vipd.lab.netns.Host` namespace on the URLs given (lab addresses only, e.g.
``http://192.0.2.30:2379``), is tracked by that lab (killed when it closes), and is
health-checked from inside the namespace, since the root namespace has no route to the lab.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from vipd.lab.netns import Host

__all__ = [
    "DEFAULT_ELECTION_MS",
    "DEFAULT_HEARTBEAT_MS",
    "ETCD_BINARY",
    "EtcdError",
    "EtcdProcess",
    "etcd_available",
    "free_port",
    "min_lease_ttl",
    "start_etcd",
    "start_loopback_etcd",
]

ETCD_BINARY = "etcd"
#: Test timing (ms); etcd's own defaults are 100 / 1000.
DEFAULT_HEARTBEAT_MS = 10
DEFAULT_ELECTION_MS = 100

# Run inside a namespace by ``Host.run`` to probe etcd's /health from there; exit 0 when healthy.
_HEALTH_SCRIPT = """
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/health", timeout=float(sys.argv[2])) as r:
        ok = json.loads(r.read()).get("health") == "true"
except Exception:
    ok = False
sys.exit(0 if ok else 1)
"""


class EtcdError(RuntimeError):
    """etcd could not be started, or did not become healthy."""


def etcd_available() -> bool:
    """True if the etcd binary is on PATH."""
    return shutil.which(ETCD_BINARY) is not None


def min_lease_ttl(heartbeat_ms: int, election_ms: int) -> int:
    """The minimum lease TTL (whole seconds) etcd 3.4 applies with this Raft timing.

    etcd's lessor uses ``(3 * election_ticks) // 2`` heartbeat intervals, rounded up to a whole
    second, where ``election_ticks = election_ms // heartbeat_ms``. Measured with 3.4.23: a 1 s
    request is granted 2 s with the defaults (100/1000 ms) and 1 s with 10/100 or 50/500 ms.
    """
    ticks = election_ms // heartbeat_ms
    return max(1, math.ceil((3 * ticks) // 2 * heartbeat_ms / 1000))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdProcess:
    """One running (or stopped) single-node etcd; made by :func:`start_etcd`.

    ``stop``/``kill`` end it, ``start`` brings it back on the same data directory and URLs
    (keys, leases and revisions survive), ``freeze``/``thaw`` make it hang without closing
    connections. Usable as a context manager; ``stop`` is idempotent.
    """

    def __init__(
        self,
        data_dir: Path,
        client_url: str,
        peer_url: str,
        host: Host | None,
        name: str,
        heartbeat_ms: int,
        election_ms: int,
        log_path: Path,
    ) -> None:
        self.data_dir = data_dir
        self.client_url = client_url.rstrip("/")
        self.peer_url = peer_url.rstrip("/")
        self.host = host
        self.name = name
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        #: etcd's stdout and stderr, appended across restarts.
        self.log_path = log_path
        self.proc: subprocess.Popen[Any] | None = None
        self._token = f"vipd-test-{secrets.token_hex(4)}"

    def __repr__(self) -> str:
        where = f" in {self.host.name}" if self.host is not None else ""
        return f"EtcdProcess({self.client_url}{where}, running={self.running})"

    @property
    def endpoints(self) -> list[str]:
        """Client URLs, as an etcd client (e.g. the etcd witness backend) wants them."""
        return [self.client_url]

    @property
    def min_lease_ttl(self) -> int:
        """Minimum lease TTL (s) this server applies; see :func:`min_lease_ttl`."""
        return min_lease_ttl(self.heartbeat_ms, self.election_ms)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        """The etcd command line (copy it into a shell to run the same server by hand)."""
        return [
            ETCD_BINARY,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.name}={self.peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self._token}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Start etcd (again) and wait until /health says it has a leader."""
        if self.running:
            raise EtcdError(f"{self!r} is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            kw: dict[str, Any] = {
                "stdin": subprocess.DEVNULL,
                "stdout": log,
                "stderr": subprocess.STDOUT,
            }
            if self.host is None:
                self.proc = subprocess.Popen(self.argv(), start_new_session=True, **kw)
            else:
                self.proc = self.host.popen(self.argv(), **kw)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Wait until etcd answers /health with a leader; EtcdError if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise EtcdError(f"etcd exited ({code}) before it was healthy:\n{self.log_tail()}")
            if self.is_healthy(probe_timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise EtcdError(f"etcd not healthy within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def is_healthy(self, probe_timeout: float = 1.0) -> bool:
        """One /health probe (from inside the namespace for a lab host)."""
        if self.host is not None:
            proc = self.host.run(
                sys.executable,
                "-c",
                _HEALTH_SCRIPT,
                self.client_url,
                str(probe_timeout),
                check=False,
            )
            return proc.returncode == 0
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=probe_timeout) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``grace`` s; idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.thaw()  # a stopped process cannot act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10.0)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: etcd keeps its sockets but answers nothing (requests time out)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: undo :meth:`freeze`."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of etcd's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EtcdProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_etcd(
    data_dir: str | os.PathLike[str],
    client_url: str,
    peer_url: str,
    host: Host | None = None,
    *,
    name: str = "vipd-test",
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
    election_ms: int = DEFAULT_ELECTION_MS,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = 15.0,
) -> EtcdProcess:
    """Start a single-node etcd and wait until it is healthy.

    ``data_dir`` should not exist yet (etcd creates it; a test passes a path under pytest's
    ``tmp_path``). ``host`` runs it inside that lab host's namespace. The log goes to
    ``log_path`` (default: ``data_dir`` + ``.log``). Raises :class:`EtcdError` when etcd exits
    or is not healthy within ``timeout`` s.
    """
    if not etcd_available():
        raise EtcdError(f"{ETCD_BINARY!r} not found on PATH (scripts/install --test)")
    if election_ms < 5 * heartbeat_ms:
        raise ValueError("etcd wants election_ms >= 5 * heartbeat_ms")
    path = Path(data_dir)
    log = Path(log_path) if log_path is not None else path.with_name(path.name + ".log")
    etcd = EtcdProcess(path, client_url, peer_url, host, name, heartbeat_ms, election_ms, log)
    etcd.start(timeout)
    return etcd


def start_loopback_etcd(
    data_dir: str | os.PathLike[str], attempts: int = 5, **kw: Any
) -> EtcdProcess:
    """:func:`start_etcd` on 127.0.0.1 with two free ports, picking again (up to ``attempts``
    times) if etcd could not bind because another process took a port in the meantime."""
    path = Path(data_dir)
    for attempt in range(attempts):
        client, peer = free_port(), free_port()
        if client == peer:
            continue
        try:
            return start_etcd(path, f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}", **kw)
        except EtcdError as exc:
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise
            shutil.rmtree(path, ignore_errors=True)
            path.with_name(path.name + ".log").unlink(missing_ok=True)
    raise EtcdError("no free port pair for etcd")
