"""Every instance's deadline on one wake-up source.

The protocol cores each report one absolute deadline on CLOCK_BOOTTIME. Arming an asyncio
timer per instance costs a heap entry, a handle and a loop wake-up per deadline: at 100
instances with adverts every 0.1 s that was most of a master's CPU. Here the deadlines share one
heap and one alarm, and the alarm goes off at most once per ``granularity`` (its time is rounded
up to it, like the kernel's timer slack): every deadline due by then runs in that one wake-up,
in deadline order. The masters' advert deadlines fall on a few shared slots (see
:func:`vipd.vrrp.machine.advert_slot`), so a host's adverts go out in one short burst per
slot.

A deadline later than the one already armed for a key is ignored: the earlier wake-up finds
nothing due (the cores check the time themselves) and the key is armed again. A backup whose
master-down deadline moves back with every advert so re-arms once per Master_Down_Interval.

The alarm is a CLOCK_BOOTTIME timerfd the loop watches (:class:`TimerFdAlarm`): asyncio's own
timers wait in epoll, whose timeout is whole milliseconds, so each wake-up would be up to 1 ms
late by an amount that changes every time, and the adverts would jitter by as much.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import math
import os
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class Alarm(Protocol):
    def set(self, at: float) -> None:
        """Call back once at ``at`` (the clock's seconds), replacing any earlier setting."""

    def close(self) -> None: ...


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_BOOTTIME = 7
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class TimerFdAlarm:
    """A timerfd(2) on CLOCK_BOOTTIME set to absolute times, read by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        create = libc.timerfd_create
        create.argtypes = [ctypes.c_int, ctypes.c_int]
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
        fd = create(_CLOCK_BOOTTIME, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._fd: int | None = fd
        self._spec = _Itimerspec()  # reused: it_interval stays zero (one-shot)
        self._spec_ref = ctypes.byref(self._spec)
        self._loop, self._callback = loop, callback
        loop.add_reader(fd, self._expired)

    def set(self, at: float) -> None:
        assert self._fd is not None, "alarm closed"
        ns = max(1, math.ceil(at * 1e9))  # a zero it_value would disarm the timer
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None):
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _expired(self) -> None:
        assert self._fd is not None
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # set again after it expired and before we read it: not due yet
        self._callback()

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


class Timers(Generic[K]):
    """``fire(key)`` for each key at or soon after the deadline it is armed for. ``alarm`` is
    built with the callback that runs what is due; its times are ``clock``'s."""

    def __init__(
        self,
        alarm: Callable[[Callable[[], None]], Alarm],
        clock: Callable[[], float],
        fire: Callable[[K], None],
        granularity: float = 0.001,
    ) -> None:
        self._alarm = alarm(self._run)
        self._clock = clock
        self._fire = fire
        self._granularity = granularity
        self._armed: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []  # stale entries are skipped when popped
        self._order = itertools.count()  # ties: first armed, first run
        self._wake_at: float | None = None  # what the alarm is set for
        self._running = False
        self._closed = False

    def armed(self, key: K) -> float | None:
        return self._armed.get(key)

    def arm(self, key: K, at: float) -> None:
        """Run ``fire(key)`` at or soon after ``at``, unless it is armed earlier already."""
        current = self._armed.get(key)
        if self._closed or (current is not None and current <= at):
            return
        self._armed[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        if not self._running:
            self._schedule()

    def cancel(self, key: K) -> None:
        self._armed.pop(key, None)  # its heap entry goes stale

    def close(self) -> None:
        """Forget every deadline; later arms are ignored (the daemon is shutting down)."""
        self._closed = True
        self._armed.clear()
        self._heap.clear()
        self._alarm.close()
        self._wake_at = None

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
        self._wake_at = wake
        self._alarm.set(wake)

    def _run(self) -> None:
        self._wake_at = None
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
