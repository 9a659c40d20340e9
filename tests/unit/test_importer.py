"""`vipd import-keepalived`: the keepalived.conf parser, the conversion, the CLI.

The corpus in tests/data/keepalived/ holds keepalived configurations. For each valid
``NAME.conf`` the converted TOML must equal ``NAME.toml`` and the report must equal
``NAME.unconverted`` (one ``FILE:LINE: TEXT -- REASON`` per line); for each
``invalid-NAME.conf`` the error must equal ``invalid-NAME.error``. After a deliberate change
to the importer, rewrite the expected files with

    VIPD_REGEN_KEEPALIVED_CORPUS=1 .venv/bin/pytest tests/unit/test_importer.py

and review the diff before committing it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vipd.cli import vipd_main
from vipd.config import load_config, parse_config
from vipd.importer import (
    _GLOBAL_REASONS,
    _INSTANCE_REASONS,
    _TOP_LEVEL_REASONS,
    ImportResult,
    KeepalivedImportError,
    KeepalivedParseError,
    Statement,
    Unconverted,
    import_keepalived,
    import_keepalived_text,
    parse_keepalived_text,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "keepalived"
VALID = sorted(p.name for p in CORPUS.glob("*.conf") if not p.name.startswith("invalid-"))
INVALID = sorted(p.name for p in CORPUS.glob("invalid-*.conf"))
REGEN = os.environ.get("VIPD_REGEN_KEEPALIVED_CORPUS") == "1"


@pytest.fixture
def in_corpus(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the corpus directory, so file names in the output are relative."""
    monkeypatch.chdir(CORPUS)
    return CORPUS


def convert(text: str) -> ImportResult:
    return import_keepalived_text(textwrap.dedent(text), "k.conf")


def instance(result: ImportResult, index: int = 0) -> dict[str, object]:
    """The converted instance's keys, as vipd's own TOML parser reads them."""
    import tomllib

    data = tomllib.loads(result.toml)
    item: dict[str, object] = data["instance"][index]
    return item


def reasons(result: ImportResult) -> list[tuple[int, str]]:
    return [(u.line, u.reason) for u in result.unconverted]


def minimal(body: str, globals_: str = "vrrp_version 3") -> str:
    """A one-instance config with ``body`` added to the instance (lines 6 on)."""
    return (
        f"global_defs {{\n    {globals_}\n}}\n"
        "vrrp_instance VI_1 {\n"
        "    interface eth0\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + "\n    virtual_router_id 51\n"
        "    virtual_ipaddress {\n        192.0.2.100/24\n    }\n}\n"
    )


# --------------------------------------------------------------------------- corpus


def test_corpus_is_there() -> None:
    assert len(VALID) >= 9 and len(INVALID) >= 8


@pytest.mark.parametrize("name", VALID)
def test_corpus_converts_exactly(name: str, in_corpus: Path, tmp_path: Path) -> None:
    result = import_keepalived(name)
    stem = name.removesuffix(".conf")
    expected_toml = in_corpus / f"{stem}.toml"
    expected_report = in_corpus / f"{stem}.unconverted"
    report = "".join(f"{u}\n" for u in result.unconverted)
    if REGEN:
        expected_toml.write_text(result.toml)
        expected_report.write_text(report)
    assert result.toml == expected_toml.read_text()
    assert report == expected_report.read_text()
    # What the importer writes is a configuration vipd loads.
    out = tmp_path / "vipd.toml"
    out.write_text(result.toml)
    config = load_config(out)
    assert config.instances
    assert load_config(expected_toml).instances == config.instances


@pytest.mark.parametrize("name", INVALID)
def test_corpus_invalid_files_fail_with_file_and_line(name: str, in_corpus: Path) -> None:
    with pytest.raises(KeepalivedImportError) as info:
        import_keepalived(name)
    expected = in_corpus / name.replace(".conf", ".error")
    if REGEN:
        expected.write_text(f"{info.value}\n")
    assert f"{info.value}\n" == expected.read_text()


def test_corpus_expected_outputs_are_all_used() -> None:
    stems = {n.removesuffix(".conf") for n in VALID + INVALID}
    for path in CORPUS.iterdir():
        if path.suffix in (".toml", ".unconverted", ".error"):
            assert path.stem in stems, f"{path.name} has no .conf"


# --------------------------------------------------------------------------- syntax


