"""Tests for vipd.config: schema, defaults, every validation rule, and error positions."""

from __future__ import annotations

import dataclasses
import pickle
import re
import socket
import tomllib
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipd.config import (
    ConfigError,
    ConfigIssue,
    DaemonConfig,
    InstanceConfig,
    _Locator,
    load_config,
    parse_config,
)

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"

# Layout of doc(): line 1 [daemon], 2 node_name, 3 blank, 4 [[instance]], 5 name,
# 6 interface, 7 vrid, 8 vips, 9.. any extra keys, in the order given.
BASE_INSTANCE = {
    "name": '"web"',
    "interface": '"eth0"',
    "vrid": "51",
    "vips": '["192.0.2.100/24"]',
}
HEADER_LINE, NAME_LINE, IFACE_LINE, VRID_LINE, VIPS_LINE, EXTRA_LINE = 4, 5, 6, 7, 8, 9


def doc(**overrides: str | None) -> str:
    """A one-instance config; a keyword sets a key's raw TOML value, None removes it."""
    fields: dict[str, str | None] = {**BASE_INSTANCE, **overrides}
    lines = ["[daemon]", 'node_name = "lb1"', "", "[[instance]]"]
    lines += [f"{key} = {value}" for key, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n"


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, "test.toml")
    return excinfo.value.issues


