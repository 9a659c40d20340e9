"""A health endpoint whose behaviour a test switches by writing a file: the stand-in for the
proxy's ``/health`` in tracking tests (docs/tracking.md).

``python -m vipd.lab.health --port 8081 --mode-file PATH`` listens on 127.0.0.1 and, for each
connection, reads PATH (re-read every time; missing means "ok"):

- ``ok``: answers ``HTTP/1.0 200 OK``;
- ``fail``: answers ``HTTP/1.0 503 Service Unavailable``;
- ``hang``: accepts the connection, reads the request and never answers (a wedged proxy,
  the case a timeout must catch).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

__all__ = ["main", "serve"]

_ANSWERS = {
    "ok": b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
    "fail": b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nfail\n",
}


def _mode(path: Path) -> str:
    try:
        return path.read_text().strip() or "ok"
    except FileNotFoundError:
        return "ok"


async def serve(port: int, mode_file: Path, host: str = "127.0.0.1") -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await reader.readuntil(b"\r\n\r\n")
            answer = _ANSWERS.get(_mode(mode_file))
            if answer is None:  # hang: keep the connection open, say nothing
                await reader.read()  # until the client gives up
                return
            writer.write(answer)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode-file", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.mode_file, args.host))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