def test_quotes_comments_and_escapes() -> None:
    [st] = parse_keepalived_text(
        'notify abcd" efg h jkl "mnop \'x # y\' "a\\tb\\x41\\101" # comment ! more\n'
    )
    assert st.words == ["notify", "abcd efg h jkl mnop", "x # y", "a\tbAA"]
    [st] = parse_keepalived_text("priority 100! bang comment\n")
    assert st.words == ["priority", "100"]


@given(st.lists(st.text(st.characters(max_codepoint=0xFF), max_size=8), min_size=1, max_size=4))
def test_reported_text_reads_back_as_the_same_words(words: list[str]) -> None:
    """What the report shows for a line is keepalived syntax for the same words."""
    assume(words[0] not in ("include", "includer", "includem", "includew", "includeb", "includea"))
    statement = Statement(words, "k.conf", 1)
    [back] = parse_keepalived_text(statement.render(limit=10_000))
    assert back.words == words


def test_braces_on_the_next_line_on_one_line_and_glued() -> None:
    tree = parse_keepalived_text(
        "global_defs { router_id lb1 }\n"
        "vrrp_instance VI_1\n"
        "\n"
        "{\n"
        "    virtual_ipaddress {192.0.2.1/24}\n"
        "    track_script{ a\n"
        "      b }\n"
        "}\n"
    )
    assert [s.words for s in tree] == [["global_defs"], ["vrrp_instance", "VI_1"]]
    assert [s.words for s in tree[0].block or []] == [["router_id", "lb1"]]
    inner = tree[1].block or []
    assert [s.words for s in inner] == [["virtual_ipaddress"], ["track_script"]]
    assert [s.words for s in inner[0].block or []] == [["192.0.2.1/24"]]
    assert [(s.words, s.line) for s in inner[1].block or []] == [(["a"], 6), (["b"], 7)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a {\n", "k.conf:1: block of 'a' is never closed (missing '}')"),
        ("a {\n}\n}\n", "k.conf:3: '}' without a matching '{'"),
        ("{\n", "k.conf:1: '{' without a keyword before it"),
        ('a "b\n', 'k.conf:1: unterminated quoted string (no closing ")'),
        ("@lb1 priority 1\n", "k.conf:1: conditional configuration"),
        ("$PRIO=150\n", "k.conf:1: parameter definitions"),
        ("~SEQ(i, 1, 3) priority $i\n", "k.conf:1: ~SEQ/~LST blocks"),
        ("include a b\n", "k.conf:1: include takes one file name or pattern"),
    ],
)
def test_malformed_syntax(text: str, message: str) -> None:
    with pytest.raises(KeepalivedParseError) as info:
        parse_keepalived_text(text, "k.conf")
    assert str(info.value).startswith(message)


def test_include_relative_to_the_including_file_inside_blocks(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inst.conf").write_text(
        "vrrp_instance VI_1 {\n  interface eth0\n  include vips/*.conf\n  virtual_router_id 51\n}\n"
    )
    (tmp_path / "sub" / "vips").mkdir()
    (tmp_path / "sub" / "vips" / "a.conf").write_text("virtual_ipaddress {\n  192.0.2.1/24\n}\n")
    (tmp_path / "main.conf").write_text(
        "global_defs {\n vrrp_version 3\n}\ninclude sub/{inst,none*}.conf\ninclude none/*.conf\n"
    )
    result = import_keepalived(tmp_path / "main.conf")
    assert instance(result)["vips"] == ["192.0.2.1/24"]
    assert result.complete


def test_include_missing_file_and_loop(tmp_path: Path) -> None:
    main = tmp_path / "main.conf"
    main.write_text("include other.conf\n")
    with pytest.raises(KeepalivedParseError, match=r"main.conf:1: include: no such file"):
        import_keepalived(main)
    (tmp_path / "other.conf").write_text("\ninclude main.conf\n")
    with pytest.raises(KeepalivedParseError, match=r"other.conf:2: include loop"):
        import_keepalived(main)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(KeepalivedParseError, match="cannot read"):
        import_keepalived(tmp_path / "missing.conf")
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"global_defs {\n router_id \xff\n}\n")
    with pytest.raises(KeepalivedParseError, match=r"bad.conf:2: not valid UTF-8"):
        import_keepalived(bad)


# --------------------------------------------------------------------------- conversion


