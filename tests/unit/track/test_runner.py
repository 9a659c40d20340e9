"""TrackerRunner with real checks that need no root: files, scripts, TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vipd.config import TrackConfig
from vipd.track.core import judge
from vipd.track.runner import TrackerRunner


def file_tracker(path: Path, weight: int = 1, name: str = "") -> TrackConfig:
    return TrackConfig(
        kind="file", name=name or str(path), weight=weight, interval=0.1, path=str(path)
    )


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


def test_identical_checks_run_once_and_feed_every_instance(tmp_path: Path) -> None:
    weight = tmp_path / "weight"
    weight.write_text("2\n")
    changes: list[str] = []

    async def scenario() -> None:
        runner = TrackerRunner(
            {
                "web": [file_tracker(weight, 10)],
                "api": [file_tracker(weight, -5)],
                "idle": [],
            },
            lambda instance, _: changes.append(instance),
        )
        assert len(runner._probes) == 1
        await runner.start()
        await asyncio.wait_for(runner.first_results(), 5)
        assert changes == ["web", "api"]
        assert judge(100, runner.trackers["web"]).priority == 120
        assert judge(100, runner.trackers["api"]).priority == 90
        weight.write_text("garbage")
        await wait_for(lambda: len(changes) == 4)
        assert judge(100, runner.trackers["web"]).priority == 100
        status = runner.status("web")[0]
        assert status["ok"] is False and status["kind"] == "file"
        assert status["last_error"] == "not an integer: 'garbage'"
        assert status["value"] == 0 and status["failed_checks"] >= 1
        assert runner.status("idle") == []
        await runner.close()

    asyncio.run(scenario())


def test_script_tracker_rise_and_fall_and_a_killed_hung_script(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    script = ("sh", "-c", f"test -e {flag} && exec sleep 300; exit 0")
    cfg = TrackConfig(
        kind="script",
        name="chk",
        weight=0,
        interval=0.1,
        timeout=0.3,
        fall=2,
        rise=2,
        command=script,
    )
    changes: list[str] = []

    async def scenario() -> None:
        runner = TrackerRunner({"web": [cfg]}, lambda instance, _: changes.append(instance))
        await runner.start()
        await asyncio.wait_for(runner.first_results(), 5)
        assert judge(100, runner.trackers["web"]).fault is None
        flag.touch()
        await wait_for(lambda: len(changes) == 2)
        tracker = runner.trackers["web"][0]
        assert tracker.failed_checks >= 2  # fall = 2
        assert judge(100, runner.trackers["web"]).fault == "track:chk"
        assert tracker.last_error is not None and tracker.last_error.startswith("timed out")
        flag.unlink()
        await wait_for(lambda: len(changes) == 3)
        assert judge(100, runner.trackers["web"]).fault is None
        await runner.close()

    asyncio.run(scenario())


def test_tcp_tracker_against_a_closed_port() -> None:
    cfg = TrackConfig(
        kind="tcp", name="svc", weight=-30, interval=0.2, timeout=1, address=("127.0.0.1", 9)
    )
    changes: list[str] = []

    async def scenario() -> None:
        runner = TrackerRunner({"web": [cfg]}, lambda instance, _: changes.append(instance))
        await runner.start()
        await asyncio.wait_for(runner.first_results(), 5)
        assert judge(100, runner.trackers["web"]).priority == 70
        await runner.close()

    asyncio.run(scenario())
    assert changes == ["web"]
