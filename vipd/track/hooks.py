"""Notify hooks: run in order, one at a time, per instance (or group), off the VRRP path.

A transition only queues its commands (:meth:`HookQueue.push` never waits); one task per
queue runs them one after the other, so a slow hook delays the next hook of the same
instance (order matters: a MASTER hook must not overtake the BACKUP hook before it) but
never an advert. Each command is killed with its process group after the timeout; its exit
status and (truncated) output are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence

import structlog

from vipd.track.checks import run_command

log = structlog.get_logger("vipd.hooks")

#: Output characters kept in the log line of one hook run.
LOG_OUTPUT = 1000


class HookQueue:
    def __init__(self, owner: str, timeout: float, counters: Counter[str] | None = None) -> None:
        self.owner = owner  # "instance web" or "group edge", for logs
        self.timeout = timeout
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._queue: asyncio.Queue[tuple[tuple[str, ...], str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._running = 0

    @property
    def pending(self) -> int:
        """Hooks queued or running."""
        return self._queue.qsize() + self._running

    def push(self, argvs: Sequence[tuple[str, ...]], state: str) -> None:
        """Queue ``argvs`` (run in this order, after anything queued before)."""
        for argv in argvs:
            self._queue.put_nowait((argv, state))
        if argvs and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name=f"hooks {self.owner}"
            )

    async def close(self) -> None:
        """Wait until everything queued has run (each bounded by the timeout), then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _work(self) -> None:
        while True:
            argv, state = await self._queue.get()
            self._running = 1
            try:
                await self._run(argv, state)
            except Exception:  # one broken hook must not stop the ones after it
                log.exception("hook-crashed", owner=self.owner, command=list(argv))
            finally:
                self._running = 0
                self._queue.task_done()

    async def _run(self, argv: tuple[str, ...], state: str) -> None:
        result = await run_command(argv, self.timeout)
        output = result.output
        if len(output) > LOG_OUTPUT:
            output = output[:LOG_OUTPUT] + "..."
        elif result.truncated:
            output += "..."
        fields = {
            "owner": self.owner,
            "state": state,
            "command": list(argv),
            "status": result.returncode,
            "output": output.rstrip("\n"),
        }
        if result.returncode == 0:
            self.counters["hook:ok"] += 1
            log.info("hook", **fields)
        elif result.timed_out:
            self.counters["hook:timed-out"] += 1
            log.warning("hook-timed-out", timeout=self.timeout, **fields)
        else:
            self.counters["hook:failed"] += 1
            log.warning("hook-failed", error=result.describe(self.timeout), **fields)