def test_state_master_without_priority_means_255_like_keepalived() -> None:
    result = convert(minimal("state MASTER"))
    assert instance(result)["priority"] == 255
    assert result.complete
    assert "priority 255 (address owner) becomes master at once" in result.toml


def test_state_is_a_comment_not_a_key() -> None:
    for state in ("MASTER", "BACKUP"):
        result = convert(minimal(f"state {state}\npriority 150"))
        assert "state" not in instance(result)
        assert result.complete
        assert "vipd has no initial state" in result.toml
    with pytest.raises(KeepalivedParseError, match="must be MASTER or BACKUP"):
        convert(minimal("state master"))


def test_nopreempt_and_preempt_delay() -> None:
    result = convert(minimal("state BACKUP\nnopreempt\npreempt_delay 2.5"))
    assert instance(result)["preempt"] is False
    assert instance(result)["preempt_delay"] == 2.5
    assert result.complete
    # keepalived clears both with state MASTER ("will not work with initial state MASTER").
    result = convert(minimal("state MASTER\npriority 150\nnopreempt\npreempt_delay 3"))
    assert "preempt" not in instance(result) and "preempt_delay" not in instance(result)
    assert [line for line, _ in reasons(result)] == [8, 9]
    # ... and nopreempt with priority 255.
    result = convert(minimal("priority 255\nnopreempt"))
    assert "preempt" not in instance(result)
    assert "priority 255" in result.unconverted[0].reason


def test_later_setting_wins_and_the_earlier_is_reported() -> None:
    result = convert(minimal("priority 120\npriority 130\nnopreempt\npreempt"))
    assert instance(result)["priority"] == 130
    assert instance(result)["preempt"] is True
    assert [line for line, _ in reasons(result)] == [6, 8]


@pytest.mark.parametrize(
    ("advert_int", "expected"),
    [("1", 1.0), ("0.5", 0.5), ("0.125", 0.13), ("0.123", 0.12), ("50", 40.95), ("3", 3.0)],
)
def test_advert_int_rounds_like_keepalived(advert_int: str, expected: float) -> None:
    result = convert(minimal(f"advert_int {advert_int}"))
    assert instance(result)["advert_interval"] == expected
    assert result.complete


TWO_INSTANCES = """\
global_defs {
    vrrp_version 2
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.100/24
    }
}
vrrp_instance VI_2 {
    interface eth0
    virtual_router_id 52
    virtual_ipaddress {
        192.0.2.101/24
    }
}
"""


def test_vrrp_version_2_is_reported_once_at_its_line() -> None:
    result = convert(TWO_INSTANCES)
    assert [line for line, _ in reasons(result)] == [2]
    assert "VRRPv3 only" in result.unconverted[0].reason


def test_vrrp_version_default_is_2_except_for_ipv6_and_instance_version_wins() -> None:
    result = convert(minimal("priority 100", globals_="router_id lb1"))
    [(line, reason)] = reasons(result)
    assert line == 4 and reason.startswith("no vrrp_version (keepalived's default is 2)")
    assert result.unconverted[0].text == "vrrp_instance VI_1 {"
    assert convert(minimal("version 3", globals_="vrrp_version 2")).complete
    v6 = minimal("priority 100", globals_="router_id lb1").replace(
        "192.0.2.100/24", "2001:db8::100/64"
    )
    assert convert(v6).complete


def test_gratuitous_arp_settings_map_to_announce_keys() -> None:
    inst = instance(convert(minimal("garp_master_delay 5\ngarp_master_refresh 60")))
    assert (inst["announce_count"], inst["announce_spacing"], inst["announce_refresh"]) == (
        2,
        5.0,
        60.0,
    )
    inst = instance(convert(minimal("garp_master_delay 0\ngarp_master_refresh 0")))
    assert (inst["announce_count"], inst["announce_refresh"]) == (1, 0.0)
    assert "announce_spacing" not in inst
    # Global defaults apply unless the instance overrides them.
    result = convert(
        minimal("garp_master_delay 3", globals_="vrrp_version 3\n    vrrp_garp_master_delay 0")
    )
    assert instance(result)["announce_spacing"] == 3.0
    inst = instance(convert(minimal("", globals_="vrrp_version 3\n    vrrp_min_garp")))
    assert inst["announce_count"] == 1
    # Nothing set: vipd's defaults (3 bursts 1.2 s apart, refresh every 5 s).
    inst = instance(convert(minimal("")))
    assert not {"announce_count", "announce_spacing", "announce_refresh"} & set(inst)


