"""A simulated multicast link between several pure VRRP machines, on synthetic time.

Adverts reach every other live router after ``delay`` unless dropped (``loss`` probability, or a
``partitioned`` pair). Time is driven by hand, aioquic-style: the next event is the earliest of
the machines' timers and the packets in flight. The simulator also records, over time, who
holds the VIP, so tests can measure dual-holder time and outages exactly.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vipd.announce.schedule import AnnounceParams
from vipd.vrrp.machine import (
    AddVips,
    Announce,
    Machine,
    Params,
    RemoveVips,
    SendAdvert,
    State,
    StateChanged,
)
from vipd.vrrp.packet import Advert

VIP = IPv4Address("192.0.2.100")


@dataclass
class Router:
    name: str
    machine: Machine
    alive: bool = True
    frozen: bool = False
    holds_vip: bool = False
    sent: list[tuple[float, int]] = field(default_factory=list)
    announced: list[tuple[float, str]] = field(default_factory=list)
    transitions: list[tuple[float, StateChanged]] = field(default_factory=list)


class Sim:
    def __init__(self, seed: int = 0, delay: float = 0.001, loss: float = 0.0) -> None:
        self.now = 0.0
        self.delay = delay
        self.loss = loss
        self.rng = random.Random(seed)
        self.routers: dict[str, Router] = {}
        self.partitioned: set[frozenset[str]] = set()
        self._inflight: list[tuple[float, int, str, str, Advert]] = []
        self._seq = itertools.count()
        self.holder_log: list[tuple[float, frozenset[str]]] = [(0.0, frozenset())]

    def add(
        self,
        name: str,
        priority: int,
        interval_cs: int = 100,
        preempt: bool = True,
        preempt_delay: float = 0.0,
        addr: str | None = None,
        announce: AnnounceParams | None = None,
    ) -> Router:
        primary = IPv4Address(addr or f"192.0.2.{10 + len(self.routers)}")
        params = Params(
            vrid=1,
            priority=priority,
            advert_interval=interval_cs,
            primary=primary,
            preempt=preempt,
            preempt_delay=preempt_delay,
            announce=announce or AnnounceParams(),
        )
        router = Router(name, Machine(params))
        self.routers[name] = router
        return router

    def start(self, *names: str) -> None:
        for name in names or tuple(self.routers):
            self.routers[name].machine.start(self.now)
            self._flush(self.routers[name])

    # ---- faults --------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Process and link gone at once: the kernel keeps no VIP of a dead node here (the
        namespace tests cover what the kernel really does)."""
        router = self.routers[name]
        router.alive = False
        self._set_holder(router, False)

    def freeze(self, name: str) -> None:
        self.routers[name].frozen = True

    def thaw(self, name: str) -> None:
        router = self.routers[name]
        router.frozen = False
        router.machine.handle_timer(self.now)
        self._flush(router)

    def shutdown(self, name: str) -> None:
        router = self.routers[name]
        router.machine.shutdown(self.now)
        self._flush(router)
        router.alive = False

    # ---- running -------------------------------------------------------------------------
    def run_until(self, end: float) -> None:
        while True:
            candidates: list[float] = []
            for r in self.routers.values():
                t = r.machine.get_timer()
                if r.alive and not r.frozen and t is not None:
                    candidates.append(t)
            if self._inflight:
                candidates.append(self._inflight[0][0])
            if not candidates or min(candidates) > end:
                break
            self.now = max(self.now, min(candidates))
            while self._inflight and self._inflight[0][0] <= self.now:
                _, _, src, dst, advert = heapq.heappop(self._inflight)
                target = self.routers[dst]
                if target.alive and not target.frozen:
                    src_addr = self.routers[src].machine.params.primary
                    target.machine.receive(advert, src_addr, self.now)
                    self._flush(target)
            for r in self.routers.values():
                t = r.machine.get_timer()
                if r.alive and not r.frozen and t is not None and t <= self.now:
                    r.machine.handle_timer(self.now)
                    self._flush(r)
        self.now = max(self.now, end)

    def masters(self) -> list[str]:
        return [n for n, r in self.routers.items() if r.alive and r.machine.state is State.MASTER]

    def holders(self) -> frozenset[str]:
        return frozenset(n for n, r in self.routers.items() if r.holds_vip)

    def dual_holder_time(self, since: float = 0.0) -> float:
        total = 0.0
        log = [*self.holder_log, (self.now, frozenset())]
        for (t0, held), (t1, _) in itertools.pairwise(log):
            if len(held) > 1:
                total += max(0.0, t1 - max(t0, since))
        return total

    # ---- plumbing ------------------------------------------------------------------------
    def _set_holder(self, router: Router, holds: bool) -> None:
        router.holds_vip = holds
        if self.holder_log[-1][1] != self.holders():
            self.holder_log.append((self.now, self.holders()))

    def _flush(self, router: Router) -> None:
        m = router.machine
        for action in m.drain():
            if isinstance(action, SendAdvert):
                router.sent.append((self.now, action.priority))
                advert = Advert(m.params.vrid, action.priority, m.params.advert_interval, (VIP,))
                for other in self.routers:
                    if other == router.name or frozenset((router.name, other)) in self.partitioned:
                        continue
                    if self.rng.random() < self.loss:
                        continue
                    heapq.heappush(
                        self._inflight,
                        (self.now + self.delay, next(self._seq), router.name, other, advert),
                    )
            elif isinstance(action, AddVips):
                self._set_holder(router, True)
            elif isinstance(action, RemoveVips):
                self._set_holder(router, False)
            elif isinstance(action, Announce):
                router.announced.append((self.now, action.reason))
            elif isinstance(action, StateChanged):
                router.transitions.append((self.now, action))
