"""When to announce the VIP (gratuitous ARP / unsolicited NA), as a pure schedule.

Why a schedule and not "send on transition": incident A (shared/design/incidents.md) is a master
that never re-announced after a split brain, so an upstream ARP cache pointed at the wrong MAC
for four hours. The rules here:

- a trigger (becoming master, hearing a competing master, waking from a freeze) announces at
  once, then repeats ``count - 1`` more bursts ``spacing`` seconds apart, because Linux ignores
  a second neighbour update within its 1 s ``locktime`` and a lost first burst must not be final;
- while master, a refresh every ``refresh`` seconds, so switch MAC tables (about 300 s) and
  caches that missed every burst converge;
- triggers closer together than ``spacing`` restart the burst series instead of sending more
  often, so a flood of competing adverts cannot turn into a flood of ARP.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnnounceParams:
    count: int = 3
    spacing: float = 1.2
    refresh: float = 5.0  # 0 disables the periodic refresh


class AnnounceSchedule:
    """Pure timer logic; the caller sends the frames whenever a method returns a reason."""

    def __init__(self, params: AnnounceParams) -> None:
        self.params = params
        self._active = False
        self._last_sent: float | None = None
        self._burst_at: float | None = None
        self._remaining = 0
        self._refresh_at: float | None = None
        self._reason = ""

    def start(self, now: float, reason: str) -> str | None:
        """Begin announcing (becoming master). Returns the reason if frames go out now."""
        self._active = True
        return self.trigger(now, reason)

    def stop(self) -> None:
        """Stop all announcements (no longer master). The spacing limit is forgotten too: a
        new mastership must announce at once, even if an earlier one announced moments ago
        (a flap at start-up would otherwise hold back the takeover's first burst)."""
        self._active = False
        self._last_sent = None
        self._burst_at = self._refresh_at = None
        self._remaining = 0

    def trigger(self, now: float, reason: str) -> str | None:
        """Something happened that may have left a neighbour cache wrong: announce again."""
        if not self._active:
            return None
        self._reason = reason
        self._remaining = self.params.count
        if self._last_sent is None or now - self._last_sent >= self.params.spacing:
            return self._send(now)
        self._burst_at = self._last_sent + self.params.spacing
        return None

    def deadline(self) -> float | None:
        times = [t for t in (self._burst_at, self._refresh_at) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> str | None:
        """Returns the reason to announce if a burst or a refresh is due at ``now``."""
        if not self._active:
            return None
        if self._burst_at is not None and now >= self._burst_at:
            return self._send(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._reason = "refresh"
            self._remaining = 1
            return self._send(now)
        return None

    def _send(self, now: float) -> str:
        self._last_sent = now
        self._remaining -= 1
        self._burst_at = now + self.params.spacing if self._remaining > 0 else None
        self._refresh_at = now + self.params.refresh if self.params.refresh > 0 else None
        return self._reason
