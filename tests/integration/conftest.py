"""Fixtures that run real vipd processes in the namespace lab."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vipd.lab.netns import Lab
from vipd.lab.pair import Pair, logs

PairFactory = Callable[..., Pair]


@pytest.fixture
def make_pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PairFactory]:
    """Build a Pair in a fresh lab; everything is torn down after the test, pass or fail, and
    the daemons' logs are printed when the test failed."""
    made: list[tuple[Lab, Pair]] = []

    def factory(**kw: Any) -> Pair:
        lab = Lab()
        try:
            pair = Pair(lab, workdir=tmp_path, **kw)
        except BaseException:
            lab.close()
            raise
        made.append((lab, pair))
        return pair

    yield factory
    for lab, pair in made:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(logs(list(pair.nodes.values())))
        pair.close()
        lab.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
