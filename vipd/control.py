"""The control socket: one JSON object per line each way, over a Unix stream socket.

Protocol (documented for scripts in docs/control.md)::

    -> {"cmd": "status"}
    <- {"ok": true, "result": {...}}            (or {"ok": false, "error": "..."})
    -> {"cmd": "failover", "instance": "web", "force": false, "timeout": 30}
    -> {"cmd": "maintenance", "on": true, "instance": null}
    -> {"cmd": "reload"}
    -> {"cmd": "events"}
    <- {"ok": true, "result": "streaming"}, then one {"event": ...} object per line until the
       client hangs up

The socket is created mode 0600 (root only), or 0660 with ``control_group``: whoever can talk
to it can move the VIP. Garbage, oversized or unknown requests get an error answer and never
reach the daemon's state; the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any, Protocol

import structlog

MAX_REQUEST = 64 * 1024
COMMANDS = ("status", "failover", "maintenance", "reload", "events")
log = structlog.get_logger("vipd.control")


class ControlError(Exception):
    """A request the daemon refuses; the message is the answer's error."""


class Controlled(Protocol):
    def status(self) -> dict[str, Any]: ...

    async def failover(self, instance: str | None, force: bool, timeout: float) -> Any: ...

    def maintenance(self, on: bool, instance: str | None) -> Any: ...

    async def reload(self) -> Any: ...

    def events(self) -> AsyncIterator[dict[str, Any]]: ...


class ControlServer:
    def __init__(self, path: str, daemon: Controlled, group: str | None = None) -> None:
        self.path = path
        self.daemon = daemon
        self.group = group
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, self.path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        if self.group is not None:
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(self.path, 0o660)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"ok": False, "error": "request too large"})
                    return
                if not line:
                    return
                request = parse(line)
                if isinstance(request, str):
                    await _send(writer, {"ok": False, "error": request})
                elif request["cmd"] == "events":
                    await self._stream(reader, writer)
                    return
                else:
                    await _send(writer, await self.answer(request))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        try:
            if cmd == "status":
                result: Any = self.daemon.status()
            elif cmd == "failover":
                result = await self.daemon.failover(
                    request.get("instance"),
                    bool(request.get("force", False)),
                    float(request.get("timeout", 30.0)),
                )
            elif cmd == "maintenance":
                result = self.daemon.maintenance(bool(request["on"]), request.get("instance"))
            else:  # reload
                result = await self.daemon.reload()
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "result": result}

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send(writer, {"ok": True, "result": "streaming"})
        hangup = asyncio.ensure_future(reader.read())  # EOF: the client went away
        events = self.daemon.events()
        try:
            while True:
                nxt = asyncio.ensure_future(anext(events))
                done, _ = await asyncio.wait({nxt, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if hangup in done:
                    nxt.cancel()
                    return
                await _send(writer, nxt.result())
        finally:
            hangup.cancel()
            await events.aclose()  # type: ignore[attr-defined]


def parse(line: bytes) -> dict[str, Any] | str:
    """A validated request, or the error to answer with."""
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        return 'expected an object like {"cmd": "status"}'
    cmd = request["cmd"]
    if cmd not in COMMANDS:
        return f"unknown command {cmd[:40]!r} (known: {', '.join(COMMANDS)})"
    instance = request.get("instance")
    if instance is not None and not isinstance(instance, str):
        return "instance must be a string or null"
    if cmd == "maintenance" and not isinstance(request.get("on"), bool):
        return 'maintenance needs "on": true or false'
    timeout = request.get("timeout", 30.0)
    if cmd == "failover" and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 600
    ):
        return "timeout must be a number of seconds in (0, 600]"
    return request


async def _send(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()


def request(
    path: str, cmd: str, timeout: float = 5.0, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Blocking client used by vipctl and the tests; ``timeout`` is the socket's."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, **(params or {})}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer


def stream(path: str) -> Any:
    """Blocking generator over ``events``: yields each event dict as it arrives."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b'{"cmd": "events"}\n')
        with sock.makefile("rb") as f:
            first = json.loads(f.readline())
            if not first.get("ok"):
                raise ValueError(first.get("error"))
            for line in f:
                yield json.loads(line)
