"""The peer channel's UDP socket (asyncio-dgram): one per daemon, dual-stack."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import asyncio_dgram

IPAddress = IPv4Address | IPv6Address
Handler = Callable[[bytes, IPAddress, int], None]


def _wire(addr: IPAddress) -> str:
    """A dual-stack IPv6 socket reaches IPv4 peers through v4-mapped addresses."""
    return f"::ffff:{addr}" if isinstance(addr, IPv4Address) else str(addr)


class PeerSocket:
    def __init__(self, port: int) -> None:
        self.port = port
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.send_errors = 0

    async def start(self, handler: Handler) -> None:
        self._stream = await asyncio_dgram.bind(("::", self.port))
        self._task = asyncio.create_task(self._receive(handler), name="peer-channel")

    def send(self, data: bytes, addr: IPAddress, port: int | None = None) -> None:
        """Fire and forget: the send runs as a task; a failure is counted in send_errors."""
        if len(self._sends) >= 256:
            self.send_errors += 1
            return
        task = asyncio.create_task(self._send(data, (_wire(addr), port or self.port)))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            await self._stream.send(data, addr)
        except Exception:  # OSError, or asyncio-dgram's TransportClosed
            self.send_errors += 1

    async def _receive(self, handler: Handler) -> None:
        while True:
            data, (host, port, *_) = await self._stream.recv()
            addr = ip_address(host)
            if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            handler(data, addr, port)

    async def close(self) -> None:
        for task in self._sends:
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._stream is not None:
            self._stream.close()