def test_realtime_scheduling_maps_to_realtime_priority() -> None:
    import tomllib

    result = convert(
        minimal("", globals_="vrrp_version 3\n    vrrp_rt_priority 5\n    vrrp_rlimit_rttime 10000")
    )
    assert result.complete, reasons(result)
    assert tomllib.loads(result.toml)["daemon"]["realtime_priority"] == 5
    assert "vrrp_rt_priority (k.conf:3)" in result.toml
    assert "vrrp_rlimit_rttime (k.conf:4): vipd sets RLIMIT_RTTIME itself" in result.toml
    assert "realtime_priority" not in convert(minimal("")).toml
    with pytest.raises(KeepalivedParseError, match=r"k\.conf:3: vrrp_rt_priority: must be an"):
        convert(minimal("", globals_="vrrp_version 3\n    vrrp_rt_priority 0"))


def test_garp_repeat_cannot_be_expressed() -> None:
    result = convert(minimal("garp_master_repeat 1\ngarp_master_refresh_repeat 1"))
    assert [line for line, _ in reasons(result)] == [6]  # refresh_repeat 1 is vipd's way


def test_vip_forms_dev_label_ipv6_and_options() -> None:
    result = convert(
        """\
        global_defs {
            vrrp_version 3
        }
        vrrp_instance VI_1 {
            interface eth0
            virtual_router_id 51
            virtual_ipaddress {
                192.0.2.100/24 dev eth0 label eth0:1 brd 192.0.2.255 scope global
                192.0.2.101 label eth0:1 -nodad
                192.0.2.102/24 dev eth1
                192.0.2.103/24 label eth0:1 home
            }
        }
        """
    )
    inst = instance(result)
    assert inst["vips"] == ["192.0.2.100/24", "192.0.2.101/32", "192.0.2.103/24"]
    assert inst["vip_label"] == "eth0:1"
    assert [line for line, _ in reasons(result)] == [10, 11]
    assert reasons(result)[0][1].startswith(
        "VIP left out: vipd puts every VIP on the instance's interface (eth0), not on eth1; "
    )
    assert reasons(result)[1][1] == "VIP converted without home (no vipd setting)"


def test_labels_that_differ_are_reported_per_vip() -> None:
    result = convert(
        minimal("").replace(
            "192.0.2.100/24\n", "192.0.2.100/24 label eth0:a\n        192.0.2.101/24\n"
        )
    )
    assert "vip_label" not in instance(result)
    [(line, reason)] = reasons(result)
    assert line == 9 and reason.startswith("label eth0:a not converted")


def test_unicast_peers_and_source() -> None:
    result = convert(
        minimal(
            "unicast_src_ip 192.0.2.11\n"
            "unicast_peer {\n    192.0.2.12\n    192.0.2.13\n    2001:db8::13\n}"
        )
    )
    inst = instance(result)
    assert inst["unicast_peers"] == ["192.0.2.12", "192.0.2.13"]
    assert inst["unicast_source"] == "192.0.2.11"
    assert [line for line, _ in reasons(result)] == [10]  # the IPv6 peer
    # A source without peers: vipd sends multicast from the primary address.
    result = convert(minimal("mcast_src_ip 192.0.2.11"))
    assert "unicast_source" not in instance(result)
    assert [line for line, _ in reasons(result)] == [6]


def test_vmac() -> None:
    result = convert(minimal("use_vmac\nvmac_xmit_base"))
    assert instance(result)["use_vmac"] is True
    assert result.complete
    result = convert(minimal("use_vmac vrrp.51"))
    assert instance(result)["use_vmac"] is True
    assert "vrrp4.51" in result.unconverted[0].reason


def test_instance_names_are_made_valid_and_unique() -> None:
    text = minimal("")
    second = text[text.index("vrrp_instance") :].replace("51", "52").replace(".100/", ".101/")
    result = convert(text.replace("VI_1", '"web front/1"') + second.replace("VI_1", "web_front_1"))
    assert [instance(result, i)["name"] for i in (0, 1)] == ["web_front_1", "web_front_1-2"]


def test_router_id_becomes_node_name() -> None:
    import tomllib

    data = tomllib.loads(convert(minimal("", globals_="router_id lb-7")).toml)
    assert data["daemon"] == {"node_name": "lb-7"}


