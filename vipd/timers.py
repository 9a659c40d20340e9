"""Every instance's deadline on one event-loop timer.

The protocol cores each report one absolute deadline (on CLOCK_BOOTTIME). Arming an asyncio
timer per instance costs a heap entry, a handle and a loop wake-up per deadline: at 100
instances with adverts every 0.1 s that is most of a master's CPU. Here the deadlines share one
heap and one loop timer, and the loop wakes at most once per ``granularity`` (the wake-up time
is rounded up to it, like the kernel's timer slack): every deadline due by then runs in that
one wake-up, in deadline order. The masters' advert deadlines fall on a common grid (see
:meth:`vipd.vrrp.machine.Machine.handle_timer`), so a host's adverts go out in one burst per
interval.

A deadline later than the one already armed for a key is ignored: the earlier wake-up finds
nothing due (the cores check the time themselves) and the key is armed again. A backup whose
master-down deadline moves back with every advert so re-arms once per Master_Down_Interval.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Timers(Generic[K]):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        fire: Callable[[K], None],
        granularity: float = 0.001,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._fire = fire
        self._granularity = granularity
        self._armed: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []  # stale entries are skipped when popped
        self._order = itertools.count()  # ties: first armed, first run
        self._handle: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None  # the clock time the loop timer is for
        self._running = False

    def armed(self, key: K) -> float | None:
        return self._armed.get(key)

    def arm(self, key: K, at: float) -> None:
        """Run ``fire(key)`` at or soon after ``at``, unless it is armed earlier already."""
        current = self._armed.get(key)
        if current is not None and current <= at:
            return
        self._armed[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        if not self._running:
            self._schedule()

    def cancel(self, key: K) -> None:
        self._armed.pop(key, None)  # its heap entry goes stale

    def close(self) -> None:
        self._armed.clear()
        self._heap.clear()
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._wake_at = None

    def _schedule(self) -> None:
        heap = self._heap
        while heap and self._armed.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            return
        at = heap[0][0]
        # Round up, but not by a whole granule for float noise (3 * 0.1 is 0.30000000000000004):
        # the adverts' grid would otherwise wake a granule late at some slots and not others.
        wake = max(at, math.ceil(at / self._granularity - 1e-6) * self._granularity)
        if self._wake_at is not None and self._wake_at <= wake:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._wake_at = wake
        self._handle = self._loop.call_later(max(0.0, wake - self._clock()), self._run)

    def _run(self) -> None:
        self._handle = self._wake_at = None
        now = self._clock()
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if self._armed.get(key) == at:
                del self._armed[key]
                due.append(key)
        self._running = True
        try:
            for key in due:
                self._fire(key)
        finally:
            self._running = False
            self._schedule()
