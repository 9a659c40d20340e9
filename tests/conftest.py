"""Shared test setup.

Tests marked ``netns`` build network namespaces and need root plus iproute2
and nftables. On a developer machine without those they are skipped with the
reason shown; under CI (the CI environment variable set, as ``.ci/run`` and
CI systems do) they fail instead, because a CI run that silently skipped them
would prove nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from vipd.lab.netns import Lab


def in_ci() -> bool:
    """True when running under CI (CI set to anything but empty/0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def netns_problem() -> str | None:
    """Why netns tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "netns tests need root (network namespaces); run pytest as root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"netns tests need {', '.join(missing)} on PATH; run scripts/install --test"
    return None


def skip_or_fail(problem: str | None) -> None:
    """Skip the current test for ``problem`` (what this machine lacks), or fail it under CI."""
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"{problem} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(problem)


def require_netns() -> None:
    """Skip the current test if netns tests cannot run here, or fail it under CI."""
    skip_or_fail(netns_problem())


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        require_netns()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh, empty namespace lab, torn down after the test whatever happened."""
    require_netns()
    with Lab() as the_lab:
        yield the_lab
