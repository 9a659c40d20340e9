"""vipd.config for tracking, hooks and sync groups (docs/tracking.md): the TOML shape, the
defaults, every rule, and error positions inside inline tables and [[instance.track_*]]."""

from __future__ import annotations

import re

import pytest

from vipd.config import GroupConfig, TrackConfig, parse_config

from .test_config import CONFIGS_DIR, EXTRA_LINE, W, doc, issues_of, only_issue


def test_no_tracking_by_default() -> None:
    instance = parse_config(doc()).instances[0]
    assert instance.trackers == ()
    assert (instance.notify, instance.notify_master, instance.notify_stop) == ((), (), ())
    assert instance.notify_timeout == 10.0
    assert parse_config(doc()).groups == ()


def test_every_tracker_kind_with_defaults() -> None:
    text = doc(
        track_interfaces='["eth1", {name = "eth2", weight = -50}]',
        track_scripts='[{command = "/usr/local/bin/check-nginx --quick"}]',
        track_http='[{url = "https://127.0.0.1:8443/health"}]',
        track_tcp='[{address = "[::1]:8080"}]',
        track_files='[{path = "/run/vipd/web.weight"}]',
    )
    i = parse_config(text).instances[0]
    assert i.trackers == (
        TrackConfig(kind="interface", name="eth1"),
        TrackConfig(kind="interface", name="eth2", weight=-50),
        TrackConfig(
            kind="script",
            name="check-nginx",
            command=("/usr/local/bin/check-nginx", "--quick"),
        ),
        TrackConfig(kind="http", name="https://127.0.0.1:8443/health", url=i.track_http[0].url),
        TrackConfig(kind="tcp", name="[::1]:8080", address=("::1", 8080)),
        TrackConfig(
            kind="file", name="/run/vipd/web.weight", weight=1, path="/run/vipd/web.weight"
        ),
    )
    http = i.track_http[0]
    assert (http.status, http.verify_tls, http.timeout, http.interval) == (200, True, 1.0, 1.0)


def test_every_tracker_key_set() -> None:
    text = doc(
        track_scripts=(
            '[{name = "nginx", command = ["/bin/sh", "-c", "pidof nginx"], interval = 2, '
            "timeout = 5, rise = 3, fall = 4, weight = -20}]"
        ),
        track_http=(
            '[{name = "health", url = "http://127.0.0.1:8080/health", status = 204, '
            "timeout = 0.5, interval = 1.5, rise = 2, fall = 2, weight = 30, verify_tls = false}]"
        ),
        track_tcp='[{name = "svc", address = "127.0.0.1:8080", timeout = 3, weight = 0}]',
        track_files='[{name = "prio", path = "/run/p", weight = -10, interval = 5}]',
    )
    i = parse_config(text).instances[0]
    assert i.track_scripts == (
        TrackConfig(
            kind="script",
            name="nginx",
            weight=-20,
            rise=3,
            fall=4,
            interval=2.0,
            timeout=5.0,
            command=("/bin/sh", "-c", "pidof nginx"),
        ),
    )
    assert i.track_http == (
        TrackConfig(
            kind="http",
            name="health",
            weight=30,
            rise=2,
            fall=2,
            interval=1.5,
            timeout=0.5,
            url="http://127.0.0.1:8080/health",
            status=204,
            verify_tls=False,
        ),
    )
    assert i.track_tcp[0].timeout == 3.0 and i.track_tcp[0].interval == 1.0
    assert i.track_files[0] == TrackConfig(
        kind="file", name="prio", weight=-10, interval=5.0, timeout=5.0, path="/run/p"
    )


def test_timeout_defaults_to_the_interval() -> None:
    i = parse_config(doc(track_scripts='[{command = "/bin/true", interval = 7}]')).instances[0]
    assert i.track_scripts[0].timeout == 7.0


