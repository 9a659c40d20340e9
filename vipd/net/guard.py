"""The VIP guard: a small child process that takes the daemon's VIPs off the kernel the moment
the daemon dies, however it dies (SIGKILL, OOM kill, segfault).

Without it, a master killed while its host and link stay up keeps its VIPs until their kernel
lifetime runs out (whole seconds: fencing.md S4), while its peer is granted the lease as soon as
the lease's TTL expires (Master_Down_Interval, 0.34 s at advert 0.1 s): two hosts answering ARP
for one VIP for up to 1.5 s (docs/chaos.md, finding 1). A process cannot act after its own
death, so the daemon keeps a child that can.

The daemon and the guard share a stream socket pair. Before the daemon puts a VIP on an
interface it tells the guard ``+`` (family, prefix length, interface index, address); after it
has taken one off, ``-``. The guard only listens. When the daemon's end closes, which the kernel
does as the daemon exits, the guard deletes every VIP it was told about (RTM_DELADDR over its own
netlink socket, in a few milliseconds) and exits. A daemon that shuts down cleanly has removed
its VIPs already, so the guard finds nothing left to do.

The guard ignores SIGTERM, SIGINT and SIGHUP: systemd's stop, or Ctrl-C in a terminal, signals
every process of the unit or process group, and the guard must outlive the daemon's clean
shutdown to be of use if that shutdown fails. Not covered: a daemon that is stopped or stuck
rather than dead (SIGSTOP, a stalled host); the kernel lifetime bounds those.

The guard is vipd.net.guard_proc, run as a script by a bare interpreter.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from ipaddress import IPv4Interface, IPv6Interface

from vipd.net import guard_proc
from vipd.net.guard_proc import frame, record

__all__ = ["VipGuard"]


def _key(index: int, vip: IPv4Interface | IPv6Interface) -> bytes:
    family = socket.AF_INET if isinstance(vip, IPv4Interface) else socket.AF_INET6
    return record(family, vip.network.prefixlen, index, vip.ip.packed)


class VipGuard:
    """The daemon's side: starts the guard and tells it what the daemon holds.

    :meth:`hold` and :meth:`drop` are cheap when nothing changes (a set lookup), so they may be
    called on every lifetime refresh. They may be called from any one thread at a time and
    from :meth:`restart`'s thread: a lock keeps what the guard was told in step.
    """

    def __init__(self) -> None:
        self._held: set[bytes] = set()
        self._lock = threading.Lock()
        self._sock, self._proc = self._spawn()

    @staticmethod
    def _spawn() -> tuple[socket.socket, subprocess.Popen[bytes]]:
        # A stream, not datagrams: the kernel queues at most net.unix.max_dgram_qlen (10 here)
        # unread datagrams, fewer than the VIPs a starting daemon adds before the guard reads;
        # a stream's buffer holds thousands of these messages.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # pass_fds: only the guard inherits its end, so no later child of the daemon (a
            # notify script) holds it open and keeps the guard from seeing the daemon die.
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    os.path.abspath(guard_proc.__file__),
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours, proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def fileno(self) -> int:
        """Readable (at end of file) once the guard has exited: watch it and :meth:`restart`."""
        return self._sock.fileno()

    def hold(self, index: int, vip: IPv4Interface | IPv6Interface) -> None:
        """Call before ``vip`` goes on interface ``index``."""
        key = _key(index, vip)
        if key in self._held:
            return
        with self._lock:
            self._send(frame(b"+", key))
            self._held.add(key)

    def drop(self, index: int, vip: IPv4Interface | IPv6Interface) -> None:
        """Call once ``vip`` is off interface ``index``."""
        key = _key(index, vip)
        if key not in self._held:
            return
        with self._lock:
            self._held.discard(key)
            self._send(frame(b"-", key))

    def _send(self, message: bytes) -> None:
        # If the guard is gone, restart() tells a new one everything held.
        with contextlib.suppress(OSError):
            self._sock.sendall(message)

    def restart(self) -> int:
        """Call once :meth:`fileno` is readable (the guard never writes, so that is its end of
        file): reap the guard and start a new one that is told every VIP still held. Returns
        the old guard's exit status."""
        with self._lock:
            try:
                status = self._proc.wait(2)  # its socket closes a moment before it is reapable
            except subprocess.TimeoutExpired:
                self._proc.kill()
                status = self._proc.wait()
            self._sock.close()
            self._sock, self._proc = self._spawn()
            for key in self._held:
                self._send(frame(b"+", key))
        return status

    def close(self) -> None:
        """Let the guard go (it removes whatever is still held, then exits) and reap it."""
        self._sock.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