def test_instance_without_interface_or_vips_is_reported_not_converted() -> None:
    result = convert(
        TWO_INSTANCES.replace("    interface eth0\n", "", 1).replace(" 2\n", " 3\n", 1)
    )
    assert [instance(result)["name"]] == ["VI_2"]
    assert reasons(result)[0] == (4, "instance not converted: no interface (vipd needs one)")
    assert result.unconverted[0].text == "vrrp_instance VI_1 {"
    with pytest.raises(KeepalivedImportError, match="no vrrp_instance could be converted"):
        convert("vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n}\n")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("priority 0", "k.conf:6: priority: must be an integer 1..255, got '0'"),
        ("priority", "k.conf:6: priority: takes exactly one value, got 0"),
        ("advert_int fast", "k.conf:6: advert_int: must be a number"),
        ("preempt_delay 2000", "k.conf:6: preempt_delay: must be a number 0..1000"),
        ("nopreempt yes", "k.conf:6: nopreempt: takes no value"),
        ("priority {\n}", "k.conf:6: priority: takes no { } block"),
        ("unicast_peer {\n  192.0.2.999\n}", "k.conf:7: unicast_peer: '192.0.2.999' is not"),
        ("unicast_src_ip me", "k.conf:6: unicast_src_ip: 'me' is not an IP address"),
    ],
)
def test_bad_values_are_parse_errors(body: str, message: str) -> None:
    with pytest.raises(KeepalivedParseError) as info:
        convert(minimal(body))
    assert str(info.value).startswith(message)


def test_duplicate_vip_across_instances_fails_vipd_validation() -> None:
    text = minimal("")
    second = text[text.index("vrrp_instance") :].replace("VI_1", "VI_2").replace("51", "52")
    with pytest.raises(KeepalivedImportError, match="not valid for vipd") as info:
        convert(text + second)
    assert "already a VIP of" in str(info.value)


# ---- nothing is dropped silently


@pytest.mark.parametrize("keyword", sorted(_INSTANCE_REASONS))
def test_every_unsupported_instance_keyword_is_reported(keyword: str) -> None:
    result = convert(minimal(f"{keyword} something"))
    assert reasons(result) == [(6, _INSTANCE_REASONS[keyword])]
    assert result.unconverted[0].text == f"{keyword} something"
    assert _INSTANCE_REASONS[keyword] in result.toml.replace("\n#       ", " ")


@pytest.mark.parametrize("keyword", sorted(_GLOBAL_REASONS))
def test_every_unsupported_global_keyword_is_reported(keyword: str) -> None:
    result = convert(minimal("", globals_=f"vrrp_version 3\n    {keyword} x"))
    assert reasons(result) == [(3, _GLOBAL_REASONS[keyword])]


@pytest.mark.parametrize("keyword", sorted(_TOP_LEVEL_REASONS))
def test_every_unsupported_top_level_block_is_reported(keyword: str) -> None:
    result = convert(minimal("") + f"{keyword} x {{\n    a b\n}}\n")
    assert reasons(result) == [(12, _TOP_LEVEL_REASONS[keyword])]
    assert result.unconverted[0].text == f"{keyword} x {{ a b }}"


def test_unknown_keywords_are_reported_too() -> None:
    result = convert(minimal("frobnicate 1", globals_="vrrp_version 3\n    wibble") + "zap\n")
    assert [line for line, _ in reasons(result)] == [3, 7, 13]


def test_report_lines_name_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "t.conf").write_text("track_script {\n  chk\n}\n")
    (tmp_path / "main.conf").write_text(minimal("include t.conf"))
    result = import_keepalived(tmp_path / "main.conf")
    assert result.unconverted == (
        Unconverted(
            str(tmp_path / "t.conf"),
            2,
            "chk",
            "no vrrp_script named chk: keepalived ignores this entry",
        ),
    )


def test_output_is_valid_toml_for_awkward_names() -> None:
    result = convert(minimal("").replace("VI_1", '"a\\"b\\\\c"'))
    assert parse_config(result.toml).instances[0].name == "a_b_c"


# --------------------------------------------------------------------------- tracking and hooks

SCRIPT_DEFS = """\
vrrp_script chk_a {
    script "/usr/local/bin/chk --name 'a b' \\\\x41"
    interval 2
    timeout 3
    weight -20
    rise 2
    fall 4
}
vrrp_script chk_rev {
    script /usr/local/bin/chk-rev
    weight 10 reverse
}
track_file tf {
    file /run/tf
    weight 5
}
"""


