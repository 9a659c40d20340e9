"""vipd.slice on this kernel: the thread's EEVDF slice changes (or the kernel says why not)."""

from __future__ import annotations

import threading

import pytest

from vipd.slice import request_slice


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
