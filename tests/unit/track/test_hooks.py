"""Hook queues with real processes: order, timeout kill, failures, nothing blocks the caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vipd.track.hooks import HookQueue


def append(path: Path, word: str) -> tuple[str, ...]:
    return ("sh", "-c", f'echo "$0" >> {path}', word)


def test_hooks_run_in_the_order_queued(tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def scenario() -> HookQueue:
        queue = HookQueue("instance web", 5.0)
        # A slow first hook must not let later ones overtake it.
        queue.push([("sh", "-c", f"sleep 0.3; echo first >> {log}")], "BACKUP")
        queue.push([append(log, "second"), append(log, "third")], "MASTER")
        assert queue.pending == 3  # push returned at once; nothing ran yet
        await queue.close()
        return queue

    queue = asyncio.run(scenario())
    assert log.read_text().split() == ["first", "second", "third"]
    assert queue.counters["hook:ok"] == 3 and queue.pending == 0


def test_a_hung_hook_is_killed_at_its_timeout_and_the_next_one_runs(tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def scenario() -> HookQueue:
        queue = HookQueue("group edge", 0.3)
        queue.push([("sleep", "300"), ("false",), ("/nonexistent/hook",)], "FAULT")
        queue.push([append(log, "after")], "BACKUP")
        await queue.close()
        return queue

    queue = asyncio.run(scenario())
    assert log.read_text().split() == ["after"]
    assert dict(queue.counters) == {"hook:timed-out": 1, "hook:failed": 2, "hook:ok": 1}


def test_closing_an_unused_queue_is_a_no_op() -> None:
    asyncio.run(HookQueue("instance web", 1.0).close())
