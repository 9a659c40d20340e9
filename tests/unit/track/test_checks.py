"""The asyncio checks with real processes and sockets on loopback (no root needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vipd.lab.health import serve
from vipd.track import checks
from vipd.track.checks import (
    OUTPUT_LIMIT,
    check_http,
    check_script,
    check_tcp,
    http_client,
    read_file_value,
    run_command,
)

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if gone(pid):
            return True
        await asyncio.sleep(0.05)
    return gone(pid)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# ---- commands ---------------------------------------------------------------------------------


def test_run_command_reports_status_and_output() -> None:
    result = run(lambda: run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 10))
    assert result.returncode == 3 and not result.timed_out
    assert result.output.split() == ["out", "err"]
    assert result.describe(10) == "exit status 3"


def test_run_command_keeps_only_the_head_of_long_output() -> None:
    script = f"head -c {OUTPUT_LIMIT * 20} /dev/zero | tr '\\0' x"
    result = run(lambda: run_command(["sh", "-c", script], 10))
    assert result.returncode == 0
    assert result.truncated and len(result.output) == OUTPUT_LIMIT


def test_run_command_that_cannot_start() -> None:
    result = run(lambda: run_command(["/nonexistent/check"], 10))
    assert result.returncode is None and result.error
    assert result.describe(1).startswith("cannot run: ")


def test_hung_command_is_killed_with_its_process_group_at_the_timeout() -> None:
    async def scenario() -> tuple[Any, int]:
        result = await run_command(["sh", "-c", "sleep 300 & echo $!; wait"], 0.5)
        return result, int(result.output.split()[0])

    result, child = run(scenario)
    try:
        assert result.timed_out and result.returncode is None
        assert "timed out after 0.5 s" in result.describe(0.5)
        assert run(lambda: wait_gone(child)), f"child {child} outlived its killed group"
    finally:
        kill_quietly(child)


def test_cancelling_a_command_kills_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def scenario() -> int:
        task = asyncio.ensure_future(
            run_command(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], 60)
        )
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return int(pidfile.read_text())

    child = run(scenario)
    try:
        assert run(lambda: wait_gone(child))
    finally:
        kill_quietly(child)


def test_a_command_that_leaves_a_child_behind_is_not_waited_for() -> None:
    """Its exit status counts; the child holding the pipe neither hangs the check into its
    timeout nor gets killed."""
    result = run(lambda: run_command(["sh", "-c", "sleep 300 & echo $!; exit 0"], 30))
    child = int(result.output.split()[0])
    try:
        assert result.returncode == 0 and not result.timed_out
        assert not gone(child)
    finally:
        kill_quietly(child)


def test_check_script() -> None:
    assert run(lambda: check_script(["true"], 5)) == (True, None)
    ok, error = run(lambda: check_script(["sh", "-c", "echo nginx is down; exit 1"], 5))
    assert not ok and error == "exit status 1: nginx is down"
    ok, error = run(lambda: check_script(["sleep", "30"], 0.2))
    assert not ok and error is not None and error.startswith("timed out after 0.2 s")


# ---- HTTP and TCP -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def health_server(mode_file: Path) -> AsyncIterator[int]:
    port = free_port()
    task = asyncio.ensure_future(serve(port, mode_file))
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.skipif(sys.platform != "linux", reason="signal handlers in serve()")
def test_check_http_ok_wrong_status_hang_and_refused(tmp_path: Path) -> None:
    mode = tmp_path / "mode"

    async def scenario() -> list[tuple[bool, str | None]]:
        results = []
        async with health_server(mode) as port, http_client() as client:
            url = f"http://127.0.0.1:{port}/health"
            results.append(await check_http(client, url, 200, 2))
            mode.write_text("fail")
            results.append(await check_http(client, url, 200, 2))
            results.append(await check_http(client, url, 503, 2))
            mode.write_text("hang")
            results.append(await check_http(client, url, 200, 0.3))
        async with http_client() as client:
            results.append(await check_http(client, f"http://127.0.0.1:{port}/", 200, 2))
        return results

    ok, wrong, expected_503, hang, refused = run(scenario)
    assert ok == (True, None)
    assert wrong == (False, "status 503, expected 200")
    assert expected_503 == (True, None)
    assert hang == (False, "no answer within 0.3 s")
    assert refused[0] is False and refused[1] and "ConnectError" in refused[1]


def test_check_tcp(tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with health_server(tmp_path / "mode") as port:
            up = await check_tcp("127.0.0.1", port, 2)
        return up, await check_tcp("127.0.0.1", port, 2)

    up, down = run(scenario)
    assert up == (True, None)
    assert down[0] is False and down[1] == "Connection refused"


# ---- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("7\n", (True, None, 7)),
        ("  -3  ", (True, None, -3)),
        ("0", (True, None, 0)),
        ("", (False, "not an integer: ''", 0)),
        ("seven", (False, "not an integer: 'seven'", 0)),
        ("1.5", (False, "not an integer: '1.5'", 0)),
        ("9" * 100, (False, "not an integer: '99999999999999999999...'", 0)),
    ],
)
def test_read_file_value(tmp_path: Path, content: str, expected: tuple[Any, ...]) -> None:
    path = tmp_path / "weight"
    path.write_text(content)
    assert read_file_value(str(path)) == expected


def test_read_missing_file(tmp_path: Path) -> None:
    assert read_file_value(str(tmp_path / "nope")) == (False, "No such file or directory", 0)


def test_link_watcher_reports_a_message_per_watched_name() -> None:
    """The netlink message handling on hand-made messages (the lab tests use the kernel)."""

    class Msg(dict[str, Any]):
        def get_attr(self, name: str) -> Any:
            return self.get("attrs", {}).get(name)

    seen: list[tuple[str, bool, str | None]] = []
    watcher = checks.LinkWatcher(["eth1", "eth2"], lambda *a: seen.append(a))

    def msg(event: str, index: int, name: str | None, flags: int = 0, family: int = 0) -> Msg:
        return Msg(
            event=event, index=index, flags=flags, family=family, attrs={"IFLA_IFNAME": name}
        )

    up = 0x1 | 0x10000
    watcher._handle(msg("RTM_NEWLINK", 3, "eth1", up))
    watcher._handle(msg("RTM_NEWLINK", 3, "eth1", 0x1))
    watcher._handle(msg("RTM_NEWLINK", 3, "eth1", 0))
    watcher._handle(msg("RTM_NEWLINK", 9, "eth9", up))  # not watched
    watcher._handle(msg("RTM_DELLINK", 3, "eth1", 0, family=7))  # a bridge port message
    watcher._handle(msg("RTM_NEWLINK", 4, "eth2", up))
    watcher._handle(msg("RTM_NEWLINK", 4, "wan0", up))  # renamed away
    watcher._handle(msg("RTM_DELLINK", 3, None))
    assert seen == [
        ("eth1", True, None),
        ("eth1", False, "no carrier"),
        ("eth1", False, "interface is down"),
        ("eth2", True, None),
        ("eth2", False, "interface renamed to wan0"),
        ("eth1", False, "interface removed"),
    ]
