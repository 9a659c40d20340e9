"""vipd.timers: one wake-up for many deadlines (on a fake loop and clock), and the timerfd
alarm on a real loop and CLOCK_BOOTTIME."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from vipd.timers import TimerFdAlarm, Timers


class FakeHandle:
    def __init__(self, loop: FakeLoop, at: float, callback: Any) -> None:
        self.loop, self.at, self.callback, self.cancelled = loop, at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_later on a clock the test moves; run_until(t) fires what is due in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[FakeHandle] = []

    def call_later(self, delay: float, callback: Any) -> FakeHandle:
        handle = FakeHandle(self, self.now + delay, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def run_until(self, t: float) -> int:
        wakeups = 0
        while True:
            due = [h for h in self.pending() if h.at <= t]
            if not due:
                self.now = t
                return wakeups
            handle = min(due, key=lambda h: h.at)
            handle.cancelled = True
            self.now = max(self.now, handle.at)
            wakeups += 1
            handle.callback()


class LoopAlarm:
    """The alarm on the fake loop's call_later (the daemon's is a timerfd)."""

    def __init__(self, loop: FakeLoop, callback: Any) -> None:
        self.loop, self.callback = loop, callback
        self.handle: FakeHandle | None = None

    def set(self, at: float) -> None:
        self.close()
        self.handle = self.loop.call_later(max(0.0, at - self.loop.now), self.callback)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


def make(granularity: float = 0.001) -> tuple[FakeLoop, Timers[str], list[tuple[float, str]]]:
    loop = FakeLoop()
    fired: list[tuple[float, str]] = []
    timers: Timers[str] = Timers(
        lambda due: LoopAlarm(loop, due),
        lambda: loop.now,
        lambda key: fired.append((loop.now, key)),
        granularity,
    )
    return loop, timers, fired


def test_deadlines_in_one_granule_share_one_wakeup_in_deadline_order() -> None:
    loop, timers, fired = make(0.001)
    timers.arm("b", 0.1004)
    timers.arm("a", 0.1002)
    timers.arm("c", 0.1013)
    assert len(loop.pending()) == 1
    assert loop.run_until(1.0) == 2
    assert [k for _, k in fired] == ["a", "b", "c"]
    assert fired[0][0] == fired[1][0] == pytest.approx(0.101)  # rounded up, never early
    assert fired[2][0] == pytest.approx(0.102)


def test_a_later_deadline_keeps_the_earlier_one_and_cancel_forgets_the_key() -> None:
    loop, timers, fired = make()
    timers.arm("a", 0.5)
    timers.arm("a", 0.9)  # kept at 0.5: the cores check the time when it fires
    assert timers.armed("a") == 0.5
    timers.arm("a", 0.2)  # earlier: moves
    assert timers.armed("a") == 0.2
    timers.arm("b", 0.3)
    timers.cancel("b")
    loop.run_until(1.0)
    assert fired == [(pytest.approx(0.2), "a")]
    assert timers.armed("a") is None


def test_a_key_armed_again_from_its_callback_for_now_runs_on_the_next_wakeup() -> None:
    loop = FakeLoop()
    runs: list[float] = []
    timers: Timers[str] = Timers(
        lambda due: LoopAlarm(loop, due),
        lambda: loop.now,
        lambda k: None,
    )

    def fire(key: str) -> None:
        runs.append(loop.now)
        if len(runs) < 3:
            timers.arm(key, loop.now)  # due at once: must not loop inside this wake-up

    timers._fire = fire
    timers.arm("a", 0.01)
    assert loop.run_until(1.0) == 3
    assert len(runs) == 3


def test_close_cancels_the_loop_timer_and_ignores_later_arms() -> None:
    loop, timers, fired = make()
    timers.arm("a", 0.5)
    timers.close()
    assert loop.pending() == []
    timers.arm("b", 0.6)  # after close (shutting down): ignored
    assert loop.pending() == []
    loop.run_until(1.0)
    assert fired == []


def test_deadlines_on_the_granule_grid_are_not_rounded_a_granule_up_by_float_noise() -> None:
    loop, timers, fired = make(0.001)
    timers.arm("a", 3 * 0.1)  # 0.30000000000000004
    loop.run_until(1.0)
    assert fired == [(pytest.approx(0.3, abs=1e-9), "a")]


def test_timerfd_alarm_goes_off_at_its_boottime_and_can_be_moved() -> None:
    def boottime() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        woke = loop.create_future()
        calls = []

        def due() -> None:
            calls.append(boottime())
            if not woke.done():
                woke.set_result(calls[-1])

        alarm = TimerFdAlarm(loop, due)
        try:
            alarm.set(boottime() + 5.0)
            target = boottime() + 0.05
            alarm.set(target)  # replaces the first setting
            at = await asyncio.wait_for(woke, 2.0)
            await asyncio.sleep(0.1)
        finally:
            alarm.close()
        return target, at, len(calls)

    target, at, calls = asyncio.run(main())
    assert calls == 1
    assert target <= at < target + 1.0  # never early (how late depends on the machine)