def only_issue(text: str) -> ConfigIssue:
    issues = issues_of(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


# --------------------------------------------------------------------------- valid input


def test_defaults() -> None:
    config = parse_config(doc())
    assert config == DaemonConfig(
        node_name="lb1",
        control_socket="/run/vipd/vipd.sock",
        log_format="auto",
        log_level="info",
        instances=(
            InstanceConfig(
                name="web",
                interface="eth0",
                vrid=51,
                priority=100,
                advert_interval=1.0,
                vips=(IPv4Interface("192.0.2.100/24"),),
                preempt=True,
                preempt_delay=0.0,
                unicast_peers=(),
                unicast_source=None,
                checksum="pseudo-header",
                vip_label=None,
                use_vmac=False,
                announce_count=3,
                announce_spacing=1.2,
                announce_refresh=5.0,
                fence=False,
                lease_name="web",
                lease_ttl=None,
                peers=(),
            ),
        ),
        source="<string>",
        witness=None,
    )
    instance = config.instances[0]
    assert instance.family == 4
    assert instance.advert_centiseconds == 100


def test_node_name_defaults_to_hostname_and_daemon_table_is_optional() -> None:
    text = doc().replace('[daemon]\nnode_name = "lb1"\n', "")
    assert parse_config(text).node_name == socket.gethostname()


def test_all_keys_set() -> None:
    text = doc(
        priority="255",
        advert_interval="0.07",
        preempt="false",
        preempt_delay="30",
        unicast_peers='["192.0.2.12", "192.0.2.13"]',
        unicast_source='"192.0.2.11"',
        checksum='"message-only"',
        vip_label='"eth0:web"',
        use_vmac="true",
        announce_count="20",
        announce_spacing="60",
        announce_refresh="0",
    )
    text = text.replace(
        'node_name = "lb1"',
        'node_name = "lb1"\ncontrol_socket = "/tmp/v.sock"\nlog_format = "json"\n'
        'log_level = "debug"',
    )
    config = parse_config(text, "x.toml")
    assert (config.control_socket, config.log_format, config.log_level) == (
        "/tmp/v.sock",
        "json",
        "debug",
    )
    assert config.source == "x.toml"
    i = config.instances[0]
    assert i.priority == 255
    assert i.advert_interval == 0.07
    assert i.advert_centiseconds == 7
    assert i.preempt is False
    assert i.preempt_delay == 30.0 and isinstance(i.preempt_delay, float)
    assert i.unicast_peers == (IPv4Address("192.0.2.12"), IPv4Address("192.0.2.13"))
    assert i.unicast_source == IPv4Address("192.0.2.11")
    assert i.checksum == "message-only"
    assert i.vip_label == "eth0:web"
    assert i.use_vmac is True
    assert (i.announce_count, i.announce_spacing, i.announce_refresh) == (20, 60.0, 0.0)


@pytest.mark.parametrize(
    ("value", "centiseconds"),
    [("0.01", 1), ("2", 200), ("40.95", 4095), ("0.29", 29), ("1.1", 110)],
)
def test_advert_interval_accepted(value: str, centiseconds: int) -> None:
    instance = parse_config(doc(advert_interval=value)).instances[0]
    assert instance.advert_centiseconds == centiseconds
    assert instance.advert_interval == centiseconds / 100


def test_ipv6_instance() -> None:
    text = doc(
        vips='["2001:db8::100/64", "2001:db8::101"]',
        unicast_peers='["2001:db8::12"]',
        checksum='"pseudo-header"',
    )
    instance = parse_config(text).instances[0]
    assert instance.family == 6
    assert instance.vips == (IPv6Interface("2001:db8::100/64"), IPv6Interface("2001:db8::101/128"))


def test_bare_ipv4_vip_is_host_route() -> None:
    instance = parse_config(doc(vips='["192.0.2.7"]')).instances[0]
    assert instance.vips == (IPv4Interface("192.0.2.7/32"),)


def test_same_vrid_allowed_on_other_interface_or_family() -> None:
    text = doc() + (
        '\n[[instance]]\nname = "web6"\ninterface = "eth0"\nvrid = 51\nvips = ["2001:db8::1/64"]\n'
        '\n[[instance]]\nname = "web1"\ninterface = "eth1"\nvrid = 51\nvips = ["192.0.2.1/24"]\n'
    )
    assert [i.name for i in parse_config(text).instances] == ["web", "web6", "web1"]


def test_config_is_frozen() -> None:
    config = parse_config(doc())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.instances[0].priority = 1  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.instances
    assert config.source == str(path)


def test_example_configs_exist() -> None:
    names = {p.name for p in CONFIGS_DIR.glob("*.toml")}
    assert {"vipd.toml", "vipd-b.toml", "ipv6.toml", "unicast.toml"} <= names


def test_example_pair_is_consistent() -> None:
    a, b = load_config(CONFIGS_DIR / "vipd.toml"), load_config(CONFIGS_DIR / "vipd-b.toml")
    assert a.node_name != b.node_name
    for ia, ib in zip(a.instances, b.instances, strict=True):
        assert ia.priority != ib.priority
        assert dataclasses.replace(ia, priority=0) == dataclasses.replace(ib, priority=0)


def test_example_reference_documents_every_key() -> None:
    text = (CONFIGS_DIR / "vipd.toml").read_text()
    for key in [f.name for f in dataclasses.fields(InstanceConfig)] + [
        "node_name",
        "control_socket",
        "control_group",
        "log_format",
        "log_level",
        "metrics_listen",
        "realtime_priority",
        "backend",
        "address",
        "endpoints",
        "key_file",
        "policy",
        "peer_port",
        "fence_command",
        "fence_timeout",
    ]:
        assert f"{key} = " in text, key


# --------------------------------------------------------------------------- validation rules

W = "instance[0] (web)"

INSTANCE_CASES: list[tuple[dict[str, str | None], int, str, str]] = [
    # (overrides, line, field, message fragment)
    # name
    ({"name": None}, HEADER_LINE, "instance[0].name", "required key is missing"),
    ({"name": '"web site"'}, NAME_LINE, "instance[0].name", 'got "web site"'),
    ({"name": '""'}, NAME_LINE, "instance[0].name", "must be 1..32 characters"),
    ({"name": '"' + "a" * 33 + '"'}, NAME_LINE, "instance[0].name", "1..32 characters"),
    ({"name": "7"}, NAME_LINE, "instance[0].name", "from [A-Za-z0-9_.-], got 7"),
    # interface
    ({"interface": None}, HEADER_LINE, f"{W}.interface", "required key is missing"),
    ({"interface": '""'}, IFACE_LINE, f"{W}.interface", "is empty"),
    ({"interface": '"eth0/1"'}, IFACE_LINE, f"{W}.interface", "contains '/'"),
    ({"interface": '"eth 0"'}, IFACE_LINE, f"{W}.interface", "whitespace"),
    ({"interface": '"eth0:1"'}, IFACE_LINE, f"{W}.interface", "':'"),
    ({"interface": '"abcdefghijklmnop"'}, IFACE_LINE, f"{W}.interface", "longer than 15"),
    ({"interface": '".."'}, IFACE_LINE, f"{W}.interface", "is '.' or '..'"),
    ({"interface": "0"}, IFACE_LINE, f"{W}.interface", "(string), got 0"),
    # vrid
    ({"vrid": None}, HEADER_LINE, f"{W}.vrid", "required key is missing (e.g. vrid = 51)"),
    ({"vrid": "0"}, VRID_LINE, f"{W}.vrid", "must be an integer 1..255, got 0"),
    ({"vrid": "256"}, VRID_LINE, f"{W}.vrid", "must be an integer 1..255, got 256"),
    ({"vrid": "51.0"}, VRID_LINE, f"{W}.vrid", "must be an integer 1..255, got 51.0"),
    # priority
    ({"priority": "300"}, EXTRA_LINE, f"{W}.priority", "must be an integer 1..255, got 300"),
    ({"priority": "0"}, EXTRA_LINE, f"{W}.priority", "must be an integer 1..255, got 0"),
    ({"priority": "true"}, EXTRA_LINE, f"{W}.priority", "must be an integer 1..255, got true"),
    ({"priority": '"100"'}, EXTRA_LINE, f"{W}.priority", 'got "100"'),
    # advert_interval
    ({"advert_interval": "0"}, EXTRA_LINE, f"{W}.advert_interval", "0.01..40.95"),
    ({"advert_interval": "41"}, EXTRA_LINE, f"{W}.advert_interval", "got 41"),
    ({"advert_interval": "0.005"}, EXTRA_LINE, f"{W}.advert_interval", "steps of 0.01"),
    ({"advert_interval": "1.015"}, EXTRA_LINE, f"{W}.advert_interval", "got 1.015"),
    ({"advert_interval": "true"}, EXTRA_LINE, f"{W}.advert_interval", "got true"),
    ({"advert_interval": "nan"}, EXTRA_LINE, f"{W}.advert_interval", "got nan"),
    # vips
    ({"vips": None}, HEADER_LINE, f"{W}.vips", "required key is missing"),
    ({"vips": "[]"}, VIPS_LINE, f"{W}.vips", "at least one address, got an empty array"),
    ({"vips": '"192.0.2.1/24"'}, VIPS_LINE, f"{W}.vips", "must be an array of addresses"),
    ({"vips": '["192.0.2.1/33"]'}, VIPS_LINE, f"{W}.vips[0]", 'got "192.0.2.1/33"'),
    ({"vips": '["192.0.2.1", "nope"]'}, VIPS_LINE, f"{W}.vips[1]", 'got "nope"'),
    ({"vips": "[1]"}, VIPS_LINE, f"{W}.vips[0]", '"ADDR/PREFIX" (or bare "ADDR"), got 1'),
    ({"vips": '["224.0.0.18"]'}, VIPS_LINE, f"{W}.vips[0]", "multicast"),
    ({"vips": '["0.0.0.0/0"]'}, VIPS_LINE, f"{W}.vips[0]", "unspecified"),
    ({"vips": '["127.0.0.2"]'}, VIPS_LINE, f"{W}.vips[0]", "loopback"),
    ({"vips": '["fe80::1%eth0/64"]'}, VIPS_LINE, f"{W}.vips[0]", "zone index"),
    (
        {"vips": '["192.0.2.1/24", "2001:db8::1/64"]'},
        VIPS_LINE,
        f"{W}.vips",
        "mixes IPv4 and IPv6 addresses: 192.0.2.1/24, 2001:db8::1/64",
    ),
    (
        {"vips": '["192.0.2.1/24", "192.0.2.1/25"]'},
        VIPS_LINE,
        f"{W}.vips[1]",
        "duplicate address 192.0.2.1 (also vips[0])",
    ),
    # preempt, preempt_delay
    ({"preempt": "1"}, EXTRA_LINE, f"{W}.preempt", "must be true or false, got 1"),
    ({"preempt": '"yes"'}, EXTRA_LINE, f"{W}.preempt", 'must be true or false, got "yes"'),
    ({"preempt_delay": "-1"}, EXTRA_LINE, f"{W}.preempt_delay", "0..1000, got -1"),
    ({"preempt_delay": "1000.5"}, EXTRA_LINE, f"{W}.preempt_delay", "got 1000.5"),
    ({"preempt_delay": "false"}, EXTRA_LINE, f"{W}.preempt_delay", "got false"),
    # unicast
    (
        {"unicast_peers": '"192.0.2.12"'},
        EXTRA_LINE,
        f"{W}.unicast_peers",
        'must be an array of IP address strings, got "192.0.2.12"',
    ),
    ({"unicast_peers": '["nope"]'}, EXTRA_LINE, f"{W}.unicast_peers[0]", 'got "nope"'),
    ({"unicast_peers": '["224.0.0.18"]'}, EXTRA_LINE, f"{W}.unicast_peers[0]", "multicast"),
    (
        {"unicast_peers": '["192.0.2.12", "2001:db8::12"]'},
        EXTRA_LINE,
        f"{W}.unicast_peers[1]",
        "must be an IPv4 address like the vips, got IPv6 address 2001:db8::12",
    ),
    (
        {"unicast_peers": '["192.0.2.12", "192.0.2.13", "192.0.2.12"]'},
        EXTRA_LINE,
        f"{W}.unicast_peers[2]",
        "duplicate peer 192.0.2.12 (also unicast_peers[0])",
    ),
    (
        {"unicast_source": '"192.0.2.11"'},
        EXTRA_LINE,
        f"{W}.unicast_source",
        "only meaningful with unicast_peers",
    ),
    (
        {"unicast_peers": "[]", "unicast_source": '"192.0.2.11"'},
        EXTRA_LINE + 1,
        f"{W}.unicast_source",
        "only meaningful with unicast_peers",
    ),
    (
        {"unicast_peers": '["192.0.2.12"]', "unicast_source": '"2001:db8::11"'},
        EXTRA_LINE + 1,
        f"{W}.unicast_source",
        "must be an IPv4 address like the vips, got IPv6 address 2001:db8::11",
    ),
    (
        {"unicast_peers": '["192.0.2.12"]', "unicast_source": "11"},
        EXTRA_LINE + 1,
        f"{W}.unicast_source",
        "got 11",
    ),
    # checksum
    (
        {"checksum": '"rfc"'},
        EXTRA_LINE,
        f"{W}.checksum",
        'must be one of "pseudo-header" | "message-only", got "rfc"',
    ),
    (
        {"vips": '["2001:db8::1/64"]', "checksum": '"message-only"'},
        EXTRA_LINE,
        f"{W}.checksum",
        "applies to IPv4 only",
    ),
    # vip_label
    ({"vip_label": '"web"'}, EXTRA_LINE, f"{W}.vip_label", 'start with "eth0:"'),
    ({"vip_label": '"eth0:web-frontend"'}, EXTRA_LINE, f"{W}.vip_label", "at most 15"),
    ({"vip_label": "1"}, EXTRA_LINE, f"{W}.vip_label", "must be a string, got 1"),
    (
        {"vips": '["2001:db8::1/64"]', "vip_label": '"eth0:web"'},
        EXTRA_LINE,
        f"{W}.vip_label",
        "only for IPv4",
    ),
    # use_vmac
    ({"use_vmac": '"yes"'}, EXTRA_LINE, f"{W}.use_vmac", 'must be true or false, got "yes"'),
    # announce_*
    ({"announce_count": "0"}, EXTRA_LINE, f"{W}.announce_count", "1..20, got 0"),
    ({"announce_count": "21"}, EXTRA_LINE, f"{W}.announce_count", "1..20, got 21"),
    ({"announce_count": "3.0"}, EXTRA_LINE, f"{W}.announce_count", "integer 1..20, got 3.0"),
    ({"announce_spacing": "1.0"}, EXTRA_LINE, f"{W}.announce_spacing", "1.1..60, got 1.0"),
    ({"announce_spacing": "61"}, EXTRA_LINE, f"{W}.announce_spacing", "1.1..60, got 61"),
    (
        {"announce_refresh": "0.5"},
        EXTRA_LINE,
        f"{W}.announce_refresh",
        "must be 0 (off) or a number of seconds 1.1..3600, got 0.5",
    ),
    ({"announce_refresh": "3601"}, EXTRA_LINE, f"{W}.announce_refresh", "got 3601"),
    ({"announce_refresh": "-inf"}, EXTRA_LINE, f"{W}.announce_refresh", "got -inf"),
    # unknown keys
    (
        {"priorty": "100"},
        EXTRA_LINE,
        f"{W}.priorty",
        "unknown key 'priorty' (did you mean 'priority'?)",
    ),
    (
        {"vip": '["192.0.2.1"]'},
        EXTRA_LINE,
        f"{W}.vip",
        "unknown key 'vip' (did you mean 'vips'?)",
    ),
    (
        {"zzz": "1"},
        EXTRA_LINE,
        f"{W}.zzz",
        "unknown key 'zzz' (known keys: name, interface, vrid,",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "line", "field", "message"),
    INSTANCE_CASES,
    ids=[f"{case[2].split('.')[-1]}-{i}" for i, case in enumerate(INSTANCE_CASES)],
)
def test_instance_rule(
    overrides: dict[str, str | None], line: int, field: str, message: str
) -> None:
    issue = only_issue(doc(**overrides))
    assert (issue.file, issue.line, issue.field) == ("test.toml", line, field), str(issue)
    assert message in issue.message, str(issue)


DAEMON_CASES = [
    ('log_format = "xml"', "daemon.log_format", 'one of "auto" | "json" | "console", got "xml"'),
    ('log_level = "verbose"', "daemon.log_level", 'got "verbose"'),
    ("log_level = 1", "daemon.log_level", "got 1"),
    ('node_name = ""', "daemon.node_name", 'got ""'),
    ('node_name = "lb 1"', "daemon.node_name", "without spaces"),
    ('control_socket = "vipd.sock"', "daemon.control_socket", "absolute path"),
    (f'control_socket = "/{"x" * 107}"', "daemon.control_socket", "at most 107 bytes"),
    ("realtime_priority = 100", "daemon.realtime_priority", "must be an integer 0..99, got 100"),
    ('realtime_priority = "rr"', "daemon.realtime_priority", 'got "rr"'),
    (
        'log_levl = "info"',
        "daemon.log_levl",
        "unknown key 'log_levl' (did you mean 'log_level'?)",
    ),
]


@pytest.mark.parametrize(("line", "field", "message"), DAEMON_CASES)
def test_daemon_rule(line: str, field: str, message: str) -> None:
    text = doc().replace('node_name = "lb1"', line)
    issue = only_issue(text)
    assert (issue.line, issue.field) == (2, field), str(issue)
    assert message in issue.message, str(issue)


INSTANCE_TEXT = '[[instance]]\nname = "web"\ninterface = "eth0"\nvrid = 51\nvips = ["192.0.2.1"]\n'

TOP_CASES = [
    # (text, line, field, message)
    ('[daemon]\nnode_name = "lb1"\n', None, "instance", "at least one [[instance]]"),
    ("", None, "instance", "at least one [[instance]]"),
    ("\n\ninstance = 5\n", 3, "instance", "must be one or more [[instance]] tables, got 5"),
    ("instance = []\n", 1, "instance", "got an array"),
    ('\n[instance]\nname = "web"\n', 2, "instance", "got a table"),
    ("instance = [1]\n", 1, "instance[0]", "must be a table, got 1"),
    ("daemon = 1\n" + INSTANCE_TEXT, 1, "daemon", "must be a table ([daemon]), got 1"),
    (
        "[deamon]\n" + INSTANCE_TEXT,
        1,
        "deamon",
        "unknown key 'deamon' (did you mean 'daemon'?)",
    ),
    (
        "\n\n[deamon.sub]\nx = 1\n" + INSTANCE_TEXT,
        3,
        "deamon",
        "unknown key 'deamon' (did you mean 'daemon'?)",
    ),
    ("\n[daemon.extra]\nx = 1\n" + INSTANCE_TEXT, 2, "daemon.extra", "unknown key 'extra'"),
    (
        INSTANCE_TEXT + "[[instances]]\n",
        6,
        "instances",
        "unknown key 'instances' (did you mean 'instance'?)",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), TOP_CASES)
def test_top_level_rule(text: str, line: int | None, field: str, message: str) -> None:
    issue = only_issue(text)
    assert (issue.line, issue.field) == (line, field), str(issue)
    assert message in issue.message, str(issue)


def second_instance(**overrides: str) -> str:
    """doc() plus a second instance starting at line 10 (header), keys on 11..14."""
    fields = {
        "name": '"api"',
        "interface": '"eth0"',
        "vrid": "52",
        "vips": '["192.0.2.200/24"]',
        **overrides,
    }
    body = "".join(f"{k} = {v}\n" for k, v in fields.items())
    return doc() + "\n[[instance]]\n" + body


CROSS_CASES = [
    ({"name": '"web"'}, 11, "instance[1] (web).name", "duplicate instance name 'web'"),
    (
        {"vrid": "51"},
        13,
        "instance[1] (api).vrid",
        "eth0 already has an IPv4 VRRP instance with vrid 51: instance[0] (web)",
    ),
    (
        {"vips": '["192.0.2.200/24", "192.0.2.100/25"]'},
        14,
        "instance[1] (api).vips[1]",
        "192.0.2.100 is already a VIP of instance[0] (web)",
    ),
]


@pytest.mark.parametrize(("overrides", "line", "field", "message"), CROSS_CASES)
def test_cross_instance_rule(
    overrides: dict[str, str], line: int, field: str, message: str
) -> None:
    issue = only_issue(second_instance(**overrides))
    assert (issue.line, issue.field) == (line, field), str(issue)
    assert message in issue.message, str(issue)


# --------------------------------------------------------------------------- reporting


def test_many_errors_collected_in_one_pass() -> None:
    text = """\
[daemon]
log_levl = "info"
log_format = "xml"

[[instance]]
name = "web"
interface = "eth0"
vrid = 300
priority = true
vips = ["192.0.2.1/24", "2001:db8::1/64"]

[[instance]]
name = "web"
vrid = 1
vips = [
    "192.0.2.1",
    "not-an-ip",
]
announce_count = 99
"""
    got = [(i.line, i.field) for i in issues_of(text)]
    assert got == [
        (2, "daemon.log_levl"),
        (3, "daemon.log_format"),
        (8, "instance[0] (web).vrid"),
        (9, "instance[0] (web).priority"),
        (10, "instance[0] (web).vips"),
        (12, "instance[1] (web).interface"),  # missing: reported on the table header
        (13, "instance[1] (web).name"),
        (16, "instance[1] (web).vips[0]"),  # already a VIP of instance[0]
        (17, "instance[1] (web).vips[1]"),
        (19, "instance[1] (web).announce_count"),
    ]


def test_issue_and_error_formatting() -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(doc(priority="300", announce_count="0"), "/etc/vipd/vipd.toml")
    error = excinfo.value
    assert str(error) == (
        "/etc/vipd/vipd.toml:9: instance[0] (web).priority: must be an integer 1..255, got 300\n"
        "/etc/vipd/vipd.toml:10: instance[0] (web).announce_count: "
        "must be an integer 1..20, got 0"
    )
    assert str(ConfigIssue("f.toml", None, "instance", "x")) == "f.toml: instance: x"
    assert str(ConfigIssue("f.toml", 3, "", "bad")) == "f.toml:3: bad"
    assert isinstance(error, Exception)
    assert pickle.loads(pickle.dumps(error)).issues == error.issues


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[daemon]\nnode_name = "lb1\n', 2),
        ("[[instance]]\nname = web\n", 2),
        ("[daemon]\n\n\nlog_level = 'a' 'b'\n", 4),
        ("[daemon]\n[daemon]\n", 2),
        ('vips = ["192.0.2.1",\n', 2),  # unterminated array: tomllib says "end of document"
    ],
)
def test_syntax_error_line(text: str, line: int) -> None:
    issue = only_issue(text)
    assert issue.line == line, str(issue)
    assert issue.field == ""
    assert issue.message.startswith("TOML syntax error: ")
    assert "(at line" not in issue.message


