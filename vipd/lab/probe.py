"""Measure service availability of an address the way a client sees it.

Command side (``python -m vipd.lab.probe --target ADDR``): every
``--interval`` seconds start a *new* TCP connection attempt, concurrently with
the ones still in flight, each bounded by its own ``--timeout``. Starting on a
fixed clock instead of after the previous attempt finished keeps the time
resolution at ``interval`` even while attempts hang during a failover. For
each attempt one JSON line is printed (and flushed) when it finishes::

    {"t": 1234.5678, "ok": true, "node": "n1", "rtt": 0.0004, "err": null}

``t`` is ``time.monotonic()`` when the attempt started. CLOCK_MONOTONIC is
system-wide (network namespaces don't change it), so a test process can put
its own ``time.monotonic()`` event stamps on the same axis. ``node`` is what
:mod:`vipd.lab.responder` answered, i.e. which node holds the address. Lines
arrive in completion order, not start order.

Library side: :class:`ProbeLog` collects such output from a running process
in a background thread and answers questions about outages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["ProbeLog", "Result", "main", "probe"]


# --------------------------------------------------------------------------- #
# The prober                                                                   #
# --------------------------------------------------------------------------- #


async def _attempt(target: str, port: int, timeout: float, out: IO[str]) -> None:
    """One connection attempt: connect, read the responder's name, report."""
    t0 = time.monotonic()
    node: str | None = None
    err: str | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target, port)
            data = await reader.readline()
        node = data.decode("utf-8", "replace").strip() or None
        if node is None:
            err = "empty"
    except TimeoutError:
        err = "timeout"
    except OSError as exc:
        err = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    rtt = time.monotonic() - t0
    line = json.dumps({"t": t0, "ok": node is not None, "node": node, "rtt": rtt, "err": err})
    out.write(line + "\n")
    out.flush()


