"""The control socket: one JSON object per line each way, over a Unix stream socket.

Request ``{"cmd": "status"}``; answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. The socket is created mode 0600 (root only): whoever can
talk to it can move the VIP. Garbage, oversized or unknown requests get an error answer and
never reach the daemon's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from typing import Any, Protocol

import structlog

MAX_REQUEST = 64 * 1024
log = structlog.get_logger("vipd.control")


class Controlled(Protocol):
    def status(self) -> dict[str, Any]: ...


class ControlServer:
    def __init__(self, path: str, daemon: Controlled) -> None:
        self.path = path
        self.daemon = daemon
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
                    await self._answer(writer, {"ok": False, "error": "request too large"})
                    return
                if not line:
                    return
                await self._answer(writer, self.handle(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'expected an object like {"cmd": "status"}'}
        cmd = request["cmd"]
        if cmd == "status":
            return {"ok": True, "result": self.daemon.status()}
        return {"ok": False, "error": f"unknown command {cmd!r} (known: status)"}

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()


def request(path: str, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Blocking client used by vipctl and the tests."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer
