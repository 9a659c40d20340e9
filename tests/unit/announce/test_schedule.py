"""Announcement timing: immediate burst, repeats spaced past Linux's locktime, refresh, and no
flood when triggers pile up."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from vipd.announce.schedule import AnnounceParams, AnnounceSchedule


def run(s: AnnounceSchedule, until: float) -> list[tuple[float, str]]:
    out = []
    while (t := s.deadline()) is not None and t <= until:
        reason = s.handle_timer(t)
        if reason is not None:
            out.append((round(t, 6), reason))
    return out


def test_start_sends_at_once_then_bursts_then_refreshes() -> None:
    s = AnnounceSchedule(AnnounceParams(count=3, spacing=1.2, refresh=5.0))
    assert s.start(10.0, "became-master") == "became-master"
    assert run(s, 23.0) == [
        (11.2, "became-master"),
        (12.4, "became-master"),
        (17.4, "refresh"),
        (22.4, "refresh"),
    ]


def test_refresh_period() -> None:
    s = AnnounceSchedule(AnnounceParams(count=1, spacing=1.2, refresh=5.0))
    s.start(0.0, "became-master")
    assert run(s, 16.0) == [(5.0, "refresh"), (10.0, "refresh"), (15.0, "refresh")]


def test_refresh_zero_disables_it() -> None:
    s = AnnounceSchedule(AnnounceParams(count=2, spacing=1.5, refresh=0))
    s.start(0.0, "x")
    assert run(s, 100.0) == [(1.5, "x")]
    assert s.deadline() is None


def test_inactive_schedule_sends_nothing() -> None:
    s = AnnounceSchedule(AnnounceParams())
    assert s.trigger(0.0, "competing-master") is None
    s.start(0.0, "became-master")
    s.stop()
    assert s.deadline() is None
    assert s.handle_timer(100.0) is None


def test_trigger_within_spacing_restarts_burst_instead_of_sending() -> None:
    s = AnnounceSchedule(AnnounceParams(count=2, spacing=1.2, refresh=0))
    s.start(0.0, "became-master")
    assert s.trigger(0.5, "competing-master") is None
    assert run(s, 10.0) == [(1.2, "competing-master"), (2.4, "competing-master")]


@given(
    triggers=st.lists(st.floats(0, 60, allow_nan=False), max_size=200),
    count=st.integers(1, 5),
    spacing=st.floats(1.1, 3.0),
    refresh=st.sampled_from([0.0, 1.1, 5.0]),
)
def test_never_more_often_than_spacing(
    triggers: list[float], count: int, spacing: float, refresh: float
) -> None:
    """Whatever the triggers, two announcements are never closer than ``spacing`` (or the
    refresh period): Linux would ignore the second one anyway."""
    s = AnnounceSchedule(AnnounceParams(count, spacing, refresh))
    sent = []
    if s.start(0.0, "became-master"):
        sent.append(0.0)
    for t in sorted(triggers):
        sent.extend(x for x, _ in run(s, t))
        if s.trigger(t, "competing-master"):
            sent.append(t)
    sent.extend(x for x, _ in run(s, 70.0))
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(g >= min(spacing, refresh or spacing) - 1e-6 for g in gaps)


def test_new_mastership_announces_at_once_even_right_after_the_last_one() -> None:
    """Found by the benchmark: master, backup, master again within the spacing must not wait
    out the rest of the spacing before the takeover's first announcement."""
    s = AnnounceSchedule(AnnounceParams(count=3, spacing=1.2, refresh=5.0))
    assert s.start(0.0, "became-master") == "became-master"
    s.stop()
    assert s.start(0.3, "became-master") == "became-master"
