"""vipd.sched on this kernel: the thread's EEVDF slice changes (or the kernel says why not)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from vipd.sched import request_slice


def _slice_ns() -> int | None:
    with open("/proc/thread-self/sched") as f:
        for line in f:
            if line.startswith("se.slice"):
                return int(line.split(":")[1])
    return None


def test_request_slice_sets_the_calling_threads_slice_only() -> None:
    if _slice_ns() is None:
        pytest.skip("this kernel does not show se.slice (before EEVDF)")
    seen: dict[str, int | None] = {}

    def other() -> None:
        request_slice(0.0003)
        seen["after"] = _slice_ns()

    before = _slice_ns()
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["after"] == 300_000
    assert _slice_ns() == before  # only the thread that asked


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, so that the policy and limits it sets die with it."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=30
    )


def test_request_realtime_is_the_threads_alone_and_not_inherited() -> None:
    proc = _run(
        """
        import os, subprocess, sys, threading
        from vipd.sched import request_realtime
        try:
            request_realtime(1)
        except PermissionError:
            sys.exit(77)
        seen = {}
        t = threading.Thread(target=lambda: seen.update(thread=os.sched_getscheduler(0)))
        t.start(); t.join()
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True, text=True, check=True,
        )
        print(os.sched_getscheduler(0), os.sched_getparam(0).sched_priority, seen["thread"],
              int(child.stdout))
        """
    )
    if proc.returncode == 77:
        pytest.skip("no CAP_SYS_NICE or RLIMIT_RTPRIO here")
    assert proc.returncode == 0, proc.stderr
    policy, priority, thread, child = map(int, proc.stdout.split())
    assert policy == os.SCHED_RR | os.SCHED_RESET_ON_FORK and priority == 1
    assert thread == child == os.SCHED_OTHER  # hooks, checks, netlink threads


def test_the_kernel_signals_a_realtime_loop_that_never_blocks() -> None:
    """What the daemon's SIGXCPU handler relies on: RLIMIT_RTTIME, as limit_realtime_run
    lowers it, reaches a busy SCHED_RR thread; back on SCHED_OTHER it runs on."""
    proc = _run(
        """
        import signal, sys, time
        from vipd.sched import limit_realtime_run, request_realtime, request_slice
        print(*limit_realtime_run(0.05, 1.0))
        print(*limit_realtime_run(5, 10))  # a higher ask keeps the lower limit
        hits = []
        def overrun(signum, frame):
            hits.append(time.monotonic())
            request_slice(0.001)
        signal.signal(signal.SIGXCPU, overrun)
        try:
            request_realtime(1)
        except PermissionError:
            sys.exit(77)
        start = time.monotonic()
        while not hits and time.monotonic() - start < 2.0:
            pass
        spun = time.monotonic() - start
        while time.monotonic() - start < spun + 1.2:  # no SIGKILL at the hard limit now
            pass
        print(len(hits), round(hits[0] - start, 3) if hits else -1)
        """
    )
    if proc.returncode == 77:
        pytest.skip("no CAP_SYS_NICE or RLIMIT_RTPRIO here")
    assert proc.returncode == 0, proc.stderr
    first, second, result = proc.stdout.splitlines()
    assert first.split() == ["0.05", "1.0"]
    assert second.split() == ["0.05", "1.0"]
    hits, after = result.split()
    assert int(hits) == 1
    assert 0.05 <= float(after) < 2.0  # the kernel's tick decides how soon after 50 ms