def tracked(body: str, defs: str = SCRIPT_DEFS) -> ImportResult:
    """``minimal(body)`` after ``defs`` (the definitions must come first, as in keepalived)."""
    return convert(defs + minimal(body))


def entries(result: ImportResult, key: str) -> list[dict[str, object]]:
    """The converted instance's tracker tables of ``key`` (all of them tables)."""
    items = instance(result)[key]
    assert isinstance(items, list) and all(isinstance(i, dict) for i in items)
    return items


def used(result: ImportResult) -> list[tuple[int, str]]:
    """The reasons, but for definitions nothing tracks."""
    return [(line, r) for line, r in reasons(result) if not r.startswith("tracked by no")]


def test_script_converts_with_every_option_and_keepalived_arguments() -> None:
    result = tracked("track_script {\n    chk_a\n}")
    assert used(result) == []
    [script] = entries(result, "track_scripts")
    assert script == {
        "name": "chk_a",
        "command": "/usr/local/bin/chk --name 'a b' A",
        "interval": 2,
        "timeout": 3,
        "rise": 2,
        "fall": 4,
        "weight": -20,
    }
    [tracker] = parse_config(result.toml).instances[0].track_scripts
    assert tracker.command == ("/usr/local/bin/chk", "--name", "a b", "A")
    assert (tracker.interval, tracker.timeout, tracker.weight) == (2.0, 3.0, -20)


def test_script_defaults_are_keepalived_s_and_vipd_s() -> None:
    result = tracked("track_script {\n    chk\n}", "vrrp_script chk {\n    script /bin/chk\n}\n")
    assert instance(result)["track_scripts"] == [{"name": "chk", "command": "/bin/chk"}]
    [tracker] = parse_config(result.toml).instances[0].track_scripts
    assert (tracker.interval, tracker.timeout, tracker.rise, tracker.fall) == (1.0, 1.0, 1, 1)
    assert tracker.weight == 0  # FAULT on failure, in keepalived as in vipd


def test_instance_weight_overrides_the_script_s_and_inherits_reverse() -> None:
    result = tracked("track_script {\n    chk_a weight 15\n    chk_rev weight 3\n}")
    [script] = entries(result, "track_scripts")
    assert (script["name"], script["weight"]) == ("chk_a", 15)
    # keepalived keeps the script's "reverse" when an entry sets only a weight.
    [(line, reason)] = used(result)
    assert line == 24 and reason.startswith(
        "vipd has no reversed weights (reverse, from vrrp_script"
    )
    result = tracked("track_script {\n    chk_rev weight 3 noreverse\n}")
    assert instance(result)["track_scripts"] == [
        {"name": "chk_rev", "command": "/usr/local/bin/chk-rev", "weight": 3}
    ]


def test_unknown_late_and_duplicate_references_are_reported() -> None:
    text = (
        minimal("track_script {\n    chk_late\n    nope\n}")
        + "vrrp_script chk_late {\n script x\n}\n"
    )
    result = convert(text)
    assert "track_scripts" not in instance(result)
    assert [r for _, r in reasons(result)] == [
        "vrrp_script chk_late is defined only after this line (k.conf:15): keepalived does not "
        "find it and ignores this entry",
        "no vrrp_script named nope: keepalived ignores this entry",
        "tracked by no vrrp_instance or vrrp_sync_group: keepalived does not run it either, so "
        "there is nothing to convert",
    ]
    result = tracked("track_script {\n    chk_a\n}\ntrack_script {\n    chk_a weight 1\n}")
    assert [line for line, _ in used(result)] == [26]
    assert entries(result, "track_scripts")[0]["weight"] == -20


def test_own_interface_is_tracked_unless_dont_track_primary() -> None:
    assert instance(convert(minimal("")))["track_interfaces"] == ["eth0"]
    result = convert(minimal("dont_track_primary\ntrack_interface {\n    eth1 weight -50\n}"))
    assert instance(result)["track_interfaces"] == [{"name": "eth1", "weight": -50}]
    assert result.complete
    # keepalived ignores a track_interface entry for the instance's own interface.
    result = convert(minimal("track_interface {\n    eth0 weight -50\n    eth1\n}"))
    assert instance(result)["track_interfaces"] == ["eth0", "eth1"]
    assert [line for line, _ in reasons(result)] == [7]