def test_syntax_error_overlong_integer() -> None:
    issue = only_issue("x = " + "9" * 5000 + "\n")
    assert issue.message.startswith("TOML value cannot be parsed")


def test_syntax_error_deep_nesting() -> None:
    issue = only_issue("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in issue.message


# --------------------------------------------------------------------------- locator


def test_locator_inline_array_of_tables() -> None:
    text = (
        "# comment with [[instance]] in it\n"
        'instance = [ { name = "web", interface = "eth0", vrid = 51, vips = ["192.0.2.1"] },\n'
        '             { name = "api", interface = "eth0", vrid = 999, vips = ["192.0.2.2"] } ]\n'
    )
    issue = only_issue(text)
    assert (issue.line, issue.field) == (3, "instance[1] (api).vrid")


def test_locator_dotted_and_quoted_keys() -> None:
    text = 'daemon.log_level = "loud"\n' + INSTANCE_TEXT + '"announce_count" = 0\n'
    got = [(i.line, i.field) for i in issues_of(text)]
    assert got == [(1, "daemon.log_level"), (7, "instance[0] (web).announce_count")]


def test_locator_ignores_brackets_in_strings_and_comments() -> None:
    text = (
        "[daemon]\n"
        'notes = """\n'
        "[[instance]]\n"
        'vrid = 0 # "quoted"\n'
        '"""\n'
        "# [[instance]]\n"
        "[[instance]] # first\n"
        "name = 'we[b]#'\n"
        'interface = "eth0" # [x]\n'
        "vrid = 51\n"
        "vips = ['192.0.2.1']\n"
        "\n"
        "[[instance]]\n"
        'name = "api"\n'
        'interface = "eth0"\n'
        "vrid = 0\n"
        'vips = ["192.0.2.2"]\n'
    )
    got = [(i.line, i.field) for i in issues_of(text)]
    assert got == [
        (2, "daemon.notes"),
        (8, "instance[0].name"),
        (16, "instance[1] (api).vrid"),
    ]


def test_locator_sub_table_of_array_entry() -> None:
    text = INSTANCE_TEXT + "\n[instance.extra]\nx = 1\n" + INSTANCE_TEXT.replace("web", "api")
    issue = issues_of(text)[0]
    assert (issue.line, issue.field) == (7, "instance[0] (web).extra")


def test_locator_multiline_array_elements() -> None:
    text = doc(vips='[\n  "192.0.2.1",  # ok\n\n  "192.0.2.1/40",\n]')
    issue = only_issue(text)
    assert (issue.line, issue.field) == (VIPS_LINE + 3, "instance[0] (web).vips[1]")


def test_locator_crlf_line_endings() -> None:
    issue = only_issue(doc(priority="0").replace("\n", "\r\n"))
    assert (issue.line, issue.field) == (EXTRA_LINE, "instance[0] (web).priority")


# --------------------------------------------------------------------------- load_config


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    (issue,) = excinfo.value.issues
    assert issue.file == str(path)
    assert issue.line is None
    assert "cannot read config file: No such file or directory" in issue.message
    assert str(path) in str(excinfo.value)


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_load_config_reports_file_name(tmp_path: Path) -> None:
    path = tmp_path / "vipd.toml"
    path.write_text(doc(vrid="0"))
    with pytest.raises(ConfigError) as excinfo:
        load_config(str(path))
    assert str(excinfo.value).startswith(f"{path}:{VRID_LINE}: instance[0] (web).vrid: ")


def test_load_config_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "vipd.toml"
    path.write_bytes(b'[daemon]\nnode_name = "lb\xff"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    (issue,) = excinfo.value.issues
    assert issue.line == 2
    assert "not valid UTF-8" in issue.message


def test_load_config_accepts_bom(tmp_path: Path) -> None:
    path = tmp_path / "vipd.toml"
    path.write_bytes(b"\xef\xbb\xbf" + doc().encode())
    assert load_config(path).instances[0].name == "web"


# --------------------------------------------------------------------------- fuzzing

VALID_TEXTS = [doc(), *(p.read_text() for p in sorted(CONFIGS_DIR.glob("*.toml")))]
TOKENS = [
    "[", "]", "[[", "]]", "{", "}", "=", ",", ".", '"', "'", '"""', "#", "\n", " ", "\\",
    "true", "0", "300", "-1", "1e400", "nan", "inf", "0.005", "1979-05-27", "\ud800",
    '"192.0.2.1/24"', '"2001:db8::1"', "[[instance]]\n", "[daemon]\n", "vrid = ", "x.y = 1\n",
]  # fmt: skip


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID_TEXTS))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
        if op == "insert":
            text = text[:pos] + piece + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
        else:
            text = text[:pos] + piece + text[pos + len(piece) :]
    return text