def test_array_of_tables_form() -> None:
    text = doc() + (
        "\n[[instance.track_scripts]]\n"
        'command = "/bin/true"\n'
        "weight = -5\n"
        "\n[[instance.track_scripts]]\n"
        'name = "other"\n'
        'command = "/bin/false"\n'
    )
    i = parse_config(text).instances[0]
    assert [(t.name, t.weight) for t in i.track_scripts] == [("true", -5), ("other", 0)]
    bad = text.replace("weight = -5", "weight = 500")
    issue = only_issue(bad)
    assert issue.line == 12 and issue.field == f"{W}.track_scripts[0].weight"
    assert "must be an integer -254..254, got 500" in issue.message


def test_hooks() -> None:
    text = doc(
        notify='"/usr/local/bin/notify --verbose"',
        notify_master='["/usr/local/bin/up", "web"]',
        notify_backup='"/usr/local/bin/down"',
        notify_fault='"/usr/local/bin/down fault"',
        notify_stop='"/usr/local/bin/down stop"',
        notify_timeout="2.5",
    )
    i = parse_config(text).instances[0]
    assert i.notify == ("/usr/local/bin/notify", "--verbose")
    assert i.notify_master == ("/usr/local/bin/up", "web")
    assert i.notify_backup == ("/usr/local/bin/down",)
    assert i.notify_fault == ("/usr/local/bin/down", "fault")
    assert i.notify_stop == ("/usr/local/bin/down", "stop")
    assert i.notify_timeout == 2.5


TWO = (
    doc()
    + '\n[[instance]]\nname = "api"\ninterface = "eth0"\nvrid = 52\nvips = ["192.0.2.101/24"]\n'
)
GROUP_LINE = TWO.count("\n") + 2  # after a blank line


def with_group(*lines: str) -> str:
    return TWO + "\n[[group]]\n" + "".join(line + "\n" for line in lines)


def test_group() -> None:
    config = parse_config(
        with_group(
            'name = "edge"',
            'instances = ["web", "api"]',
            'notify = "/bin/edge-notify"',
            'notify_master = "/bin/edge-up"',
            "notify_timeout = 3",
        )
    )
    assert config.groups == (
        GroupConfig(
            name="edge",
            instances=("web", "api"),
            notify=("/bin/edge-notify",),
            notify_master=("/bin/edge-up",),
            notify_timeout=3.0,
        ),
    )


# ---- rules ------------------------------------------------------------------------------------

