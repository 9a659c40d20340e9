"""Podman helpers for running the vipd image in the namespace lab (tests and manual pokes).

The image is the project's ``Dockerfile``; the containers join the network namespaces of lab
hosts (``--network ns:/run/netns/NAME``), so everything the lab measures (who holds the VIP,
what the client's ARP entry says) works on containerised vipd exactly as on plain processes.

This machine's constraints (docs/containers.md): no Docker engine and no registry, so the
Python base image is built locally with debootstrap and imported; podman runs with runc and
cgroupfs, and with explicit ulimits that do not exceed the machine's. Every command is logged
and can be copied into a shell.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vipd.lab.netns import Host, LabCommandError

__all__ = [
    "BASE_PACKAGES",
    "IMAGE_UID",
    "Container",
    "Podman",
    "containers_problem",
]

log = logging.getLogger(__name__)

#: What the Dockerfile needs from a base: python3 with venv; iproute2 for poking around;
#: systemd to run the shipped units under a real one (tests/integration/test_systemd.py).
BASE_PACKAGES = ("python3", "python3-venv", "iproute2", "systemd")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: uid and gid of the image's ``vipd`` user (fixed in the Dockerfile): a directory bind-mounted
#: at /run/vipd must be writable by it.
IMAGE_UID = 10001


def containers_problem() -> str | None:
    """Why containers cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "container tests need root (rootful podman joining lab namespaces)"
    missing = [t for t in ("podman", "runc", "debootstrap", "tar") if shutil.which(t) is None]
    if missing:
        return f"container tests need {', '.join(missing)}; run scripts/install --test"
    return None


class Podman:
    """Runs ``podman`` with the options this machine needs."""

    GLOBAL = ("--runtime", "runc", "--cgroup-manager=cgroupfs")
    # Within the machine's own limits: podman's defaults would try to raise them.
    LIMITS = ("--ulimit", "nofile=10000:10000", "--ulimit", "nproc=1000:1000")

    def __init__(self, binary: str = "podman") -> None:
        self.binary = binary

    def __call__(
        self,
        *args: str,
        check: bool = True,
        stdin: int | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *self.GLOBAL, *args]
        log.debug("podman: %s", " ".join(argv))
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise LabCommandError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    # ---- images ----------------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        return self("image", "exists", ref, check=False).returncode == 0

    def build_base(self, ref: str, suite: str = "bookworm", workdir: Path | None = None) -> str:
        """debootstrap a minimal ``suite`` with :data:`BASE_PACKAGES` and import it as ``ref``
        (about a minute). The root file system is deleted afterwards."""
        with tempfile.TemporaryDirectory(prefix="vipd-base-", dir=workdir) as tmp:
            root = Path(tmp) / "root"
            cmd = [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                suite,
                str(root),
            ]
            log.info("building base image %s: %s", ref, " ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise LabCommandError(proc.returncode, cmd, proc.stdout[-4000:], proc.stderr)
            tar = subprocess.Popen(
                ["tar", "-C", str(root), "-c", "."],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            assert tar.stdout is not None
            try:
                self("import", "-", ref, stdin=tar.stdout.fileno(), timeout=600)
            finally:
                tar.stdout.close()
                tar.wait()
        return ref

    def build(
        self,
        ref: str,
        base: str | None = None,
        context: Path = REPO_ROOT,
        timeout: float = 900,
    ) -> str:
        """``podman build`` the project's Dockerfile as ``ref``.

        Docker image format, so HEALTHCHECK is kept (OCI drops it); the build uses the host's
        network and CA certificates so pip inside reaches the package index like the host.
        """
        args = [
            "build",
            "--format",
            "docker",
            "--network",
            "host",
            *self.LIMITS,
            "-t",
            ref,
        ]
        if Path("/etc/ssl/certs").is_dir():
            args += ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
        if base is not None:
            args += ["--build-arg", f"BASE={base}"]
        self(*args, str(context), timeout=timeout)
        return ref

    def remove_image(self, ref: str) -> None:
        self("rmi", "-f", ref, check=False)

    # ---- containers ------------------------------------------------------------------------
    def run(
        self,
        image: str,
        name: str,
        command: Sequence[str] = (),
        host: Host | None = None,
        volumes: Iterable[tuple[str | Path, str | Path, str]] = (),
        caps: Iterable[str] | None = ("NET_ADMIN", "NET_RAW"),
        extra: Sequence[str] = (),
    ) -> Container:
        """Start a detached container; in ``host``'s network namespace when given.

        Every capability is dropped but ``caps``; ``caps=None`` runs it ``--privileged``
        instead (an init system that sandboxes its own services). ``volumes`` are (source,
        target, options).
        """
        args = ["run", "-d", "--name", name, *self.LIMITS]
        if caps is None:
            args.append("--privileged")
        else:
            args += ["--cap-drop", "ALL"]
            for cap in caps:
                args += ["--cap-add", cap]
        if host is not None:
            args += ["--network", f"ns:/run/netns/{host.ns}"]
        for src, dst, opts in volumes:
            args += ["-v", f"{src}:{dst}" + (f":{opts}" if opts else "")]
        cid = self(*args, *extra, image, *command).stdout.strip()
        return Container(self, name, cid, host)

    def remove_container(self, name: str) -> None:
        self("rm", "-f", "-t", "0", name, check=False)


@dataclass
class Container:
    podman: Podman
    name: str
    id: str
    host: Host | None = None

    def inspect(self) -> dict[str, object]:
        out = self.podman("inspect", "--type", "container", self.name).stdout
        data: list[dict[str, object]] = json.loads(out)
        return data[0]

    def state(self) -> dict[str, object]:
        state = self.inspect()["State"]
        assert isinstance(state, dict)
        return state

    def running(self) -> bool:
        return self.state().get("Running") is True

    def exit_code(self) -> int:
        code = self.state().get("ExitCode")
        return int(code) if isinstance(code, int) else -1

    def kill(self, signal: str = "KILL") -> None:
        """``podman kill``: SIGKILL by default, like a crash (no cleanup in the container)."""
        self.podman("kill", "--signal", signal, self.name)

    def stop(self, timeout: int = 10) -> None:
        """``podman stop``: SIGTERM (the image's STOPSIGNAL), SIGKILL after ``timeout``."""
        self.podman("stop", "-t", str(timeout), self.name)

    def start(self) -> None:
        self.podman("start", self.name)

    def wait_exited(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {self.name} still running after {timeout} s")
            time.sleep(0.05)
        return self.exit_code()

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", self.name, *argv, check=check)

    def healthcheck(self) -> int:
        """Run the image's HEALTHCHECK once now (0: healthy)."""
        return self.podman("healthcheck", "run", self.name, check=False).returncode

    def logs(self) -> str:
        proc = self.podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        self.podman.remove_container(self.name)
