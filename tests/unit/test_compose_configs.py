"""The vipd configs configs/compose.yaml mounts are valid, and agree with each other and with
the compose file (witness address, lease name, peers)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from vipd.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KEY_IN_CONTAINER = "/etc/vipd/witness.key"


@pytest.mark.parametrize("node", ["lb1", "lb2"])
def test_compose_node_config_is_valid(node: str, tmp_path: Path) -> None:
    key = tmp_path / "witness.key"
    key.write_text(secrets.token_hex(32) + "\n")
    text = (CONFIGS / "compose" / f"{node}.toml").read_text()
    assert KEY_IN_CONTAINER in text
    path = tmp_path / f"{node}.toml"
    path.write_text(text.replace(KEY_IN_CONTAINER, str(key)))
    config = load_config(str(path))
    assert config.node_name == node
    compose = (CONFIGS / "compose.yaml").read_text()
    assert config.witness is not None
    host, port = config.witness.address
    assert f"--listen\n      - {host}:{port}\n" in compose
    (instance,) = config.instances
    assert f"--lease\n      - {instance.name}\n" in compose
    other = {"lb1": "203.0.113.12", "lb2": "203.0.113.11"}[node]
    assert [str(p) for p in instance.peers] == [other]
    assert f"ipv4_address: {other}" in compose