TRACK_CASES: list[tuple[dict[str, str | None], str, str]] = [
    # (overrides, field, message fragment); every case sits on EXTRA_LINE
    ({"track_scripts": '"/bin/true"'}, "track_scripts", "must be an array of tables like [{"),
    ({"track_scripts": "[1]"}, "track_scripts[0]", "must be a table like {command = "),
    ({"track_scripts": "[{}]"}, "track_scripts[0].command", "required key is missing"),
    ({"track_scripts": '[{command = ""}]'}, "track_scripts[0].command", "must be a command"),
    ({"track_scripts": '[{command = "\'x"}]'}, "track_scripts[0].command", "cannot be split"),
    (
        {"track_scripts": '[{command = "/bin/true", interval = 0}]'},
        "track_scripts[0].interval",
        "0.1..3600, got 0",
    ),
    (
        {"track_scripts": '[{command = "/bin/true", timeout = "5"}]'},
        "track_scripts[0].timeout",
        'got "5"',
    ),
    (
        {"track_scripts": '[{command = "/bin/true", rise = 0}]'},
        "track_scripts[0].rise",
        "integer 1..1000, got 0",
    ),
    (
        {"track_scripts": '[{command = "/bin/true", fall = 1.5}]'},
        "track_scripts[0].fall",
        "got 1.5",
    ),
    (
        {"track_scripts": '[{command = "/bin/true", weight = -255}]'},
        "track_scripts[0].weight",
        "-254..254, got -255",
    ),
    (
        {"track_scripts": '[{command = "/bin/true", wieght = 1}]'},
        "track_scripts[0].wieght",
        "did you mean 'weight'?",
    ),
    (
        {"track_scripts": '[{command = "/bin/true", name = "a b"}]'},
        "track_scripts[0].name",
        "without spaces",
    ),
    (
        {"track_scripts": '[{command = "/bin/true"}, {command = "/bin/true -q"}]'},
        "track_scripts[1].name",
        "duplicate tracker name 'true' (also track_scripts[0])",
    ),
    (
        {"track_interfaces": '["eth1"]', "track_files": '[{path = "/x", name = "eth1"}]'},
        "track_files[0].name",
        "duplicate tracker name 'eth1' (also track_interfaces[0])",
    ),
    ({"track_interfaces": "[{weight = 1}]"}, "track_interfaces[0].name", "required key"),
    ({"track_interfaces": '["eth 1"]'}, "track_interfaces[0].name", "whitespace"),
    (
        {"track_interfaces": '[{name = "eth1", interval = 1}]'},
        "track_interfaces[0].interval",
        "unknown key 'interval'",
    ),
    ({"track_interfaces": "[3]"}, "track_interfaces[0]", "must be a table like {name = "),
    ({"track_http": "[{}]"}, "track_http[0].url", "required key is missing"),
    ({"track_http": '[{url = "ftp://x/"}]'}, "track_http[0].url", "http:// or https:// URL"),
    ({"track_http": '[{url = "http://"}]'}, "track_http[0].url", 'got "http://"'),
    ({"track_http": '[{url = "http://h:99999/"}]'}, "track_http[0].url", "URL like"),
    ({"track_http": '[{url = "http://h/ x"}]'}, "track_http[0].url", "URL like"),
    (
        {"track_http": '[{url = "http://h/", status = 700}]'},
        "track_http[0].status",
        "100..599, got 700",
    ),
    (
        {"track_http": '[{url = "http://h/", verify_tls = "no"}]'},
        "track_http[0].verify_tls",
        "true or false",
    ),
    ({"track_tcp": '[{address = "localhost:80"}]'}, "track_tcp[0].address", '"HOST:PORT"'),
    ({"track_tcp": '[{address = "127.0.0.1"}]'}, "track_tcp[0].address", 'got "127.0.0.1"'),
    ({"track_tcp": '[{address = "127.0.0.1:0"}]'}, "track_tcp[0].address", "got"),
    ({"track_files": '[{path = "run/x"}]'}, "track_files[0].path", "absolute path"),
    ({"track_files": '[{path = "/x", timeout = 1}]'}, "track_files[0].timeout", "unknown key"),
    ({"notify": '""'}, "notify", "must be a command"),
    ({"notify_master": "[]"}, "notify_master", "must be a command"),
    ({"notify_stop": "[1]"}, "notify_stop", "must be a command"),
    ({"notify_timeout": "0"}, "notify_timeout", "0.1..3600, got 0"),
    ({"notify_fualt": '"/bin/x"'}, "notify_fualt", "did you mean 'notify_fault'?"),
]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    TRACK_CASES,
    ids=[f"{case[1]}-{i}" for i, case in enumerate(TRACK_CASES)],
)
def test_track_rule(overrides: dict[str, str | None], field: str, message: str) -> None:
    issue = only_issue(doc(**overrides))
    line = EXTRA_LINE + len(overrides) - 1
    assert (issue.file, issue.line, issue.field) == ("test.toml", line, f"{W}.{field}"), str(issue)
    assert message in issue.message, str(issue)


def test_errors_inside_a_multiline_array_point_at_their_entry() -> None:
    text = doc(
        track_scripts=(
            "[\n"
            '    {command = "/bin/true"},\n'
            '    {command = "/bin/false", timeout = -1},\n'
            '    {name = "x"},\n'
            "]"
        )
    )
    issues = issues_of(text)
    assert [(i.line, i.field) for i in issues] == [
        (EXTRA_LINE + 2, f"{W}.track_scripts[1].timeout"),
        (EXTRA_LINE + 3, f"{W}.track_scripts[2].command"),
    ]


