"""A tiny TCP service that tells clients which node they reached.

``python -m vipd.lab.responder --name n1 --port 8080`` listens on ``[::]``
(dual-stack, so the same socket serves IPv4 and IPv6 clients, VIPs included)
and answers every connection with ``n1\\n``, then closes it. Run one in each
node's namespace; :mod:`vipd.lab.probe` then shows which node holds the VIP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

__all__ = ["main", "serve"]


def _listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket; for an IPv6 wildcard, dual-stack (IPV6_V6ONLY=0) regardless of
    the net.ipv6.bindv6only default."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(name: str, port: int, host: str = "::", stop: asyncio.Event | None = None) -> None:
    """Answer every connection with ``name`` until ``stop`` is set."""
    reply = (name + "\n").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(reply)
            await writer.drain()
        except OSError:
            pass  # client gave up (probe timeout); nothing to do
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    stop = stop if stop is not None else asyncio.Event()
    server = await asyncio.start_server(handle, sock=_listen_socket(host, port))
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vipd.lab.responder``."""
    parser = argparse.ArgumentParser(
        prog="python -m vipd.lab.responder",
        description="Answer every TCP connection with NAME and a newline.",
    )
    parser.add_argument("--name", required=True, help="what to answer, e.g. the node name")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="::", help="address to bind (default: dual-stack any)")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.name, args.port, args.host, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
