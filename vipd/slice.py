"""Ask the kernel's fair scheduler (EEVDF, Linux 6.12+) for a short time slice.

A VRRP daemon sleeps nearly all the time and must run promptly when its timer fires. Under
EEVDF a waking task preempts the running one only if its virtual deadline comes first; with the
default slice (a few ms) a busy process on the same CPU often keeps running, and the advert goes
out milliseconds late. A shorter slice (``sched_attr.sched_runtime`` of a SCHED_OTHER thread)
gives the daemon's thread earlier deadlines, so it runs as soon as it wakes. It does not raise
its share of the CPU and needs no privilege or realtime policy; older kernels ignore the field.
"""

from __future__ import annotations

import ctypes
import os
import platform

_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_OTHER = 0


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


def request_slice(seconds: float) -> None:
    """Ask for a ``seconds`` slice for the calling thread, keeping SCHED_OTHER and its nice
    value. OSError if the kernel refuses or the architecture is not known here."""
    number = _SYS_SCHED_SETATTR.get(platform.machine())
    if number is None:
        raise OSError(0, f"sched_setattr: no syscall number for {platform.machine()}")
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=_SCHED_OTHER,
        sched_nice=os.getpriority(os.PRIO_PROCESS, 0),
        sched_runtime=round(seconds * 1e9),
    )
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, ctypes.byref(attr), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sched_setattr: {os.strerror(err)}")