def key_paths(obj: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path to a table key in parsed TOML, descending through arrays."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (*path, key)
            yield from key_paths(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from key_paths(value, (*path, index))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_fuzz_locator_finds_every_key(text: str) -> None:
    try:
        data = tomllib.loads(text)
    except ValueError:
        return
    locator = _Locator(text)
    lines = text.split("\n")
    for path in key_paths(data):
        line = locator.line(path)
        assert line is not None, path
        if re.fullmatch(r"[A-Za-z0-9_-]+", str(path[-1])):  # spelled as-is in the source
            assert str(path[-1]) in lines[line - 1], (path, line)


def parses_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.toml")
    except ConfigError as e:
        assert e.issues
        for issue in e.issues:
            assert issue.file == "fuzz.toml"
            assert issue.line is None or 1 <= issue.line <= text.count("\n") + 1
            str(issue)
    else:
        assert isinstance(config, DaemonConfig)
        assert config.instances


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_fuzz_mutated_configs(text: str) -> None:
    parses_or_config_error(text)


@settings(max_examples=200)
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    parses_or_config_error(text)


@settings(max_examples=200)
@given(st.binary())
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    parses_or_config_error(data.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- witness


def witness_doc(
    tmp_path: Path, witness: str, instance_extra: str = "", key: bytes = b"k" * 32
) -> Path:
    (tmp_path / "witness.key").write_bytes(key + b"\n")
    path = tmp_path / "vipd.toml"
    path.write_text(doc() + instance_extra + "\n[witness]\n" + witness)
    return path


def test_witness_embedded(tmp_path: Path) -> None:
    path = witness_doc(
        tmp_path, 'backend = "embedded"\naddress = "192.0.2.10:7480"\nkey_file = "witness.key"\n'
    )
    config = load_config(path)
    assert config.witness is not None
    assert config.witness.address == ("192.0.2.10", 7480)
    assert config.witness.key == b"k" * 32  # stripped of the newline
    assert config.witness.policy == "hold-with-peer"
    instance = config.instances[0]
    assert instance.fence and instance.lease_name == "web" and instance.lease_ttl is None


def test_witness_etcd_and_instance_keys(tmp_path: Path) -> None:
    path = witness_doc(
        tmp_path,
        'backend = "etcd"\nendpoints = ["http://192.0.2.10:2379/"]\nkey_file = "witness.key"\n'
        'policy = "release"\nfence_command = "fence-peer --host lb2"\n',
        'lease_name = "shared"\nlease_ttl = 2\npeers = ["192.0.2.12"]\n',
    )
    config = load_config(path)
    assert config.witness is not None
    assert config.witness.endpoints == ("http://192.0.2.10:2379",)
    assert config.witness.fence_command == ("fence-peer", "--host", "lb2")
    instance = config.instances[0]
    assert (instance.lease_name, instance.lease_ttl) == ("shared", 2.0)
    assert instance.peers == (IPv4Address("192.0.2.12"),)


@pytest.mark.parametrize(
    ("witness", "field", "fragment"),
    [
        ('address = "192.0.2.10:7480"\nkey_file = "witness.key"\n', "witness.backend", "missing"),
        ('backend = "embedded"\nkey_file = "witness.key"\n', "witness.address", "missing"),
        (
            'backend = "embedded"\naddress = "nowhere"\nkey_file = "witness.key"\n',
            "witness.address",
            "HOST:PORT",
        ),
        ('backend = "etcd"\nkey_file = "witness.key"\n', "witness.endpoints", "missing"),
        ('backend = "embedded"\naddress = "192.0.2.10:7480"\n', "witness.key_file", "missing"),
        (
            'backend = "embedded"\naddress = "192.0.2.10:7480"\nkey_file = "nope.key"\n',
            "witness.key_file",
            "cannot read",
        ),
        (
            'backend = "embedded"\naddress = "192.0.2.10:7480"\nkey_file = "witness.key"\n'
            'policy = "hold"\n',
            "witness.policy",
            "hold-with-peer",
        ),
    ],
)
def test_witness_errors(tmp_path: Path, witness: str, field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(witness_doc(tmp_path, witness))
    (issue,) = excinfo.value.issues
    assert issue.field == field and fragment in issue.message, str(issue)
    assert issue.line is not None and issue.file.endswith("vipd.toml")


def test_witness_key_too_short(tmp_path: Path) -> None:
    path = witness_doc(
        tmp_path,
        'backend = "embedded"\naddress = "192.0.2.10:7480"\nkey_file = "witness.key"\n',
        key=b"short",
    )
    issue = only_issue_of(path)
    assert issue.field == "witness.key_file" and "at least 16" in issue.message


def test_fence_needs_a_witness() -> None:
    issue = only_issue(doc(fence="true"))
    assert issue.field == f"{W}.fence" and "[witness]" in issue.message


def only_issue_of(path: Path) -> ConfigIssue:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    (issue,) = excinfo.value.issues
    return issue
