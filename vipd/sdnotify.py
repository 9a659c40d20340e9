"""A tiny sd_notify(3) client: tell systemd we are ready, reloading, stopping, alive.

No dependency: the protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``). Outside systemd
(no ``$NOTIFY_SOCKET``) every call is a no-op that returns False, so the daemon calls these
unconditionally.

With ``Type=notify`` and ``WatchdogSec=`` in the unit (see ``systemd/vipd.service``):

- :func:`ready` once every instance has started (and again after a reload);
- :func:`reloading` when SIGHUP/``vipctl reload`` starts re-reading the config;
- :func:`stopping` when shutdown begins (before the priority-0 adverts);
- :func:`watchdog` every half :func:`watchdog_interval`, from the event loop itself, so that a
  wedged loop (the thing that would stop adverts) gets the daemon restarted;
  :func:`watchdog_loop` is a ready-made task for that;
- :func:`status` for a one-line summary that ``systemctl status vipd`` shows.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
    "watchdog_loop",
]


def _address(env: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``: a path, or ``\\0name`` for ``@name``."""
    name = env.get("NOTIFY_SOCKET", "")
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    # Empty, or a form we do not speak (systemd 254+ also allows vsock:CID:PORT).
    return None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` assignments) to the service manager.

    Returns True if the datagram was sent, False if there is no ``$NOTIFY_SOCKET`` (not run by
    systemd, or not ``Type=notify``) or sending failed. Never raises: a lost notification must
    not take the daemon down. ``env`` defaults to ``os.environ`` (tests pass their own).
    """
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def ready() -> bool:
    """Start-up (or a reload) is complete: ``READY=1``."""
    return notify("READY=1")


def reloading() -> bool:
    """A reload began: ``RELOADING=1`` with ``MONOTONIC_USEC``, which systemd 253+ needs for
    ``Type=notify-reload`` and older versions ignore. Send :func:`ready` when it is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    """Shutdown began: ``STOPPING=1``."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """Still alive: ``WATCHDOG=1``."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """A one-line status for ``systemctl status`` (newlines would end the field: replaced)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds if systemd wants pings from this process, else None.

    Reads ``$WATCHDOG_USEC``; when ``$WATCHDOG_PID`` is set it must be our pid (otherwise the
    variables were inherited from a parent that is being watched, not us). Ping at about half
    this interval, as sd_watchdog_enabled(3) recommends.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


async def watchdog_loop(
    interval: float | None = None, healthy: Callable[[], bool] | None = None
) -> None:
    """Ping the watchdog every ``interval / 2`` seconds until cancelled.

    ``interval`` defaults to :func:`watchdog_interval`; if there is none the coroutine returns
    at once. Running in the event loop, it pings only while the loop runs; ``healthy`` (if
    given) is asked before each ping, and a False answer skips that ping, so systemd restarts
    a daemon that stays unhealthy for a whole interval.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None:
        return
    period = interval / 2
    while True:
        if healthy is None or healthy():
            watchdog()
        await asyncio.sleep(period)