GROUP_CASES: list[tuple[list[str], int, str, str]] = [
    # (lines of the [[group]] table, line offset from its header, field, message fragment)
    (['instances = ["web"]'], 0, "group[0].name", "required key is missing"),
    (['name = "edge"'], 0, "group[0] (edge).instances", "required key is missing"),
    (['name = "edge"', "instances = []"], 2, "group[0] (edge).instances", "at least one"),
    (['name = "edge"', 'instances = "web"'], 2, "group[0] (edge).instances", "must be an array"),
    (
        ['name = "edge"', 'instances = ["web", "nope"]'],
        2,
        "group[0] (edge).instances[1]",
        "no [[instance]] is named 'nope'",
    ),
    (
        ['name = "edge"', 'instances = ["web", "web"]'],
        2,
        "group[0] (edge).instances[1]",
        "duplicate instance 'web' (also instances[0])",
    ),
    (['name = "ed ge"', 'instances = ["web"]'], 1, "group[0].name", 'got "ed ge"'),
    (
        ['name = "edge"', 'instances = ["web"]', "notify_timeout = -1"],
        3,
        "group[0] (edge).notify_timeout",
        "got -1",
    ),
    (
        ['name = "edge"', 'instances = ["web"]', "priority = 1"],
        3,
        "group[0] (edge).priority",
        "unknown key 'priority'",
    ),
    (
        ['name = "edge"', 'instances = ["web"]', "notify_master = 1"],
        3,
        "group[0] (edge).notify_master",
        "must be a command",
    ),
]


@pytest.mark.parametrize(("lines", "offset", "field", "message"), GROUP_CASES)
def test_group_rule(lines: list[str], offset: int, field: str, message: str) -> None:
    issue = only_issue(with_group(*lines))
    assert (issue.line, issue.field) == (GROUP_LINE + offset, field), str(issue)
    assert message in issue.message, str(issue)


def test_an_instance_belongs_to_one_group() -> None:
    text = with_group('name = "a"', 'instances = ["web", "api"]') + (
        '\n[[group]]\nname = "b"\ninstances = ["api"]\n'
        '\n[[group]]\nname = "a"\ninstances = ["web"]\n'
    )
    issues = issues_of(text)
    assert [(i.field, i.message) for i in issues] == [
        (
            "group[1] (b).instances[0]",
            "'api' is already in group 'a'; an instance belongs to one group at most",
        ),
        ("group[2] (a).name", "duplicate group name 'a' (also group[0])"),
        (
            "group[2] (a).instances[0]",
            "'web' is already in group 'a'; an instance belongs to one group at most",
        ),
    ]


def test_group_must_be_an_array_of_tables() -> None:
    issue = only_issue(doc().replace("[daemon]", 'group = "edge"\n[daemon]'))
    assert (issue.line, issue.field) == (1, "group")
    assert "one or more [[group]] tables" in issue.message


def test_a_group_naming_a_broken_instance_reports_only_the_instance() -> None:
    text = with_group('name = "edge"', 'instances = ["web", "api"]').replace(
        "vrid = 52", "vrid = 0"
    )
    assert [i.field for i in issues_of(text)] == ["instance[1] (api).vrid"]


def test_reference_examples_are_valid() -> None:
    """The commented tracking and group examples of configs/vipd.toml, uncommented, load."""
    text = (CONFIGS_DIR / "vipd.toml").read_text()
    tail = text[text.index("# ---- Health tracking") :]
    lines, in_array = [], False
    for line in tail.splitlines():
        body = line.removeprefix("# ")
        if in_array or re.match(r"[a-z_]+ = |\[\[group\]\]$", body):
            lines.append(body)
            in_array = body.endswith("[") or (in_array and body != "]")
    head = text[: text.index("# ---- Health tracking")]
    instance, group = "\n".join(lines).split("[[group]]")
    extra = (
        '\n[[instance]]\nname = "api"\ninterface = "eth0"\nvrid = 52\nvips = ["192.0.2.110/24"]\n'
    )
    config = parse_config(head + instance + extra + "\n[[group]]" + group, "vipd.toml")
    web = config.instances[0]
    assert {t.kind for t in web.trackers} == {"interface", "script", "http", "tcp", "file"}
    assert web.notify and web.notify_master and web.notify_stop
    assert config.groups[0].instances == ("web", "api")
    for key in ("track_interfaces", "track_scripts", "track_http", "track_tcp", "track_files"):
        assert re.search(rf"^# {key} = ", text, re.M), key
