"""`vipd check` and `vipctl` exit codes and messages, without root."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from vipd.cli import vipctl_main, vipd_main
from vipd.control import ControlServer, parse, request

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_check_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert vipd_main(["check", "-c", str(CONFIGS / "vipd.toml")]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[instance]]\nname = "web"\ninterface = "eth0"\nvrid = 51\npriority = 300\n'
        'vips = ["192.0.2.100/24"]\n'
    )
    assert vipd_main(["check", "-c", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:5:" in err
    assert "priority" in err and "300" in err


def test_run_with_a_bad_config_exits_non_zero_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[instance]]\nname = 1\n")
    assert vipd_main(["run", "-c", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_check_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert vipd_main(["check", "-c", "/nonexistent/vipd.toml"]) == 1
    assert "/nonexistent/vipd.toml" in capsys.readouterr().err


def test_vipctl_unreachable_daemon_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vipctl_main(["-s", str(tmp_path / "none.sock"), "status"]) == 2
    assert "cannot reach vipd" in capsys.readouterr().err


class FakeDaemon:
    def __init__(self, state: str) -> None:
        self.state = state

    def status(self) -> dict[str, Any]:
        return {
            "node": "lb1",
            "uptime": 12.0,
            "drops": {},
            "instances": [
                {
                    "name": "web",
                    "interface": "eth0",
                    "vrid": 51,
                    "state": self.state,
                    "priority": 150,
                    "effective_priority": 150,
                    "vips": ["192.0.2.100/24"],
                    "master": "192.0.2.11",
                    "master_priority": 150,
                    "last_transition": {
                        "from": "backup",
                        "to": "master",
                        "reason": "master-down",
                        "priority": 150,
                        "at": 0.0,
                    },
                }
            ],
        }


def with_server(daemon: FakeDaemon, path: Path, *argvs: list[str]) -> list[int]:
    """Serve the control socket on an event loop in this thread while each vipctl call runs
    in a worker thread (it blocks on the socket)."""

    async def main() -> list[int]:
        server = ControlServer(str(path), daemon)
        await server.start()
        try:
            return [await asyncio.to_thread(vipctl_main, argv) for argv in argvs]
        finally:
            server.close()

    return asyncio.run(main())


@pytest.mark.parametrize("state,code", [("master", 0), ("backup", 0), ("initialize", 1)])
def test_vipctl_status_table_json_and_health_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str, code: int
) -> None:
    sock = tmp_path / "vipd.sock"
    mode: list[int] = []

    class Checked(FakeDaemon):
        def status(self) -> dict[str, Any]:
            mode.append(sock.stat().st_mode & 0o777)
            return super().status()

    codes = with_server(
        Checked(state), sock, ["-s", str(sock), "status"], ["-s", str(sock), "status", "--json"]
    )
    assert codes == [code, code]
    out = capsys.readouterr().out
    table, js = out.split("\n{", 1)
    assert "web" in table and state.upper() in table and "192.0.2.100/24" in table
    assert json.loads("{" + js)["instances"][0]["state"] == state
    assert mode == [0o600, 0o600]  # root-only socket


def test_control_socket_rejects_garbage_and_unknown_commands(tmp_path: Path) -> None:
    sock = tmp_path / "vipd.sock"
    server = ControlServer(str(sock), FakeDaemon("master"))
    assert isinstance(parse(b"\xff\xfe"), str)
    assert isinstance(parse(b"[1, 2]"), str)
    assert "unknown command" in str(parse(b'{"cmd": "explode"}'))
    assert "maintenance needs" in str(parse(b'{"cmd": "maintenance"}'))
    assert "timeout" in str(parse(b'{"cmd": "failover", "timeout": -1}'))
    assert parse(b'{"cmd": "reload"}') == {"cmd": "reload"}

    async def main() -> dict[str, Any]:
        await server.start()
        try:
            return await asyncio.to_thread(request, str(sock), "status")
        finally:
            server.close()

    assert asyncio.run(main())["ok"]