def test_track_file_weights() -> None:
    result = tracked("track_file {\n    tf\n}")
    assert instance(result)["track_files"] == [{"name": "tf", "path": "/run/tf", "weight": 5}]
    result = tracked("track_file {\n    tf weight 0\n}")
    [tracker] = parse_config(result.toml).instances[0].track_files
    assert (tracker.path, tracker.weight) == ("/run/tf", 0)
    default = tracked("track_file {\n    f\n}", "track_file f {\n    file /run/f\n}\n")
    assert instance(default)["track_files"] == [{"name": "f", "path": "/run/f"}]  # weight 1


def test_address_owner_drops_weighted_trackers() -> None:
    result = tracked(
        "priority 255\ntrack_script {\n    chk_a\n    chk_a2\n}\n"
        "track_interface {\n    eth1 weight 5\n}\ntrack_file {\n    tf\n}",
        SCRIPT_DEFS + "vrrp_script chk_a2 {\n    script /bin/x\n}\n",
    )
    inst = instance(result)
    assert inst["track_scripts"] == [{"name": "chk_a2", "command": "/bin/x"}]
    assert inst["track_interfaces"] == ["eth0"]
    assert "track_files" not in inst
    assert [r.endswith("its priority stays 255") for _, r in used(result)] == [True] * 3


def test_tracker_names_stay_unique() -> None:
    defs = "vrrp_script eth1 {\n    script /bin/a\n}\ntrack_file eth1 {\n    file /run/b\n}\n"
    result = tracked(
        "track_interface {\n    eth1\n}\ntrack_script {\n    eth1\n}\ntrack_file {\n    eth1\n}",
        defs,
    )
    config = parse_config(result.toml).instances[0]
    assert [t.name for t in config.trackers] == ["eth0", "eth1", "eth1-script", "eth1-file"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("interval 0", "k.conf:3: interval: must be an integer 1..4294, got '0'"),
        ("interval 0.5", "k.conf:3: interval: must be an integer 1..4294, got '0.5'"),
        ("timeout x", "k.conf:3: timeout: must be an integer 1..4294, got 'x'"),
        ("weight 254", "k.conf:3: weight 254: weight must be an integer -253..253"),
        ("weight 5 backwards", "k.conf:3: weight 5 backwards: unknown option 'backwards'"),
        ("rise 0", "k.conf:3: rise: must be an integer 1..2147483647, got '0'"),
        ('script "/bin/x \'y"', "k.conf:2: script: unterminated ' in the command"),
        ('script ""', "k.conf:2: script: needs a command"),
    ],
)
def test_bad_vrrp_script_values_are_parse_errors(body: str, message: str) -> None:
    text = f"vrrp_script s {{\n    script /bin/x\n    {body}\n}}\n"
    if body.startswith("script"):
        text = f"vrrp_script s {{\n    {body}\n}}\n"
    with pytest.raises(KeepalivedParseError) as info:
        convert(text + minimal("track_script {\n    s\n}"))
    assert str(info.value).startswith(message)


def test_track_entry_forms() -> None:
    with pytest.raises(KeepalivedParseError, match=r"weight must be an integer -253\.\.253"):
        convert(minimal("track_interface {\n    eth1 weight 300\n}"))
    # keepalived ignores an entry whose words do not start with "weight".
    result = convert(minimal("track_interface {\n    eth1 reverse\n    eth2 eth3\n}"))
    assert instance(result)["track_interfaces"] == ["eth0"]
    assert [line for line, _ in reasons(result)] == [7, 8]


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30))
def test_commands_read_back_as_keepalived_splits_them(text: str) -> None:
    """Whatever keepalived makes of a script string, vipd's string form gives the same argv."""
    import shlex

    from vipd.importer import _command, _split_command

    try:
        argv = _split_command(Statement(["script", text], "k.conf", 1), text)
    except KeepalivedParseError:
        return
    assert shlex.split(_command(argv)) == argv


def test_hooks_convert_first_one_wins_and_users_are_reported() -> None:
    result = convert(
        minimal(
            "notify_master \"/bin/up 'a b'\"\nnotify_master /bin/other\n"
            "notify_backup /bin/down root\nnotify /bin/all\nnotify_stop /bin/stop\n"
            "notify_fault /bin/fault"
        )
    )
    config = parse_config(result.toml).instances[0]
    assert config.notify_master == ("/bin/up", "a b")
    assert config.notify_backup == ("/bin/down",)
    assert (config.notify, config.notify_stop, config.notify_fault) == (
        ("/bin/all",),
        ("/bin/stop",),
        ("/bin/fault",),
    )
    assert [line for line, _ in reasons(result)] == [7, 8]
    assert reasons(result)[1][1].startswith("converted without 'root'")


