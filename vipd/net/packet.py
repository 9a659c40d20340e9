"""Send complete, prebuilt Ethernet frames out of one interface.

Gratuitous ARP and unsolicited NA frames (see :mod:`vipd.announce.frames`) must
leave with a chosen source MAC (the VRRP virtual MAC or the interface MAC) and
must not be routed, so they go through an ``AF_PACKET``/``SOCK_RAW`` socket
bound to the interface: the kernel transmits the bytes as given.

The socket is opened with protocol 0, so it receives nothing: it never fills a
receive queue that nobody reads.  It is non-blocking because the daemon calls
:meth:`FrameSender.send` from its event loop; a full transmit queue must cost a
dropped announcement (the announcer repeats them anyway), never a stalled loop.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from types import TracebackType

__all__ = ["TRANSIENT_ERRNOS", "FrameSender"]

#: Errors that say "not now" rather than "never": a full device queue
#: (ENOBUFS, EAGAIN), or the link being down at this instant (ENETDOWN).
TRANSIENT_ERRNOS = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.EWOULDBLOCK, errno.ENETDOWN})


class FrameSender:
    """An AF_PACKET socket bound to ``ifname`` that writes raw Ethernet frames.

    Opening needs CAP_NET_RAW, and happens in the network namespace of the
    calling thread.  Raises OSError if the interface does not exist.
    """

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        #: The transient error that cut the last :meth:`send` short, or None.
        self.last_error: OSError | None = None
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((ifname, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._sock is None else self._sock.fileno()

    def send(self, frames: Sequence[bytes]) -> int:
        """Transmit ``frames`` in order and return how many went out.

        Stops at the first transient failure (ENOBUFS, EAGAIN, ENETDOWN): the
        count is then smaller than ``len(frames)`` and :attr:`last_error` holds
        the error for the caller to log; it is reset to None by every call.
        Other OSErrors (e.g. ENXIO when the interface was deleted, EMSGSIZE for
        an oversized frame) are programming or configuration errors and raise.
        """
        if self._sock is None:
            raise ValueError(f"FrameSender({self.ifname!r}) is closed")
        self.last_error = None
        sent = 0
        for frame in frames:
            try:
                self._sock.send(frame)
            except OSError as exc:
                if exc.errno in TRANSIENT_ERRNOS:
                    self.last_error = exc
                    break
                raise
            sent += 1
        return sent

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"fd={self._sock.fileno()}"
        return f"<FrameSender {self.ifname} {state}>"
