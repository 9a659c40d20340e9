"""Fixtures that run real vipd processes in the namespace lab."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skip_or_fail
from vipd.lab.containers import Podman, containers_problem
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


# ---- containers (test_containers.py, test_systemd.py) -----------------------------------------
@pytest.fixture(scope="session")
def podman() -> Podman:
    skip_or_fail(containers_problem())
    return Podman()


@pytest.fixture(scope="session")
def vipd_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's image, built on a throw-away debootstrap base (or VIPD_TEST_BASE_IMAGE),
    once per session; both are removed at the end."""
    token = secrets.token_hex(4)
    base = os.environ.get("VIPD_TEST_BASE_IMAGE")
    own_base = base is None
    image = f"localhost/vipd-test-{token}:latest"
    try:
        if base is None:
            base = podman.build_base(
                f"localhost/vipd-test-base-{token}:bookworm",
                workdir=tmp_path_factory.mktemp("base"),
            )
        elif not podman.image_exists(base):
            pytest.fail(f"VIPD_TEST_BASE_IMAGE={base} does not exist", pytrace=False)
        podman.build(image, base=base)
        yield image
    finally:
        podman.remove_image(image)
        if own_base and base is not None:
            podman.remove_image(base)