def test_sync_group_converts_with_hooks_and_member_rules() -> None:
    two = TWO_INSTANCES.replace("vrrp_version 2", "vrrp_version 3")
    text = (
        "vrrp_script chk {\n    script /bin/chk\n    weight -10\n}\n"
        + two.replace(
            "    virtual_router_id 52\n",
            "    virtual_router_id 52\n    track_script {\n        chk\n    }\n",
        )
        + "vrrp_sync_group G {\n    group {\n        VI_1 VI_2\n    }\n"
        + '    notify_master "/bin/g master"\n    notify /bin/g\n'
        + "    track_interface {\n        eth9 weight -7\n    }\n}\n"
    )
    result = convert(text)
    config = parse_config(result.toml)
    [group] = config.groups
    assert (group.name, group.instances) == ("G", ("VI_1", "VI_2"))
    assert (group.notify_master, group.notify) == (("/bin/g", "master"), ("/bin/g",))
    for inst in config.instances:
        # The group's tracker on every member; VI_2's weighted script dropped, as keepalived does.
        assert [(t.name, t.weight) for t in inst.trackers] == [("eth0", 0), ("eth9", -7)]
    [unconverted] = result.unconverted
    assert unconverted.text == "chk" and "sync_group_tracking_weight" in unconverted.reason
    # With sync_group_tracking_weight the member keeps it.
    kept = convert(
        text.replace("    notify /bin/g\n", "    notify /bin/g\n    sync_group_tracking_weight\n")
    )
    assert [t.name for t in parse_config(kept.toml).instances[1].trackers] == [
        "eth0",
        "eth9",
        "chk",
    ]
    assert kept.complete


def test_group_tracker_replaces_a_member_s_weighted_entry_even_reversed() -> None:
    """keepalived 2.2.7 tracks s with the group's "weight 5 reverse" here; vipd cannot."""
    text = (
        "vrrp_script s {\n    script /bin/s\n}\n"
        + minimal("track_script {\n    s weight 3\n}\nnotify_master /bin/m nobody nogroup x")
        + "vrrp_sync_group G {\n    group {\n        VI_1\n    }\n"
        + "    sync_group_tracking_weight\n    track_script {\n        s weight 5 reverse\n"
        + "    }\n}\n"
    )
    result = convert(text)
    assert "track_scripts" not in instance(result)
    assert [line for line, _ in reasons(result)] == [10, 12, 24]
    assert reasons(result)[0][1].endswith(
        "keepalived uses the group's weight 5 reverse instead of this entry's"
    )
    assert parse_config(result.toml).instances[0].notify_master == ("/bin/m",)


# --------------------------------------------------------------------------- CLI


def test_cli_prints_toml_and_exits_0_when_everything_converts(
    in_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vipd_main(["import-keepalived", "pair-lb2.conf"]) == 0
    out, err = capsys.readouterr()
    assert out == (in_corpus / "pair-lb2.toml").read_text()
    assert err == ""


def test_cli_writes_output_file_and_lists_unconverted_lines(
    in_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "vipd.toml"
    assert vipd_main(["import-keepalived", "tracking.conf", "-o", str(out_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert out_file.read_text() == (in_corpus / "tracking.toml").read_text()
    lines = err.splitlines()
    assert lines[0] == "2 keepalived line(s) not converted:"
    assert "\n".join(lines[1:]) + "\n" == (in_corpus / "tracking.unconverted").read_text()
    assert vipd_main(["check", "-c", str(out_file)]) == 0


def test_cli_exits_2_on_parse_errors(in_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vipd_main(["import-keepalived", "invalid-vrid.conf"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "vipd import-keepalived: invalid-vrid.conf:3: virtual_router_id: must be an integer "
        "1..255, got '300'\n"
    )


def test_cli_exits_2_when_the_output_cannot_be_written(
    in_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "dir.toml"
    assert vipd_main(["import-keepalived", "pair-lb1.conf", "-o", str(target)]) == 2
    assert "cannot write" in capsys.readouterr().err
