"""The event loop thread's CPU scheduling.

A VRRP daemon sleeps nearly all the time and must run promptly when its timer fires.

**A short slice** (always asked for). Under the kernel's fair scheduler (EEVDF, Linux 6.12+) a
waking task preempts the running one only if its virtual deadline comes first; with the default
slice (a few ms) a busy process on the same CPU often keeps running, and the advert goes out
milliseconds late. A shorter slice (``sched_attr.sched_runtime`` of a SCHED_OTHER thread) gives
the loop's thread earlier deadlines. It does not raise its share of the CPU and needs no
privilege; older kernels ignore the field.

**A realtime policy** (``[daemon] realtime_priority``, off by default, like keepalived's
``vrrp_rt_priority``): SCHED_RR runs the loop before every fair-scheduled task, so a CPU hog
cannot delay an advert at all. It needs CAP_SYS_NICE or an RLIMIT_RTPRIO at least the priority.
Two guards keep it from starving the host: SCHED_FLAG_RESET_ON_FORK (threads and child
processes, hooks and checks, start SCHED_OTHER) and RLIMIT_RTTIME (the kernel sends SIGXCPU when
the thread has run that long without blocking; the daemon then drops back to SCHED_OTHER).
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource

__all__ = ["limit_realtime_run", "realtime_run_limit", "request_realtime", "request_slice"]

_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_OTHER = 0
_SCHED_RR = 2
_SCHED_FLAG_RESET_ON_FORK = 0x01


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def _setattr(policy: int, priority: int, runtime: float, flags: int = 0) -> None:
    """sched_setattr(2) for the calling thread; OSError if the kernel refuses."""
    number = _SYS_SCHED_SETATTR.get(platform.machine())
    if number is None:
        raise OSError(0, f"sched_setattr: no syscall number for {platform.machine()}")
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=policy,
        sched_flags=flags,
        sched_nice=os.getpriority(os.PRIO_PROCESS, 0),
        sched_priority=priority,
        sched_runtime=round(runtime * 1e9),
    )
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, ctypes.byref(attr), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sched_setattr: {os.strerror(err)}")


def request_slice(seconds: float) -> None:
    """SCHED_OTHER with a ``seconds`` slice for the calling thread, keeping its nice value (a
    realtime policy it had ends). OSError if the kernel refuses or the architecture is not known
    here."""
    _setattr(_SCHED_OTHER, 0, seconds)


def request_realtime(priority: int) -> None:
    """SCHED_RR at ``priority`` (1-99) for the calling thread, reset to SCHED_OTHER in every
    thread or process it starts. OSError (EPERM) without CAP_SYS_NICE or enough RLIMIT_RTPRIO."""
    _setattr(_SCHED_RR, priority, 0.0, _SCHED_FLAG_RESET_ON_FORK)


def limit_realtime_run(soft: float, hard: float) -> tuple[float, float]:
    """Lower RLIMIT_RTTIME to ``soft`` / ``hard`` seconds (SIGXCPU at the soft limit, SIGKILL at
    the hard one, of CPU time run under a realtime policy without blocking), keeping a limit
    already lower. Returns the limit in force, in seconds (``inf``: none). OSError if setrlimit
    is refused (a seccomp filter); the limit then stays what it was."""
    old_soft, old_hard = resource.getrlimit(resource.RLIMIT_RTTIME)

    def lower(old: int, new: float) -> int:
        micros = round(new * 1e6)
        return micros if old == resource.RLIM_INFINITY else min(old, micros)

    want_hard = lower(old_hard, hard)
    want_soft = min(lower(old_soft, soft), want_hard)
    if (want_soft, want_hard) != (old_soft, old_hard):
        resource.setrlimit(resource.RLIMIT_RTTIME, (want_soft, want_hard))
    return realtime_run_limit()


def realtime_run_limit() -> tuple[float, float]:
    """RLIMIT_RTTIME in seconds, soft and hard (``inf``: none)."""

    def seconds(micros: int) -> float:
        return float("inf") if micros == resource.RLIM_INFINITY else micros / 1e6

    soft, hard = resource.getrlimit(resource.RLIMIT_RTTIME)
    return seconds(soft), seconds(hard)
