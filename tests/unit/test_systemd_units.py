"""The shipped systemd units: `systemd-analyze verify` finds nothing, and their sandbox stays
at the exposure docs/systemd.md records. Skipped where systemd-analyze is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = ("vipd.service", "vipd-witness.service")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
# What `systemd-analyze security --offline=yes` gave when the units were written (systemd 252);
# a change that weakens the sandbox fails here, one that tightens it should lower these.
MAX_EXPOSURE = {"vipd.service": 2.1, "vipd-witness.service": 1.1}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root directory for ``verify --root``: the units, stub executables at their ExecStart
    paths (verify insists they exist), and the system's units for the targets they name."""
    if not SYSTEM_UNITS.is_dir():
        pytest.skip(f"{SYSTEM_UNITS} not found (verify needs the standard targets)")
    top = tmp_path_factory.mktemp("sysroot")
    (top / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, top / "usr/lib/systemd/system", symlinks=True)
    bindir = top / "usr/local/bin"
    bindir.mkdir(parents=True)
    for name in ("vipd", "vipctl"):
        (bindir / name).write_text("#!/bin/sh\nexit 0\n")
        (bindir / name).chmod(0o755)
    etc = top / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(UNITS_DIR / unit, etc / unit)
    return top


def test_verify_is_clean(root: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *UNITS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and unparsable values are only warnings (exit 0): any line naming our units
    # is a finding.
    findings = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if any(unit in line for unit in UNITS)
    ]
    assert proc.returncode == 0 and not findings, proc.stdout + proc.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure(unit: str) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNITS_DIR / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE[unit], proc.stdout
