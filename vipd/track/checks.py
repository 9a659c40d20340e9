"""The checks behind the trackers, all on the daemon's event loop: nothing here blocks it.

Scripts (and notify hooks) run as asyncio subprocesses in their own process group, which is
killed as a whole when the command overruns its timeout or the daemon stops waiting for it (a
hung check must count as a failure, not hang the tracker: keepalived issue #535). HTTP(S) and
TCP checks are native coroutines (httpx, asyncio streams): no fork per check. Interface state
comes from rtnetlink link events (pyroute2's AsyncIPRoute on this loop), never from polling.

Every check returns ``(ok, error)``; the file check returns the integer it read as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from vipd.net.rtnl import RTMGRP_LINK, AsyncIPRoute

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("vipd.track")

CheckResult = tuple[bool, str | None]

#: How much of a command's output is kept (for logs and errors); the rest is read and dropped.
OUTPUT_LIMIT = 4096
#: Bytes read from a tracked file: an integer and some blanks.
_FILE_LIMIT = 64

_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int | None  # None: killed at its timeout, or could not start
    output: str  # stdout and stderr, interleaved, at most OUTPUT_LIMIT bytes (decoded)
    truncated: bool
    timed_out: bool = False
    error: str | None = None  # could not start (not found, not executable, ...)

    def describe(self, timeout: float) -> str:
        """A one-line reason for logs and tracker status."""
        if self.error is not None:
            return f"cannot run: {self.error}"
        if self.timed_out:
            return f"timed out after {timeout:g} s (process group killed)"
        return f"exit status {self.returncode}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run ``argv`` (no shell) in a new session, stdin from /dev/null, and wait at most
    ``timeout`` seconds for it to exit; then SIGKILL its whole process group. Cancelling the
    caller kills the group too. Never raises for the command's own failures.

    Output goes to an unlinked temporary file, not a pipe: asyncio's ``wait()`` also waits
    for every pipe to close, so a child the command left running (``daemon &``) would hold a
    pipe open and turn a finished command into a timeout. Only the command's own exit
    counts; what it left behind is not waited for, nor killed unless it overran.
    """
    with tempfile.TemporaryFile(prefix="vipd-") as out:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return CommandResult(None, "", False, error=exc.strerror or str(exc))
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            await proc.wait()
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            await asyncio.shield(proc.wait())
            raise
        out.seek(0)
        data = out.read(OUTPUT_LIMIT + 1)
    return CommandResult(
        None if timed_out else proc.returncode,
        data[:OUTPUT_LIMIT].decode(errors="replace"),
        len(data) > OUTPUT_LIMIT,
        timed_out=timed_out,
    )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def check_script(argv: Sequence[str], timeout: float) -> CheckResult:
    """Exit status 0 is OK; anything else, a timeout or a failure to start is a failure."""
    result = await run_command(argv, timeout)
    if result.returncode == 0:
        return True, None
    reason = result.describe(timeout)
    if result.output.strip():
        reason = f"{reason}: {_short(result.output)}"
    return False, reason


