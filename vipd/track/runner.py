"""Owns the tracker checks of every instance and reports judged changes to the daemon.

Identical checks (same kind, target, interval and timeout) configured on several instances run
once and feed every tracker that uses them; each tracker keeps its own rise/fall counting and
weight (:class:`vipd.track.core.Tracker`). ``on_change(instance, tracker)`` is called, on the
loop, whenever a tracker changes its judged state (or an OK file tracker its value); the
daemon then re-judges the instance (:func:`vipd.track.core.judge`). The daemon runs one
runner per instance, so a reload can replace one instance's trackers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from vipd.config import TrackConfig
from vipd.track import checks
from vipd.track.core import Kind, Tracker, TrackerParams

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("vipd.track")

Check = Callable[[], Awaitable[tuple[bool, str | None, int]]]
OnChange = Callable[[str, Tracker], None]


@dataclass
class _Probe:
    """One periodic check and the trackers it feeds."""

    kind: Kind
    interval: float
    check: Check
    subscribers: list[tuple[str, Tracker]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


def _probe_key(cfg: TrackConfig) -> tuple[Any, ...]:
    target: Any = {
        "script": cfg.command,
        "http": (cfg.url, cfg.status, cfg.verify_tls),
        "tcp": cfg.address,
        "file": cfg.path,
    }[cfg.kind]
    timeout = None if cfg.kind == "file" else cfg.timeout
    return (cfg.kind, target, cfg.interval, timeout)


class TrackerRunner:
    def __init__(
        self, instances: Mapping[str, Sequence[TrackConfig]], on_change: OnChange | None = None
    ) -> None:
        self.trackers: dict[str, list[Tracker]] = {}
        self.on_change = on_change
        self._probes: dict[tuple[Any, ...], _Probe] = {}
        self._links: dict[str, list[tuple[str, Tracker]]] = {}
        self._clients: list[httpx.AsyncClient] = []
        self._watcher: checks.LinkWatcher | None = None
        self._complete = asyncio.Event()
        for instance, configs in instances.items():
            trackers = self.trackers[instance] = []
            for cfg in configs:
                kind = Kind(cfg.kind)
                # Link state comes as events, not samples: nothing to smooth.
                periodic = kind is not Kind.INTERFACE and kind is not Kind.FILE
                tracker = Tracker(
                    TrackerParams(
                        cfg.name,
                        kind,
                        cfg.weight,
                        cfg.rise if periodic else 1,
                        cfg.fall if periodic else 1,
                    )
                )
                trackers.append(tracker)
                if kind is Kind.INTERFACE:
                    self._links.setdefault(cfg.name, []).append((instance, tracker))
                    continue
                key = _probe_key(cfg)
                probe = self._probes.get(key)
                if probe is None:
                    probe = self._probes[key] = _Probe(kind, cfg.interval, self._make_check(cfg))
                probe.subscribers.append((instance, tracker))
        self._check_complete()

    def _make_check(self, cfg: TrackConfig) -> Check:
        timeout = cfg.timeout
        if cfg.kind == "script":
            argv = cfg.command

            async def script() -> tuple[bool, str | None, int]:
                return (*await checks.check_script(argv, timeout), 0)

            return script
        if cfg.kind == "http":
            client = checks.http_client(cfg.verify_tls)
            self._clients.append(client)
            url, status = cfg.url, cfg.status

            async def http() -> tuple[bool, str | None, int]:
                return (*await checks.check_http(client, url, status, timeout), 0)

            return http
        if cfg.kind == "tcp":
            assert cfg.address is not None
            host, port = cfg.address

            async def tcp() -> tuple[bool, str | None, int]:
                return (*await checks.check_tcp(host, port, timeout), 0)

            return tcp
        path = cfg.path

        async def file() -> tuple[bool, str | None, int]:
            return checks.read_file_value(path)

        return file

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every check; link trackers get their first state from a netlink dump."""
        loop = asyncio.get_running_loop()
        for probe in self._probes.values():
            probe.task = loop.create_task(self._run(probe), name=f"track-{probe.kind.value}")
        if self._links:
            self._watcher = checks.LinkWatcher(self._links, self._on_link)
            await self._watcher.start()

    @property
    def complete(self) -> bool:
        """Every tracker has reported at least once."""
        return self._complete.is_set()

    async def first_results(self) -> None:
        """Until every tracker has its first result (each check is bounded by its timeout)."""
        await self._complete.wait()

    async def close(self) -> None:
        """Stop every check (a script still running is killed with its process group)."""
        tasks = [p.task for p in self._probes.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._watcher is not None:
            await self._watcher.close()
        for client in self._clients:
            await client.aclose()

    # ---- results -----------------------------------------------------------------------------
    async def _run(self, probe: _Probe) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                ok, error, value = await probe.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one check must not end tracking
                log.exception("check-crashed", kind=probe.kind.value)
                ok, error, value = False, f"check crashed: {exc!r}", 0
            self._feed(probe.subscribers, ok, error, value)
            await asyncio.sleep(max(0.0, probe.interval - (loop.time() - started)))

    def _on_link(self, name: str, ok: bool, error: str | None) -> None:
        self._feed(self._links.get(name, []), ok, error, 0)

    def _feed(
        self, subscribers: Sequence[tuple[str, Tracker]], ok: bool, error: str | None, value: int
    ) -> None:
        changed: list[tuple[str, Tracker]] = []
        for instance, tracker in subscribers:
            was_failing, previous_error = tracker.failures > 0, tracker.last_error
            if not tracker.record(ok, error, value):
                if not ok and (not was_failing or previous_error != tracker.last_error):
                    # A new failure (or a new reason): worth a line, not one per check.
                    log.info(
                        "check-failed",
                        instance=instance,
                        tracker=tracker.params.name,
                        kind=tracker.params.kind.value,
                        error=tracker.last_error,
                        ok=tracker.ok,
                    )
                continue
            fields: dict[str, Any] = {
                "instance": instance,
                "tracker": tracker.params.name,
                "kind": tracker.params.kind.value,
                "weight": tracker.params.weight,
            }
            if tracker.params.kind is Kind.FILE:
                fields["value"] = tracker.value
            if tracker.ok:
                log.info("tracker-ok", **fields)
            else:
                log.warning("tracker-failed", error=tracker.last_error, **fields)
            changed.append((instance, tracker))
        self._check_complete()
        if self.on_change is not None:
            for instance, tracker in changed:
                self.on_change(instance, tracker)

    def _check_complete(self) -> None:
        if not self._complete.is_set() and all(
            t.ok is not None for ts in self.trackers.values() for t in ts
        ):
            self._complete.set()

    # ---- status ------------------------------------------------------------------------------
    def status(self, instance: str) -> list[dict[str, Any]]:
        out = []
        for t in self.trackers.get(instance, []):
            entry: dict[str, Any] = {
                "name": t.params.name,
                "kind": t.params.kind.value,
                "ok": t.ok,
                "weight": t.params.weight,
                "adjustment": t.adjustment,
                "fault": t.faulted,
                "last_error": t.last_error,
                "checks": t.checks,
                "failed_checks": t.failed_checks,
            }
            if t.params.kind is Kind.FILE:
                entry["value"] = t.value
            out.append(entry)
        return out