async def probe(
    target: str,
    port: int,
    interval: float,
    timeout: float,
    duration: float | None = None,
    out: IO[str] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start an attempt every ``interval`` s until ``stop`` is set or ``duration`` passed,
    then wait for the attempts still in flight (each ends within ``timeout``)."""
    sink = out if out is not None else sys.stdout
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    start = loop.time()  # loop.time() is time.monotonic()
    end = start + duration if duration is not None else math.inf
    next_at = start
    tasks: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        now = loop.time()
        if now >= end:
            break
        if now >= next_at:
            task = asyncio.create_task(_attempt(target, port, timeout, sink))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            # Fell behind (CPU starved, suspended): skip missed slots instead of bursting.
            if next_at < now:
                next_at = now + interval
        delay = max(0.0, min(next_at, end) - loop.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m vipd.lab.probe``."""
    parser = argparse.ArgumentParser(
        prog="python -m vipd.lab.probe",
        description="Start a TCP connect attempt every INTERVAL s; print one JSON line each.",
    )
    parser.add_argument("--target", required=True, help="IPv4 or IPv6 address to connect to")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--interval", type=_positive, default=0.01, help="seconds between starts")
    parser.add_argument("--timeout", type=_positive, default=0.2, help="per attempt, seconds")
    parser.add_argument("--duration", type=_positive, default=None, help="stop after S seconds")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await probe(args.target, args.port, args.interval, args.timeout, args.duration, stop=stop)

    try:
        asyncio.run(run())
    except BrokenPipeError:
        # Whoever read our output went away; nothing left to report to.
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 0
    return 0


# --------------------------------------------------------------------------- #
# Reading the prober's output                                                  #
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Result:
    """One connection attempt, as printed by the prober."""

    t: float  # time.monotonic() when the attempt started
    ok: bool
    node: str | None
    rtt: float  # seconds from start to success or failure
    err: str | None = None  # "timeout", an errno name such as "ECONNREFUSED", or None

    @classmethod
    def from_json(cls, line: str) -> Result:
        d = json.loads(line)
        node = d.get("node")
        err = d.get("err")
        return cls(
            t=float(d["t"]),
            ok=bool(d["ok"]),
            node=str(node) if node is not None else None,
            rtt=float(d["rtt"]),
            err=str(err) if err is not None else None,
        )


class ProbeLog:
    """Collects a running prober's results in a background thread.

    ``proc`` must have been started with ``stdout=PIPE, stderr=PIPE,
    text=True``; :meth:`vipd.lab.netns.Host.start_probe` does that. All
    queries work on a snapshot and may be asked while the probe still runs;
    for final numbers call :meth:`stop` first, which lets in-flight attempts
    finish so the log has no artificial gap at its end.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        if proc.stdout is None:
            raise ValueError("the probe process needs stdout=subprocess.PIPE")
        self.proc = proc
        self._results: list[Result] = []
        self._junk: list[str] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True)]
        if proc.stderr is not None:
            self._threads.append(threading.Thread(target=self._read_stderr, daemon=True))
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # stream closed under us
            for line in self.proc.stdout:
                try:
                    result = Result.from_json(line)
                except (ValueError, KeyError, TypeError):
                    with self._cond:
                        self._junk.append(line)
                    continue
                with self._cond:
                    self._results.append(result)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                with self._cond:
                    self._stderr.append(line)

    # -- lifecycle ---------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the prober, let it drain in-flight attempts, collect everything. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=timeout)

    def __enter__(self) -> ProbeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stderr(self) -> str:
        """What the prober wrote to stderr so far (for diagnosing a broken probe)."""
        with self._cond:
            return "".join(self._stderr)

    @property
    def junk(self) -> list[str]:
        """stdout lines that were not valid result JSON."""
        with self._cond:
            return list(self._junk)

    # -- queries -----------------------------------------------------------------

    def results(self) -> list[Result]:
        """All results so far, sorted by start time."""
        with self._cond:
            snapshot = list(self._results)
        snapshot.sort(key=lambda r: r.t)
        return snapshot

    def outages(self, after: float | None = None) -> list[tuple[float, float]]:
        """Periods without service, as (start, end) in time.monotonic() seconds.

        An outage is a run of failed attempts between two successes; it is
        measured between attempt *start* times, from the last success before
        the run to the first success after it, so its length is an upper
        bound accurate to one interval. A run of failures before the first
        success starts at the first failure; one still going at the end of the
        log ends at ``math.inf``. With ``after``, only outages that end at or
        after that time are returned (including one that began before it).
        """
        found: list[tuple[float, float]] = []
        last_ok: float | None = None
        fail_start: float | None = None
        for r in self.results():
            if r.ok:
                if fail_start is not None:
                    found.append((last_ok if last_ok is not None else fail_start, r.t))
                    fail_start = None
                last_ok = r.t
            elif fail_start is None:
                fail_start = r.t
        if fail_start is not None:
            found.append((last_ok if last_ok is not None else fail_start, math.inf))
        if after is not None:
            found = [o for o in found if o[1] >= after]
        return found

    def longest_outage_after(self, t: float) -> float:
        """Length in seconds of the longest outage ending at or after ``t``; 0.0 if none,
        ``math.inf`` if service had not come back by the end of the log."""
        return max((end - start for start, end in self.outages(after=t)), default=0.0)

    def first_success_after(self, t: float, node: str | None = None) -> float | None:
        """Start time of the first successful attempt started at or after ``t``
        (answered by ``node``, if given), or None."""
        for r in self.results():
            if r.t >= t and r.ok and (node is None or r.node == node):
                return r.t
        return None

    def nodes_seen_after(self, t: float) -> set[str]:
        """Names of all nodes that answered attempts started at or after ``t``."""
        return {r.node for r in self.results() if r.t >= t and r.ok and r.node is not None}

    def node_sequence_after(self, t: float) -> list[str]:
        """Answering nodes in start-time order, repeats collapsed: ["n1", "n2"] is a clean
        failover, ["n1", "n2", "n1"] a flap."""
        seq: list[str] = []
        for r in self.results():
            if r.t >= t and r.ok and r.node is not None and (not seq or seq[-1] != r.node):
                seq.append(r.node)
        return seq

    def wait_for(self, predicate: Callable[[list[Result]], Any], timeout: float) -> bool:
        """Block until ``predicate(results())`` is truthy; False on timeout or probe exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(sorted(self._results, key=lambda r: r.t)):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reading()):
                    return bool(predicate(sorted(self._results, key=lambda r: r.t)))
                self._cond.wait(timeout=min(remaining, 0.1))

    def wait_for_success(
        self, after: float | None = None, node: str | None = None, timeout: float = 10.0
    ) -> float:
        """Wait for a success started at or after ``after`` (default: now), from ``node`` if
        given; return its start time. Raises TimeoutError with the prober's stderr."""
        since = time.monotonic() if after is None else after

        def seen(results: list[Result]) -> bool:
            return any(r.t >= since and r.ok and (node is None or r.node == node) for r in results)

        if not self.wait_for(seen, timeout):
            last = self.results()[-3:]
            raise TimeoutError(
                f"no success from {node or 'any node'} within {timeout} s; "
                f"last results {last}; probe stderr: {self.stderr.strip()!r}"
            )
        found = self.first_success_after(since, node)
        assert found is not None
        return found

    def _reading(self) -> bool:
        return self._threads[0].is_alive()


if __name__ == "__main__":
    sys.exit(main())