def http_client(verify_tls: bool = True) -> httpx.AsyncClient:
    """A client for one HTTP tracker: no proxies from the environment (a health check of the
    local proxy must not go through another one), no redirects followed, and a fresh
    connection for every check, so a proxy that stopped accepting is noticed. (httpx is
    imported here, by the first HTTP tracker: a daemon without one does not pay its memory.)"""
    import httpx

    return httpx.AsyncClient(
        verify=verify_tls,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def check_http(
    client: httpx.AsyncClient, url: str, status: int, timeout: float
) -> CheckResult:
    """OK when ``url`` answers with ``status`` within ``timeout`` seconds (headers; the body
    is not read)."""
    import httpx

    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, timeout=timeout) as response:
                code = response.status_code
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except httpx.TimeoutException:
        return False, f"no answer within {timeout:g} s"
    except (httpx.HTTPError, OSError) as exc:
        return False, _short(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if code != status:
        return False, f"status {code}, expected {status}"
    return True, None


async def check_tcp(host: str, port: int, timeout: float) -> CheckResult:
    """OK when a TCP connection to ``host``:``port`` is established within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    except TimeoutError:
        return False, f"no connection within {timeout:g} s"
    except OSError as exc:
        return False, _short(os.strerror(exc.errno) if exc.errno else str(exc) or repr(exc))
    return True, None


def read_file_value(path: str) -> tuple[bool, str | None, int]:
    """The integer in ``path`` (keepalived's track_file). A missing or unreadable file, or one
    that does not hold an integer, is a failure. The read is a single small one, done on the
    loop like a procfs read."""
    try:
        with open(path, "rb") as f:
            data = f.read(_FILE_LIMIT + 1)
    except OSError as exc:
        return False, exc.strerror or str(exc), 0
    text = data[:_FILE_LIMIT].decode(errors="replace").strip()
    try:
        if len(data) > _FILE_LIMIT:
            raise ValueError
        return True, None, int(text)
    except ValueError:
        shown = text[:20] + ("..." if len(text) > 20 else "")
        return False, f"not an integer: {shown!r}", 0


# ---- interfaces -------------------------------------------------------------------------------

LinkCallback = Callable[[str, bool, str | None], None]


class LinkWatcher:
    """Follows the link state of some interfaces through rtnetlink events.

    One netlink socket, bound to RTMGRP_LINK before the initial dump so no change is lost in
    between. ``on_link(name, ok, error)`` is called with the state found by the dump, then on
    every link message for a watched name: OK means administratively up with carrier
    (IFF_UP and IFF_LOWER_UP); down, no carrier or a missing interface is a failure. If the
    socket fails (e.g. the kernel dropped events, ENOBUFS), it is reopened and the state
    dumped again.
    """

    def __init__(self, names: Iterable[str], on_link: LinkCallback) -> None:
        self.names = frozenset(names)
        self._on_link = on_link
        self._ipr: Any = None
        self._task: asyncio.Task[None] | None = None
        self._index: dict[int, str] = {}  # ifindex -> name, to notice renames
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="link-watcher")
        await self.ready.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close_socket()

    def _close_socket(self) -> None:
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    async def _run(self) -> None:
        while True:
            try:
                await self._open_and_dump()
                self.ready.set()
                while True:
                    async for msg in self._ipr.get():
                        self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a netlink failure must not end link tracking
                log.error("link-watch-failed", error=str(exc) or type(exc).__name__)
                self._close_socket()
                if not self.ready.is_set():
                    for name in sorted(self.names):
                        self._on_link(name, False, f"cannot watch links: {exc}")
                    self.ready.set()
                await asyncio.sleep(1.0)

    async def _open_and_dump(self) -> None:
        self._close_socket()
        self._ipr = AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK)
        seen: set[str] = set()
        self._index.clear()
        async for msg in await self._ipr.link("dump"):
            name = self._handle(msg)
            if name is not None:
                seen.add(name)
        for name in sorted(self.names - seen):
            self._on_link(name, False, "no such interface")

    def _handle(self, msg: Any) -> str | None:
        """One RTM_NEWLINK / RTM_DELLINK message; returns the watched name it was about."""
        if msg.get("family", socket.AF_UNSPEC) != socket.AF_UNSPEC:
            return None  # e.g. AF_BRIDGE port messages: not about the link itself
        event = msg.get("event")
        index = int(msg.get("index", 0))
        name = msg.get_attr("IFLA_IFNAME")
        old = self._index.get(index)
        if event == "RTM_DELLINK":
            self._index.pop(index, None)
            name = name or old
            if name in self.names:
                self._on_link(name, False, "interface removed")
                return str(name)
            return None
        if name is None:
            return None
        name = str(name)
        self._index[index] = name
        if old is not None and old != name and old in self.names:
            self._on_link(old, False, f"interface renamed to {name}")
        if name not in self.names:
            return None
        flags = int(msg.get("flags", 0))
        if not flags & _IFF_UP:
            self._on_link(name, False, "interface is down")
        elif not flags & _IFF_LOWER_UP:
            self._on_link(name, False, "no carrier")
        else:
            self._on_link(name, True, None)
        return name
