"""Convert the VRRP side of a keepalived configuration into a vipd TOML configuration.

``vipd import-keepalived FILE`` runs :func:`import_keepalived`. Two parts:

* A small, strict parser for keepalived.conf syntax: blocks ``{ ... }`` (the brace may sit
  on the keyword's line, on the next line, or close on the same line), comments from ``#``
  or ``!`` to the end of the line, quoted strings with keepalived's escapes, and ``include``
  (and its includer/includem/... variants) with globs and ``{a,b}`` braces, relative to the
  including file. Anything malformed raises :class:`KeepalivedParseError` naming the file
  and line. Conditional lines (``@id``), parameter definitions (``$NAME=``) and
  ``~SEQ``/``~LST`` are refused rather than guessed at.
* A converter from the parsed tree to vipd's ``[daemon]``, ``[[instance]]`` and ``[[group]]``
  tables, trackers and hooks included. It reproduces what keepalived 2.2 actually runs (e.g.
  ``state MASTER`` without a priority means priority 255; keepalived ignores ``nopreempt``
  with ``state MASTER``; it tracks an instance's own interface, drops the weighted trackers
  of an address owner and, without ``sync_group_tracking_weight``, the weighted track
  scripts and files of sync group members; the first ``vrrp_script`` of a name and the first
  notify line of a kind count), and every line it cannot express in vipd's configuration
  becomes an :class:`Unconverted` entry with file, line and reason: nothing is dropped
  silently.

The generated TOML is validated with :func:`vipd.config.parse_config` before it is returned.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from typing import Final, TypeAlias

__all__ = [
    "ImportResult",
    "KeepalivedImportError",
    "KeepalivedParseError",
    "Statement",
    "Unconverted",
    "cli_import",
    "convert",
    "import_keepalived",
    "import_keepalived_text",
    "parse_keepalived",
    "parse_keepalived_text",
]

_IPAddress: TypeAlias = IPv4Address | IPv6Address
_IPInterface: TypeAlias = IPv4Interface | IPv6Interface

_MAX_INCLUDE_DEPTH: Final = 16
_INCLUDE_KEYWORDS: Final = frozenset(
    ("include", "includer", "includem", "includew", "includeb", "includea")
)


# --------------------------------------------------------------------------- public types


class KeepalivedImportError(Exception):
    """The file cannot be converted. ``file``/``line`` locate the problem when known;
    ``unconverted`` carries whatever was reported before the import gave up."""

    def __init__(
        self,
        file: str | None,
        line: int | None,
        message: str,
        unconverted: Sequence[Unconverted] = (),
    ) -> None:
        self.file = file
        self.line = line
        self.message = message
        self.unconverted = tuple(unconverted)
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class KeepalivedParseError(KeepalivedImportError):
    """The keepalived configuration is malformed (syntax, or a value keepalived rejects)."""


@dataclass(frozen=True)
class Unconverted:
    """One keepalived line (or block, given by its first line) that vipd's config cannot
    express, with the reason."""

    file: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text} -- {self.reason}"


@dataclass(frozen=True)
class ImportResult:
    toml: str
    unconverted: tuple[Unconverted, ...]

    @property
    def complete(self) -> bool:
        """True if every line was converted."""
        return not self.unconverted


@dataclass
class Statement:
    """A keyword line: its words (quotes removed), where it starts, and its block if any."""

    words: list[str]
    file: str
    line: int
    block: list[Statement] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0]

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    def render(self, limit: int = 120) -> str:
        """keepalived-like text for reports: ``kw args { child; child }``, shortened."""
        text = " ".join(_quote_word(w) for w in self.words)
        if self.block is not None:
            inner = "; ".join(child.render(limit) for child in self.block)
            text += " { " + inner + " }" if inner else " { }"
        if len(text) > limit:
            text = text[: limit - 3].rstrip() + "..."
        return text


def _quote_word(word: str) -> str:
    """A word as keepalived would read it back: quoted (with escapes) when needed."""
    plain = word and word.isprintable() and word[0] not in "@$~"
    if plain and not any(c.isspace() or c in "\"'#!{}" for c in word):
        return word
    out = []
    for c in word:
        if c in '"\\':
            out.append("\\" + c)
        elif c == " " or c.isprintable():
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else "?")
    return '"' + "".join(out) + '"'


# --------------------------------------------------------------------------- parser

_OPEN: Final = object()
_CLOSE: Final = object()
_Token: TypeAlias = str | object

_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_OCTAL: Final = frozenset("01234567")
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _tokenize(raw: str, file: str, lineno: int, split_braces: bool = True) -> list[_Token]:
    """Split one line into words and brace tokens, keepalived-style.

    Quotes (" or ') may start or end anywhere in a word and are removed; inside them
    whitespace, braces, '#' and '!' are literal and backslash escapes apply. Outside
    quotes '#' or '!' starts a comment.
    """
    tokens: list[_Token] = []
    buf: list[str] = []
    in_word = False
    quote: str | None = None
    i, n = 0, len(raw)

    def flush() -> None:
        nonlocal in_word
        if in_word:
            tokens.append("".join(buf))
            buf.clear()
            in_word = False

    while i < n:
        c = raw[i]
        if quote is not None:
            if c == quote:
                quote = None
                i += 1
            elif c == "\\" and i + 1 < n:
                text, i = _escape(raw, i + 1)
                buf.append(text)
            else:
                buf.append(c)
                i += 1
            continue
        if c.isspace():
            flush()
        elif c in "#!":
            break
        elif c in "\"'":
            quote = c
            in_word = True
        elif split_braces and c in "{}":
            flush()
            tokens.append(_OPEN if c == "{" else _CLOSE)
        else:
            buf.append(c)
            in_word = True
        i += 1
    if quote is not None:
        raise KeepalivedParseError(file, lineno, f"unterminated quoted string (no closing {quote})")
    flush()
    return tokens


def _escape(raw: str, i: int) -> tuple[str, int]:
    """Decode the escape whose character is at raw[i]; return (text, index after it)."""
    c = raw[i]
    if c in _ESCAPES:
        return _ESCAPES[c], i + 1
    if c in _OCTAL:
        j = i
        while j < len(raw) and j < i + 3 and raw[j] in _OCTAL:
            j += 1
        return chr(int(raw[i:j], 8) & 0xFF), j
    if c == "x" and i + 1 < len(raw) and raw[i + 1] in _HEX:
        j = i + 1
        while j < len(raw) and j < i + 3 and raw[j] in _HEX:
            j += 1
        return chr(int(raw[i + 1 : j], 16)), j
    if c == "c" and i + 1 < len(raw):
        return chr(ord(raw[i + 1]) & 0x1F), i + 2
    return c, i + 1


_PARAM_DEF_RE: Final = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*=")


class _Parser:
    """Builds the statement tree from lines, following includes as it goes (a block may
    even be closed in an included file, as with keepalived's line splicing)."""

    def __init__(self) -> None:
        self.root: list[Statement] = []
        # Open blocks: (the list statements go into, the statement that opened it).
        self._stack: list[tuple[list[Statement], Statement | None]] = [(self.root, None)]
        # The statement a '{' on a later line would open a block for.
        self._pending: Statement | None = None

    def finish(self) -> list[Statement]:
        if len(self._stack) > 1:
            opener = self._stack[-1][1]
            assert opener is not None
            raise KeepalivedParseError(
                opener.file,
                opener.line,
                f"block of {opener.keyword!r} is never closed (missing '}}')",
            )
        return self.root

    def read_file(self, path: str, chain: tuple[str, ...] = ()) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise KeepalivedParseError(path, None, f"cannot read: {exc.strerror or exc}") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise KeepalivedParseError(path, line, "not valid UTF-8") from None
        self.read_text(text, path, (*chain, os.path.realpath(path)))

    def read_text(self, text: str, source: str, chain: tuple[str, ...] = ()) -> None:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            self._line(raw, source, lineno, chain)

    def _line(self, raw: str, file: str, lineno: int, chain: tuple[str, ...]) -> None:
        stripped = raw.lstrip()
        if stripped.startswith("@"):
            raise KeepalivedParseError(
                file,
                lineno,
                "conditional configuration (@config-id lines) is not supported by the "
                "importer; write out this node's lines without the @ prefixes first",
            )
        if _PARAM_DEF_RE.match(stripped):
            raise KeepalivedParseError(
                file,
                lineno,
                "parameter definitions ($NAME=...) are not supported by the importer; "
                "substitute them first",
            )
        if stripped.startswith(("~SEQ", "~LST")):
            raise KeepalivedParseError(
                file, lineno, "~SEQ/~LST blocks are not supported by the importer; expand them"
            )
        words = _tokenize(raw, file, lineno, split_braces=False)
        if words and words[0] in _INCLUDE_KEYWORDS:
            self._include([w for w in words if isinstance(w, str)], file, lineno, chain)
            return
        for token in _tokenize(raw, file, lineno):
            if token is _OPEN:
                self._open(file, lineno)
            elif token is _CLOSE:
                self._close(file, lineno)
            else:
                assert isinstance(token, str)
                # Words on the line of the statement being built belong to it.
                pending = self._pending
                if pending is not None and (pending.file, pending.line) == (file, lineno):
                    pending.words.append(token)
                    continue
                statement = Statement([token], file, lineno)
                self._stack[-1][0].append(statement)
                self._pending = statement

    def _open(self, file: str, lineno: int) -> None:
        opener = self._pending
        if opener is None:
            raise KeepalivedParseError(file, lineno, "'{' without a keyword before it")
        opener.block = []
        self._stack.append((opener.block, opener))
        self._pending = None

    def _close(self, file: str, lineno: int) -> None:
        if len(self._stack) == 1:
            raise KeepalivedParseError(file, lineno, "'}' without a matching '{'")
        self._stack.pop()
        self._pending = None

    def _include(self, words: list[str], file: str, lineno: int, chain: tuple[str, ...]) -> None:
        """Read the files an include line names, relative to the including file.

        A glob that matches nothing includes nothing (as in keepalived); a plain name
        that does not exist is an error, since the configuration would be incomplete.
        """
        if len(words) != 2:
            raise KeepalivedParseError(file, lineno, f"{words[0]} takes one file name or pattern")
        pattern = words[1]
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(file), pattern)
        paths: list[str] = []
        for expanded in _expand_braces(pattern):
            if glob.has_magic(expanded):
                paths += sorted(glob.glob(expanded))
            elif os.path.exists(expanded):
                paths.append(expanded)
            else:
                raise KeepalivedParseError(
                    file, lineno, f"{words[0]}: no such file {os.path.normpath(expanded)!r}"
                )
        # Statements do not continue across an include boundary.
        self._pending = None
        for path in paths:
            if os.path.realpath(path) in chain:
                raise KeepalivedParseError(
                    file, lineno, f"include loop: {os.path.normpath(path)!r} includes itself"
                )
            if len(chain) >= _MAX_INCLUDE_DEPTH:
                raise KeepalivedParseError(file, lineno, "includes nested too deeply")
            self.read_file(os.path.normpath(path), chain)
            self._pending = None


def _expand_braces(pattern: str) -> list[str]:
    """csh-style brace expansion: "a{b,c}d" -> ["abd", "acd"] (nested braces allowed)."""
    depth = 0
    start = -1
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                parts: list[str] = []
                level, last = 0, start + 1
                for j in range(start + 1, i):
                    if pattern[j] == "{":
                        level += 1
                    elif pattern[j] == "}":
                        level -= 1
                    elif pattern[j] == "," and level == 0:
                        parts.append(pattern[last:j])
                        last = j + 1
                parts.append(pattern[last:i])
                if len(parts) < 2:
                    continue  # "{x}" is not an alternative; keep it literal
                head, tail = pattern[:start], pattern[i + 1 :]
                result: list[str] = []
                for part in parts:
                    result += _expand_braces(head + part + tail)
                return result
    return [pattern]


def parse_keepalived(path: str | os.PathLike[str]) -> list[Statement]:
    """Parse a keepalived configuration file (following includes) into statements."""
    parser = _Parser()
    parser.read_file(os.fspath(path))
    return parser.finish()


def parse_keepalived_text(text: str, source: str = "<string>") -> list[Statement]:
    """Parse keepalived text; includes are relative to ``source``'s directory."""
    parser = _Parser()
    parser.read_text(text, source)
    return parser.finish()


# --------------------------------------------------------------------------- converter

# Reasons, shared by several keywords.
_NO_PROCESS_TRACKING = (
    "vipd has no process tracking: priority and state will not follow it; a vrrp_script "
    "(vipd track_scripts) running `pgrep -x NAME` checks the same"
)
_NO_BFD = "vipd has no BFD: priority and state will not follow it"
_NO_FIFO = (
    "vipd has no notify FIFO; use notify hooks, or `vipctl events` (JSON lines for "
    "transitions, trackers and groups)"
)
_NO_SMTP = "vipd sends no e-mail; alert on vipd's log or metrics instead"
_KEEPALIVED_PROCESS = "keepalived process setting; vipd has no equivalent"
_NO_LVS = "LVS/IPVS (keepalived's checker side) is outside vipd's scope; keep it in keepalived"
_NO_SCRIPT_USER = (
    "vipd runs scripts and hooks as its own user (under the shipped systemd unit an "
    "unprivileged, sandboxed one); there is no per-script user"
)
_NOTIFY_DELETED = (
    "vipd has no DELETED notification: an instance removed by a reload runs its notify_stop "
    "hooks (keepalived without notify_deleted sends FAULT)"
)
_NOTIFY_RX_LOWER = "vipd has no hook for a master hearing a lower-priority advert"
_NOTIFY_PRIORITY = (
    "vipd's hooks run on state changes only; priority changes show in `vipctl status` and "
    "the metrics"
)

_TOP_LEVEL_REASONS: Final[dict[str, str]] = {
    "vrrp_track_process": _NO_PROCESS_TRACKING,
    "bfd_instance": _NO_BFD,
    "garp_group": (
        "vipd sends the frames of one announcement back to back; per-interface "
        "gratuitous ARP/NA intervals are not supported"
    ),
    "static_ipaddress": "vipd manages only VIPs; configure static addresses in the OS",
    "static_routes": "vipd manages only VIPs; configure static routes in the OS",
    "static_rules": "vipd manages only VIPs; configure static rules in the OS",
    "track_group": "vipd manages only VIPs; static address tracking is not supported",
    "linkbeat_interfaces": _KEEPALIVED_PROCESS,
    "interface_up_down_delays": "vipd has no interface up/down debouncing",
    "virtual_server": _NO_LVS,
    "virtual_server_group": _NO_LVS,
    "net_namespace": "run vipd itself in the namespace (e.g. systemd NetworkNamespacePath=)",
    "net_namespace_ipvs": _NO_LVS,
    "namespace_with_ipsets": _KEEPALIVED_PROCESS,
    "instance": _KEEPALIVED_PROCESS,
    "use_pid_dir": _KEEPALIVED_PROCESS,
    "linkbeat_use_polling": _KEEPALIVED_PROCESS,
    "child_wait_time": _KEEPALIVED_PROCESS,
}

_INSTANCE_REASONS: Final[dict[str, str]] = {
    "track_process": _NO_PROCESS_TRACKING,
    "track_bfd": _NO_BFD,
    "track_src_ip": "vipd has no source-address tracking yet",
    "notify_deleted": _NOTIFY_DELETED,
    "notify_master_rx_lower_pri": _NOTIFY_RX_LOWER,
    "notify_priority_changes": _NOTIFY_PRIORITY,
    "smtp_alert": _NO_SMTP,
    "authentication": (
        "vipd has no VRRP authentication (VRRPv3, RFC 5798, removed it; keepalived "
        "ignores it in version 3 too); protect the segment or use unicast peers"
    ),
    "virtual_ipaddress_excluded": (
        "vipd has no excluded VIPs yet; do not add them to vips: the advert's address "
        "list would differ and keepalived peers discard such adverts"
    ),
    "virtual_routes": "vipd has no virtual routes yet; they are not added on takeover",
    "virtual_rules": "vipd has no virtual rules yet; they are not added on takeover",
    "promote_secondaries": "vipd does not set promote_secondaries; set the sysctl in the OS",
    "use_vmac_addr": "vipd puts every VIP on the instance's interface (or its vmac)",
    "use_ipvlan": "vipd has no ipvlan mode; use_vmac (macvlan) is the closest",
    "vrf": "vipd has no VRF support",
    "mcast_dst_ip": (
        "vipd always uses the standard groups 224.0.0.18 / ff02::12; a different group "
        "would not interoperate"
    ),
    "no_accept": "vipd always accepts traffic for its VIPs (accept mode); no no_accept yet",
    "strict_mode": "vipd has no strict mode (it never drops traffic for its VIPs)",
    "unicast_fault_no_peer": "vipd refuses a unicast setup without peers at config check",
    "old_unicast_checksum": "vipd has no pre-1.3.6 keepalived checksum compatibility",
    "debug": _KEEPALIVED_PROCESS,
    "kernel_rx_buf_size": _KEEPALIVED_PROCESS,
    "linkbeat_use_polling": _KEEPALIVED_PROCESS,
    "garp_lower_prio_delay": (
        "vipd re-announces on hearing a lower-priority master with announce_count / "
        "announce_spacing; no separate setting"
    ),
    "garp_lower_prio_repeat": (
        "vipd re-announces on hearing a lower-priority master with announce_count / "
        "announce_spacing; no separate setting"
    ),
    "garp_extra_if": "vipd announces only on the instance's interface (or its vmac)",
}

_GARP_REPEAT_REASON: Final = (
    "vipd sends one gratuitous ARP request and one reply (IPv6: one unsolicited NA) "
    "per VIP per announcement, not a configurable number; announce_count sets how many "
    "announcements follow a takeover"
)
_GARP_INTERVAL_REASON: Final = (
    "vipd sends the frames of one announcement back to back; no per-message interval"
)

_ADVERT_REASONS: Final = {
    "lower_prio_no_advert": (
        "vipd always answers a lower-priority master's advert at once (RFC 9568) and "
        "re-announces the VIPs"
    ),
    "higher_prio_send_advert": "vipd sends no advert before yielding to a higher priority",
}

_GLOBAL_REASONS: Final[dict[str, str]] = {
    "vrrp_garp_master_repeat": _GARP_REPEAT_REASON,
    "vrrp_garp_lower_prio_delay": _INSTANCE_REASONS["garp_lower_prio_delay"],
    "vrrp_garp_lower_prio_repeat": _INSTANCE_REASONS["garp_lower_prio_repeat"],
    "vrrp_garp_extra_if": _INSTANCE_REASONS["garp_extra_if"],
    "vrrp_strict": (
        "vipd has no strict mode; in particular it always accepts traffic for its VIPs "
        "(no no_accept) and allows unicast peers"
    ),
    "vrrp_notify_priority_changes": _NOTIFY_PRIORITY,
    "notify_fifo": _NO_FIFO,
    "notify_fifo_script": _NO_FIFO,
    "vrrp_notify_fifo": _NO_FIFO,
    "vrrp_notify_fifo_script": _NO_FIFO,
    "fifo_write_vrrp_states_on_reload": _NO_FIFO,
    "script_user": _NO_SCRIPT_USER,
    "enable_script_security": (
        "vipd does not check who may write to a script; it runs scripts as its own user "
        "(under the shipped systemd unit an unprivileged one)"
    ),
    "notification_email": _NO_SMTP,
    "notification_email_from": _NO_SMTP,
    "smtp_server": _NO_SMTP,
    "smtp_helo_name": _NO_SMTP,
    "smtp_connect_timeout": _NO_SMTP,
    "smtp_alert": _NO_SMTP,
    "smtp_alert_vrrp": _NO_SMTP,
    "smtp_alert_checker": _NO_SMTP,
    "no_email_faults": _NO_SMTP,
    "enable_snmp_vrrp": "vipd has no SNMP; it exports Prometheus metrics",
    "enable_snmp_rfc": "vipd has no SNMP; it exports Prometheus metrics",
    "enable_snmp_rfcv2": "vipd has no SNMP; it exports Prometheus metrics",
    "enable_snmp_rfcv3": "vipd has no SNMP; it exports Prometheus metrics",
    "enable_snmp_checker": "vipd has no SNMP; it exports Prometheus metrics",
    "enable_traps": "vipd has no SNMP; it exports Prometheus metrics",
    "snmp_socket": "vipd has no SNMP; it exports Prometheus metrics",
    "enable_dbus": "vipd has no D-Bus interface; use its control socket (vipctl)",
    "dbus_service_name": "vipd has no D-Bus interface; use its control socket (vipctl)",
}

_MASTER_STATE_NOTE: Final = (
    "vipd has no initial state: every instance starts as backup and the highest priority "
    "becomes master after Master_Down_Interval (keepalived 2.2 does the same below "
    "priority 255)."
)

# Instance settings converted after all lines are read (the last of each one counts).
_INSTANCE_SETTINGS: Final = frozenset(
    (
        "state",
        "interface",
        "virtual_router_id",
        "priority",
        "advert_int",
        "nopreempt",
        "preempt",
        "preempt_delay",
        "unicast_src_ip",
        "mcast_src_ip",
        "native_ipv6",
        "version",
        "use_vmac",
    )
)

_NO_ADDRESS_CHECK: Final = "vipd never discards an advert for its address list."

# Flags that ask for what vipd always does: converted, with a note in the output.
_INSTANCE_NOTES: Final = {
    "check_unicast_src": ("vipd always drops unicast adverts from addresses not in unicast_peers."),
    "vmac_xmit_base": "vipd always sends adverts from the parent interface.",
    "accept": "vipd always accepts traffic for its VIPs.",
}

# Top-level blocks that define what track_script / track_file entries name.
_DEFINITIONS: Final = {"vrrp_script": "script", "track_file": "file", "vrrp_track_file": "file"}
_TRACK_BLOCKS: Final = {
    "track_interface": "interface",
    "track_script": "script",
    "track_file": "file",
}
# keepalived's weight limits per entry kind, and vipd's tracker keys.
_WEIGHT_LIMIT: Final = {"interface": 253, "script": 253, "file": 254}
_VIPD_TRACK_KEYS: Final = {
    "interface": "track_interfaces",
    "script": "track_scripts",
    "file": "track_files",
}
_HOOK_KEYS: Final = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
_MAX_SCRIPT_SECONDS: Final = 4294  # keepalived: UINT_MAX / TIMER_HZ
_INT_MAX: Final = 2**31 - 1
_REVERSE_REASON: Final = (
    "vipd has no reversed weights (reverse{source}), which apply the weight in the opposite "
    "state (with weight 0: FAULT while the tracker is OK); this tracker is not converted"
)
_FILE_NOTE: Final = (
    "vipd reads each tracked file every second (keepalived: on change) and counts a missing "
    "file, or one that does not hold an integer, as failed (FAULT with weight 0, nothing "
    "added otherwise) where keepalived reads 0; keepalived also goes to FAULT when value * "
    "weight is below -253."
)

_VIP_VALUE_OPTIONS: Final = frozenset(
    ("brd", "dev", "scope", "label", "peer", "preferred_lft", "track_group")
)
_VIP_FLAG_OPTIONS: Final = frozenset(
    ("home", "-nodad", "mngtmpaddr", "noprefixroute", "autojoin", "no_track", "use_vmac")
)
_BOOLS: Final = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def _err(st: Statement, message: str) -> KeepalivedParseError:
    return KeepalivedParseError(st.file, st.line, f"{st.keyword}: {message}")


def _no_block(st: Statement) -> None:
    if st.block is not None:
        raise _err(st, "takes no { } block")


def _one(st: Statement) -> str:
    _no_block(st)
    if len(st.args) != 1:
        raise _err(st, f"takes exactly one value, got {len(st.args)}")
    return st.args[0]


def _none(st: Statement) -> None:
    _no_block(st)
    if st.args:
        raise _err(st, f"takes no value, got {' '.join(st.args)!r}")


def _int(st: Statement, lo: int, hi: int) -> int:
    value = _one(st)
    if not re.fullmatch(r"[+-]?\d+", value) or not lo <= int(value) <= hi:
        raise _err(st, f"must be an integer {lo}..{hi}, got {value!r}")
    return int(value)


def _number(st: Statement, lo: float, hi: float) -> float:
    value = _one(st)
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _err(st, f"must be a number {lo:g}..{hi:g}, got {value!r}")
    return number


def _bool(st: Statement) -> bool:
    _no_block(st)
    if not st.args:
        return True
    if len(st.args) == 1 and st.args[0].lower() in _BOOLS:
        return _BOOLS[st.args[0].lower()]
    raise _err(st, f"must be on|off|true|false|yes|no or nothing, got {' '.join(st.args)!r}")


def _block(st: Statement, args: int | None = 0) -> list[Statement]:
    if st.block is None:
        raise _err(st, "needs a { } block")
    if args is not None and len(st.args) != args:
        raise _err(st, f"takes {args} value(s) before '{{', got {len(st.args)}")
    return st.block


def _address(st: Statement, text: str) -> _IPAddress:
    try:
        return ip_address(text)
    except ValueError:
        raise _err(st, f"{text!r} is not an IP address") from None


def _header(st: Statement) -> str:
    return " ".join(_quote_word(w) for w in st.words) + " {"


def _where(st: Statement) -> str:
    return f"{st.file}:{st.line}"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _split_command(st: Statement, text: str) -> list[str]:
    """A script or notify string split into arguments as keepalived 2.2 splits it (its
    alloc_strvec_quoted_escaped): at unquoted blanks; single or double quotes group and are
    removed; backslash escapes apply inside and outside quotes."""
    words: list[str] = []
    buf: list[str] = []
    in_word = False
    quote: str | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            decoded, i = _escape(text, i + 1)
            buf.append(decoded)
            in_word = True
        elif quote is not None:
            if c == quote:
                quote = None
            else:
                buf.append(c)
            i += 1
        elif c in " \t\n\r\f\v":
            if in_word:
                words.append("".join(buf))
                buf.clear()
                in_word = False
            i += 1
        else:
            if c in "'\"":
                quote = c
            else:
                buf.append(c)
            in_word = True
            i += 1
    if quote is not None:
        raise _err(st, f"unterminated {quote} in the command {text!r}")
    if in_word:
        words.append("".join(buf))
    if not words or not words[0]:
        raise _err(st, "needs a command")
    return words


def _command(argv: Sequence[str]) -> str:
    """vipd's string form of a command: shlex.split() of it gives ``argv`` back."""
    return shlex.join(argv)


@dataclass
class _Globals:
    node_name: str | None = None
    node_name_from: Statement | None = None
    version: int | None = None
    version_from: Statement | None = None
    garp: dict[str, tuple[float, Statement]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    realtime: tuple[int, Statement] | None = None


@dataclass
class _Vip:
    st: Statement
    iface: _IPInterface
    label: str | None


@dataclass
class _Lines:
    """An instance's lines, sorted by _Converter._collect."""

    by_kw: dict[str, Statement] = field(default_factory=dict)
    vips: list[Statement] = field(default_factory=list)
    peers: list[tuple[Statement, _IPAddress]] = field(default_factory=list)
    peer_block: Statement | None = None
    garp: dict[str, tuple[float, Statement]] = field(default_factory=dict)


@dataclass
class _ScriptDef:
    """A vrrp_script block as keepalived 2.2 reads it, its values fitted to vipd's ranges."""

    st: Statement
    name: str
    argv: list[str] | None = None
    interval: int = 1  # keepalived's default, as vipd's
    timeout: int | None = None  # None: the interval, in keepalived as in vipd
    weight: int = 0
    reverse: bool = False
    rise: int = 1
    fall: int = 1
    used: bool = False


@dataclass
class _FileDef:
    """A track_file (vrrp_track_file) block."""

    st: Statement
    name: str
    path: str | None = None
    weight: int = 1  # keepalived's default, as vipd's
    reverse: bool = False
    used: bool = False


@dataclass
class _Track:
    """One entry of a track_interface/track_script/track_file block, resolved."""

    kind: str  # "interface", "script" or "file"
    key: str  # the interface, vrrp_script or track_file name
    weight: int
    reverse: bool
    st: Statement | None  # the entry; None for the instance's own interface
    definition: _ScriptDef | _FileDef | None = None
    group: _Group | None = None  # set on the copies a sync group gives its members
    dropped: bool = False


@dataclass
class _Hook:
    argv: list[str]
    st: Statement


@dataclass
class _Group:
    """A vrrp_sync_group."""

    st: Statement
    kname: str
    name: str = ""
    member_lines: list[Statement] = field(default_factory=list)
    members: list[_Instance] = field(default_factory=list)
    tracks: list[_Track] = field(default_factory=list)
    hooks: dict[str, _Hook] = field(default_factory=dict)
    tracking_weight: Statement | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Instance:
    st: Statement
    name: str
    notes: list[tuple[Statement, str]] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    interface: str = ""
    tracks: list[_Track] = field(default_factory=list)
    dont_track_primary: Statement | None = None
    hooks: dict[str, _Hook] = field(default_factory=dict)
    group: _Group | None = None
    # vipd tracker key -> (entry, comment) for the output
    trackers: dict[str, list[tuple[object, str | None]]] = field(default_factory=dict)

    def set(self, key: str, value: object, comment: str | None = None) -> None:
        self.values[key] = value
        if comment:
            self.comments[key] = comment


class _Converter:
    def __init__(self, source: str) -> None:
        self.source = source
        self.unconverted: list[Unconverted] = []
        self.globals = _Globals()
        self.instances: list[_Instance] = []
        self._names: set[str] = set()
        self._reported: set[int] = set()
        # Every vrrp_instance by its keepalived name (the first of a name), converted or not.
        self._by_kname: dict[str, _Instance] = {}
        # vrrp_script / track_file definitions read so far (keepalived resolves a reference
        # when it reads it), the first of each name; and every definition in the files.
        self._scripts: dict[str, _ScriptDef] = {}
        self._files: dict[str, _FileDef] = {}
        self._definitions: dict[tuple[str, str], Statement] = {}
        self._broken: dict[tuple[str, str], str] = {}
        self.groups: list[_Group] = []
        self._group_names: set[str] = set()

    def report(self, st: Statement, reason: str, text: str | None = None) -> None:
        self.unconverted.append(
            Unconverted(st.file, st.line, text if text is not None else st.render(), reason)
        )

    # ---- top level

    def run(self, statements: Sequence[Statement]) -> ImportResult:
        for st in statements:
            if st.keyword == "global_defs":
                self._global_defs(_block(st))
            elif st.keyword in _DEFINITIONS and st.args:
                self._definitions.setdefault((_DEFINITIONS[st.keyword], st.args[0]), st)
        found = False
        for st in statements:
            kw = st.keyword
            if kw == "global_defs":
                continue
            if kw == "vrrp_instance":
                found = True
                self._instance(st)
            elif kw == "vrrp_script":
                self._vrrp_script(st)
            elif kw in ("track_file", "vrrp_track_file"):
                self._track_file(st)
            elif kw == "vrrp_sync_group":
                self._sync_group(st)
            elif kw in _TOP_LEVEL_REASONS:
                self.report(st, _TOP_LEVEL_REASONS[kw])
            else:
                self.report(st, "unknown top-level keyword; not converted")
        self._finish_groups()
        for inst in self.instances:
            self._finish_tracking(inst)
        definitions: list[_ScriptDef | _FileDef] = [*self._scripts.values(), *self._files.values()]
        for definition in definitions:
            if not definition.used:
                self.report(
                    definition.st,
                    "tracked by no vrrp_instance or vrrp_sync_group: keepalived does not run "
                    "it either, so there is nothing to convert",
                    text=_header(definition.st),
                )
        self.unconverted.sort(key=lambda u: (u.file != self.source, u.file, u.line))
        if not found:
            raise KeepalivedImportError(
                self.source, None, "no vrrp_instance found: nothing to convert", self.unconverted
            )
        if not self.instances:
            raise KeepalivedImportError(
                self.source,
                None,
                "no vrrp_instance could be converted (see the lines not converted)",
                self.unconverted,
            )
        text = self._render()
        _validate(text, self.source, self.unconverted)
        return ImportResult(text, tuple(self.unconverted))

    # ---- global_defs

    def _global_defs(self, block: list[Statement]) -> None:
        g = self.globals
        for st in block:
            kw = st.keyword
            if kw == "router_id":
                value = _one(st)
                if 1 <= len(value) <= 64 and value.isprintable() and " " not in value:
                    g.node_name, g.node_name_from = value, st
                else:
                    self.report(st, "not a valid vipd node_name (1..64 printable, no spaces)")
            elif kw == "vrrp_version":
                g.version, g.version_from = _int(st, 2, 3), st
            elif kw in ("vrrp_garp_master_delay", "vrrp_garp_master_refresh"):
                g.garp[kw.removeprefix("vrrp_")] = (_number(st, 0, 86400), st)
            elif kw == "vrrp_garp_master_refresh_repeat":
                repeat = _int(st, 1, 255)
                if repeat != 1:
                    self.report(st, _GARP_REPEAT_REASON)
            elif kw == "vrrp_min_garp":
                if _bool(st):
                    g.garp["min_garp"] = (1.0, st)
            elif kw in ("vrrp_garp_interval", "vrrp_gna_interval"):
                if _number(st, 0, 1000) != 0:
                    self.report(st, _GARP_INTERVAL_REASON)
            elif kw in ("vrrp_mcast_group4", "vrrp_mcast_group6"):
                default = "224.0.0.18" if kw.endswith("4") else "ff02::12"
                if _address(st, _one(st)) != ip_address(default):
                    self.report(st, _INSTANCE_REASONS["mcast_dst_ip"])
            elif kw == "vrrp_check_unicast_src":
                _none(st)
                g.notes.append(
                    f"vrrp_check_unicast_src ({_where(st)}): vipd always drops unicast "
                    "adverts from addresses that are not in unicast_peers."
                )
            elif kw == "vrrp_skip_check_adv_addr":
                _bool(st)
                g.notes.append(f"vrrp_skip_check_adv_addr ({_where(st)}): {_NO_ADDRESS_CHECK}")
            elif kw in ("vrrp_lower_prio_no_advert", "vrrp_higher_prio_send_advert"):
                if _bool(st):
                    self.report(st, _ADVERT_REASONS[kw.removeprefix("vrrp_")])
            elif kw == "vrrp_down_timer_adverts":
                if _int(st, 1, 100) != 3:
                    self.report(st, "vipd uses the RFC's 3 advert intervals (plus skew)")
            elif kw == "vrrp_rt_priority":
                g.realtime = (_int(st, 1, 99), st)
            elif kw == "vrrp_rlimit_rttime":
                _int(st, 1, 2**31)
                g.notes.append(
                    f"vrrp_rlimit_rttime ({_where(st)}): vipd sets RLIMIT_RTTIME itself "
                    "(0.5 s soft, 2 s hard) and at the soft limit drops back to the fair "
                    "scheduler for a while instead of being killed."
                )
            elif kw in _GLOBAL_REASONS:
                self.report(st, _GLOBAL_REASONS[kw])
            else:
                self.report(st, "global_defs setting with no vipd equivalent")

    # ---- vrrp_instance

    def _instance(self, st: Statement) -> None:
        block = _block(st, args=None)
        if len(st.args) != 1:
            raise _err(st, f"takes one instance name before '{{', got {len(st.args)}")
        inst = _Instance(st, self._instance_name(st.args[0]))
        self._by_kname.setdefault(st.args[0], inst)
        if inst.name != st.args[0]:
            inst.notes.append(
                (
                    st,
                    f"name: {st.args[0]!r} is not a valid vipd instance name "
                    "(1..32 characters from [A-Za-z0-9_.-]).",
                )
            )
        lines = self._collect(inst, block)

        # Required: virtual_router_id (else keepalived refuses the instance), an interface
        # and at least one VIP (vipd needs both).
        vrid_st = lines.by_kw.get("virtual_router_id")
        if vrid_st is None:
            raise _err(st, "virtual_router_id is missing (keepalived requires it)")
        vrid = _int(vrid_st, 1, 255)
        iface_st = lines.by_kw.get("interface")
        interface = _one(iface_st) if iface_st is not None else None
        vips = [v for v in (self._vip(line, interface) for line in lines.vips) if v is not None]
        families = {v.iface.version for v in vips}
        if len(families) > 1:
            first6 = next(v for v in vips if v.iface.version == 6)
            raise KeepalivedParseError(
                first6.st.file,
                first6.st.line,
                "virtual_ipaddress mixes IPv4 and IPv6 (keepalived requires one family; "
                "use virtual_ipaddress_excluded for the other)",
            )
        if interface is None or not vips:
            why = "no interface (vipd needs one)" if interface is None else "no VIP"
            self.report(st, f"instance not converted: {why}", text=_header(st))
            return
        family = families.pop()

        inst.set("interface", interface)
        inst.interface = interface
        inst.set("vrid", vrid)
        self._priority_and_preemption(inst, lines.by_kw)
        self._advert_interval(inst, lines.by_kw.get("advert_int"))
        self._version(st, lines.by_kw.get("version"), family)
        native_st = lines.by_kw.get("native_ipv6")
        if native_st is not None:
            _none(native_st)
            if family == 4:
                self.report(native_st, "the VIPs are IPv4; vipd takes the family from the VIPs")
        inst.set("vips", [str(v.iface) for v in vips])
        self._unicast(inst, lines, family)
        self._labels(inst, interface, vips)
        vmac_st = lines.by_kw.get("use_vmac")
        if vmac_st is not None:
            _no_block(vmac_st)
            inst.set("use_vmac", True)
            if vmac_st.args:
                self.report(
                    vmac_st,
                    f"vipd names its macvlan vrrp{family}.{vrid} and always uses the "
                    "RFC 5798 virtual MAC; the name/MAC given here is not kept",
                )
        self._announce(inst, lines.garp)
        self.instances.append(inst)

    def _collect(self, inst: _Instance, block: list[Statement]) -> _Lines:
        """Sort an instance's lines: settings converted later are collected, the rest is
        checked and either noted (vipd behaves that way anyway) or reported."""
        lines = _Lines()
        tracked: dict[tuple[str, str], Statement] = {}
        for child in block:
            kw = child.keyword
            if kw in _TRACK_BLOCKS:
                inst.tracks += self._track_entries(child, tracked)
            elif kw in _HOOK_KEYS:
                self._hook(inst.hooks, child)
            elif kw == "dont_track_primary":
                _none(child)
                inst.dont_track_primary = child
            elif kw in _INSTANCE_SETTINGS:
                key = "unicast_src_ip" if kw == "mcast_src_ip" else kw
                earlier = lines.by_kw.get(key)
                if earlier is not None:
                    self.report(earlier, f"overridden by the later {kw} ({_where(child)})")
                lines.by_kw[key] = child
            elif kw == "virtual_ipaddress":
                lines.vips += _block(child)
            elif kw == "unicast_peer":
                lines.peer_block = child
                lines.peers += [(line, self._unicast_peer(line)) for line in _block(child)]
            elif kw in ("garp_master_delay", "garp_master_refresh"):
                lines.garp[kw] = (_number(child, 0, 86400), child)
            elif kw == "garp_master_repeat":
                _int(child, 1, 255)
                self.report(child, _GARP_REPEAT_REASON)
            elif kw == "garp_master_refresh_repeat":
                if _int(child, 1, 255) != 1:
                    self.report(child, _GARP_REPEAT_REASON)
            elif kw in _INSTANCE_NOTES:
                _none(child)
                inst.notes.append((child, f"{kw} ({_where(child)}): {_INSTANCE_NOTES[kw]}"))
            elif kw == "skip_check_adv_addr":
                _bool(child)
                inst.notes.append((child, f"{kw} ({_where(child)}): {_NO_ADDRESS_CHECK}"))
            elif kw == "unicast_ttl":
                if _int(child, 0, 255) != 255:
                    self.report(child, "vipd sends VRRP with TTL 255 and requires it (RFC 5798)")
            elif kw in _ADVERT_REASONS:
                if _bool(child):
                    self.report(child, _ADVERT_REASONS[kw])
            elif kw == "down_timer_adverts":
                if _int(child, 1, 100) != 3:
                    self.report(child, "vipd uses the RFC's 3 advert intervals (plus skew)")
            elif kw in _INSTANCE_REASONS:
                self.report(child, _INSTANCE_REASONS[kw])
            else:
                self.report(child, "unknown vrrp_instance keyword; not converted")
        return lines

    # ---- vrrp_script and track_file definitions

    def _define(self, kind: str, st: Statement) -> bool:
        """Whether the block ``st`` defines ``kind`` ``st.args[0]`` (keepalived uses the first
        definition of a name); a later one is reported."""
        what = "vrrp_script" if kind == "script" else "track_file"
        first = self._definitions.get((kind, st.args[0]))
        if first is not None and first is not st:
            self.report(
                st,
                f"a {what} named {st.args[0]} is defined before ({_where(first)}); keepalived "
                "uses that one and ignores this block",
                text=_header(st),
            )
            return False
        return True

    def _vrrp_script(self, st: Statement) -> None:
        block = _block(st, args=1)
        script = _ScriptDef(st, st.args[0])
        if not self._define("script", st):
            return
        for child in block:
            kw = child.keyword
            if kw == "script":
                _no_block(child)
                if not child.args:
                    raise _err(child, "needs a command")
                script.argv = _split_command(child, child.args[0])
                if len(child.args) > 1:
                    self.report(
                        child,
                        f"keepalived runs only {child.args[0]!r} and ignores "
                        f"{' '.join(child.args[1:])!r}; converted as keepalived runs it (to pass "
                        'arguments, quote them with the command: script "/path/check arg")',
                    )
            elif kw == "interval":
                script.interval = self._at_most(
                    child, _int(child, 1, _MAX_SCRIPT_SECONDS), 3600, "a check interval"
                )
            elif kw == "timeout":
                script.timeout = self._at_most(
                    child, _int(child, 1, _MAX_SCRIPT_SECONDS), 3600, "a check timeout"
                )
            elif kw == "weight":
                script.weight, reverse = self._weight(child, child.args, 253, "reverse")
                script.reverse = bool(reverse)
            elif kw in ("rise", "fall"):
                value = self._at_most(child, _int(child, 1, _INT_MAX), 1000, kw)
                setattr(script, kw, value)
            elif kw == "user":
                if not child.args:
                    raise _err(child, "needs a user name")
                self.report(child, _NO_SCRIPT_USER)
            elif kw == "init_fail":
                _none(child)
                self.report(
                    child,
                    "vipd has no initially failed state: it starts an instance once each of its "
                    "trackers has reported, and the first result decides (keepalived with "
                    "init_fail waits for `rise` successes)",
                )
            else:
                self.report(child, "unknown vrrp_script keyword; not converted")
        if script.argv is None:
            self._broken[("script", script.name)] = (
                f"vrrp_script {script.name} ({_where(st)}) has no script line, so keepalived "
                "drops it and ignores this entry"
            )
            self.report(st, "no script line: keepalived drops this vrrp_script", _header(st))
            return
        self._scripts[script.name] = script

    def _track_file(self, st: Statement) -> None:
        block = _block(st, args=1)
        tracked = _FileDef(st, st.args[0])
        if not self._define("file", st):
            return
        for child in block:
            kw = child.keyword
            if kw == "file":
                tracked.path = _one(child)
            elif kw == "weight":
                tracked.weight, reverse = self._weight(child, child.args, 254, "reverse")
                tracked.reverse = bool(reverse)
            elif kw == "init_file":
                _no_block(child)
                self.report(
                    child,
                    "vipd does not create or initialise tracked files: create the file before "
                    "starting vipd (e.g. with systemd-tmpfiles); vipd counts a missing file as "
                    "failed",
                )
            else:
                self.report(child, f"unknown {st.keyword} keyword; not converted")
        problem = None
        if tracked.path is None:
            problem = "has no file line, so keepalived drops it"
        elif not tracked.path.startswith("/"):
            problem = f"tracks the relative path {tracked.path!r}; vipd needs an absolute path"
        if problem is not None:
            self._broken[("file", tracked.name)] = (
                f"track_file {tracked.name} ({_where(st)}) {problem}"
            )
            self.report(st, f"not converted: this track_file {problem}", _header(st))
            return
        self._files[tracked.name] = tracked

    def _at_most(self, st: Statement, value: int, limit: int, what: str) -> int:
        if value <= limit:
            return value
        self.report(st, f"vipd allows {what} up to {limit}; using {limit}")
        return limit

    def _weight(
        self, st: Statement, words: list[str], limit: int, *flags: str
    ) -> tuple[int, bool | None]:
        """``N [reverse]`` after a weight keyword: the weight, and True/False if a reverse
        flag was given (``flags``: the ones keepalived accepts here), else None."""
        what = st.render(60)
        if not 1 <= len(words) <= 2:
            raise KeepalivedParseError(
                st.file, st.line, f"{what}: expected a weight and at most {'|'.join(flags)}"
            )
        if not re.fullmatch(r"[+-]?\d+", words[0]) or not -limit <= int(words[0]) <= limit:
            raise KeepalivedParseError(
                st.file, st.line, f"{what}: weight must be an integer -{limit}..{limit}"
            )
        reverse: bool | None = None
        if len(words) == 2:
            if words[1] not in flags:
                raise KeepalivedParseError(
                    st.file, st.line, f"{what}: unknown option {words[1]!r} after the weight"
                )
            reverse = words[1] == "reverse"
        return int(words[0]), reverse

    # ---- track_* blocks

    def _track_entries(
        self, block_st: Statement, seen: dict[tuple[str, str], Statement]
    ) -> list[_Track]:
        """The entries of a track_interface/track_script/track_file block of an instance or
        sync group; ``seen`` holds the entries of earlier blocks (keepalived keeps the first
        entry for a name)."""
        kind = _TRACK_BLOCKS[block_st.keyword]
        tracks: list[_Track] = []
        for entry in _block(block_st):
            _no_block(entry)
            key = entry.keyword
            weight: int | None = None
            reverse: bool | None = None
            if entry.args:
                if entry.args[0] != "weight" or len(entry.args) == 1:
                    self.report(
                        entry,
                        f"keepalived expects 'weight N [reverse]' after {key} and ignores this "
                        "entry",
                    )
                    continue
                # keepalived 2.2 knows "reverse" and "noreverse" after the weight, and ignores
                # any other word there (the documented "no_reverse" among them).
                words = entry.args[1:3]
                if len(entry.args) == 3 and entry.args[2] not in ("reverse", "noreverse"):
                    words = entry.args[1:2]
                elif len(entry.args) > 3:
                    raise KeepalivedParseError(
                        entry.file,
                        entry.line,
                        f"{block_st.keyword}: {entry.render(60)}: expected "
                        f"'{key} [weight N [reverse]]'",
                    )
                flags = ("reverse", "noreverse")
                weight, reverse = self._weight(entry, words, _WEIGHT_LIMIT[kind], *flags)
            earlier = seen.get((kind, key))
            if earlier is not None:
                self.report(
                    entry,
                    f"{key} is already tracked ({_where(earlier)}); keepalived ignores this entry",
                )
                continue
            seen[(kind, key)] = entry
            definition: _ScriptDef | _FileDef | None = None
            if kind == "interface":
                tracks.append(_Track(kind, key, weight or 0, bool(reverse), entry))
                continue
            definitions: dict[str, _ScriptDef] | dict[str, _FileDef]
            definitions = self._scripts if kind == "script" else self._files
            definition = definitions.get(key)
            if definition is None:
                self.report(entry, self._missing(kind, key))
                continue
            definition.used = True
            if weight is None:
                weight = definition.weight
            if reverse is None:
                reverse = definition.reverse
            tracks.append(_Track(kind, key, weight, reverse, entry, definition))
        return tracks

    def _missing(self, kind: str, key: str) -> str:
        what = "vrrp_script" if kind == "script" else "track_file"
        broken = self._broken.get((kind, key))
        if broken is not None:
            return broken
        later = self._definitions.get((kind, key))
        if later is not None:
            return (
                f"{what} {key} is defined only after this line ({_where(later)}): keepalived "
                "does not find it and ignores this entry"
            )
        return f"no {what} named {key}: keepalived ignores this entry"

    def _hook(self, hooks: dict[str, _Hook], st: Statement) -> None:
        """A notify* line: ``notify_master "/path/script args" [user [group]]``."""
        _no_block(st)
        if not st.args:
            raise _err(st, "needs a command")
        argv = _split_command(st, st.args[0])
        earlier = hooks.get(st.keyword)
        if earlier is not None:
            self.report(
                st,
                f"keepalived runs the first {st.keyword} ({_where(earlier.st)}) and ignores "
                "this one",
            )
            return
        hooks[st.keyword] = _Hook(argv, st)
        if len(st.args) > 1:
            self.report(
                st,
                f"converted without {' '.join(st.args[1:])!r}, the user (and group) keepalived "
                "runs it as: vipd runs hooks as its own user (to pass arguments, quote them "
                "with the command)",
            )

    # ---- vrrp_sync_group

    def _sync_group(self, st: Statement) -> None:
        block = _block(st, args=None)
        if len(st.args) != 1:
            raise _err(st, f"takes one group name before '{{', got {len(st.args)}")
        kname = st.args[0]
        earlier = next((g for g in self.groups if g.kname == kname), None)
        if earlier is not None:
            self.report(
                st,
                f"a vrrp_sync_group {kname} is defined before ({_where(earlier.st)}); "
                "keepalived ignores this one",
                text=_header(st),
            )
            return
        group = _Group(st, kname)
        members: Statement | None = None
        seen: dict[tuple[str, str], Statement] = {}
        for child in block:
            kw = child.keyword
            if kw == "group":
                if members is not None:
                    self.report(
                        child,
                        f"keepalived uses the first group block ({_where(members)}) and "
                        "ignores this one",
                    )
                    continue
                members = child
                group.member_lines = _block(child)
            elif kw in _TRACK_BLOCKS:
                group.tracks += self._track_entries(child, seen)
            elif kw in _HOOK_KEYS:
                self._hook(group.hooks, child)
            elif kw in ("sync_group_tracking_weight", "global_tracking"):
                _none(child)
                group.tracking_weight = child
                why = " (keepalived 2 reads the deprecated global_tracking so)"
                group.notes.append(
                    f"{kw} ({_where(child)}): the members' trackers keep their weights"
                    f"{why if kw == 'global_tracking' else ''}."
                )
            elif kw == "smtp_alert":
                if _bool(child):
                    self.report(child, _NO_SMTP)
            elif kw == "track_process":
                self.report(child, _NO_PROCESS_TRACKING)
            elif kw == "track_bfd":
                self.report(child, _NO_BFD)
            elif kw == "notify_deleted":
                self.report(child, _NOTIFY_DELETED)
            elif kw == "notify_priority_changes":
                self.report(child, _NOTIFY_PRIORITY)
            else:
                self.report(child, "unknown vrrp_sync_group keyword; not converted")
        if members is None:
            self.report(st, "no group { } block: keepalived ignores this sync group", _header(st))
            return
        self.groups.append(group)

    def _finish_groups(self) -> None:
        """Resolve the members of every sync group (as keepalived does after reading all
        instances) and apply keepalived's rules for their trackers."""
        converted = {id(inst) for inst in self.instances}
        kept: list[_Group] = []
        for group in self.groups:
            for line in group.member_lines:
                _no_block(line)
                for word in line.words:
                    inst = self._by_kname.get(word)
                    if inst is None:
                        self.report(line, f"no vrrp_instance {word}: keepalived ignores it here")
                    elif id(inst) not in converted:
                        self.report(line, f"vrrp_instance {word} is not converted (see above)")
                    elif inst.group is not None:
                        self.report(
                            line,
                            f"{word} is already in vrrp_sync_group {inst.group.kname} "
                            f"({_where(inst.group.st)}); keepalived ignores it here",
                        )
                    else:
                        inst.group = group
                        group.members.append(inst)
            if not group.members:
                self.report(
                    group.st, "no converted member: sync group not converted", _header(group.st)
                )
                continue
            group.name = self._group_name(group.kname)
            if group.name != group.kname:
                group.notes.append(
                    f"name: {group.kname!r} is not a valid vipd group name (1..32 characters "
                    "from [A-Za-z0-9_.-])."
                )
            if "notify" in group.hooks:
                passed = "" if group.name == group.kname else f" (keepalived passed {group.kname})"
                group.notes.append(f"notify gets GROUP {group.name} <STATE> 0{passed}.")
            owner = next((m for m in group.members if m.values["priority"] == 255), None)
            for track in group.tracks:
                assert track.st is not None
                if owner is not None and track.weight:
                    group.notes.append(
                        f"{track.kind} {track.key} ({_where(track.st)}): keepalived clears its "
                        f"weight {track.weight} because member {owner.st.args[0]} has priority "
                        "255."
                    )
                    track.weight = 0
                if track.reverse:
                    self.report(track.st, _reverse_reason(track))
                    track.dropped = True
            if any(not t.dropped for t in group.tracks):
                group.notes.append(
                    "Its trackers are converted as trackers of each member, as keepalived "
                    "applies them to every member."
                )
            kept.append(group)
        self.groups = kept

    def _group_name(self, name: str) -> str:
        clean = name
        if not _NAME_RE.fullmatch(clean):
            clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:32] or "group"
        base, n = clean, 2
        while clean in self._group_names:
            suffix = f"-{n}"
            clean = base[: 32 - len(suffix)] + suffix
            n += 1
        self._group_names.add(clean)
        return clean

    # ---- an instance's trackers and hooks

    def _finish_tracking(self, inst: _Instance) -> None:
        """The instance's trackers as keepalived 2.2 runs them: its own interface unless
        dont_track_primary, its track_* entries (weights dropped for an address owner and in a
        sync group, as keepalived does), and its sync group's trackers."""
        group = inst.group
        owner = inst.values["priority"] == 255
        final: dict[tuple[str, str], _Track] = {}
        if inst.dont_track_primary is None:
            final[("interface", inst.interface)] = _Track(
                "interface", inst.interface, 0, False, None
            )
        else:
            inst.notes.append(
                (
                    inst.dont_track_primary,
                    f"dont_track_primary ({_where(inst.dont_track_primary)}): "
                    f"{inst.interface} is not tracked.",
                )
            )
        for track in inst.tracks:
            assert track.st is not None
            if track.kind == "interface" and track.key == inst.interface:
                self.report(
                    track.st,
                    "keepalived ignores a track_interface entry for the instance's own "
                    "interface: it tracks that one unweighted (FAULT while it is down) unless "
                    "dont_track_primary is set",
                )
                continue
            kept = self._weight_rules(inst, track, owner) if track.weight else track
            if kept is not None:
                final[(track.kind, track.key)] = kept
        if group is not None:
            for gtrack in group.tracks:
                assert gtrack.st is not None
                copy = replace(gtrack, group=group)
                existing = final.get((gtrack.kind, gtrack.key))
                if existing is None:
                    if not gtrack.dropped:
                        final[(gtrack.kind, gtrack.key)] = copy
                elif existing.weight:
                    assert existing.st is not None
                    self.report(
                        existing.st,
                        f"vrrp_sync_group {group.kname} tracks {gtrack.key} too "
                        f"({_where(gtrack.st)}); keepalived uses the group's weight "
                        f"{gtrack.weight}{' reverse' if gtrack.reverse else ''} instead of "
                        "this entry's",
                    )
                    del final[(gtrack.kind, gtrack.key)]
                    if not gtrack.dropped:
                        final[(gtrack.kind, gtrack.key)] = copy
                else:
                    where = "its own" if existing.st is None else f"its own ({_where(existing.st)})"
                    inst.notes.append(
                        (
                            existing.st or inst.st,
                            f"vrrp_sync_group {group.kname} tracks {gtrack.key} "
                            f"({_where(gtrack.st)}) with weight {gtrack.weight}; keepalived "
                            f"keeps {where} unweighted tracker instead.",
                        )
                    )
        names: set[str] = set()
        for track in final.values():
            if track.reverse:
                assert track.st is not None
                self.report(track.st, _reverse_reason(track))
                continue
            key = _VIPD_TRACK_KEYS[track.kind]
            inst.trackers.setdefault(key, []).append(self._tracker_entry(track, names))
        if inst.name != inst.st.args[0] and "notify" in inst.hooks:
            inst.notes.append(
                (
                    inst.hooks["notify"].st,
                    f"notify gets INSTANCE {inst.name} <STATE> <PRIORITY>; keepalived passed "
                    f"the name {inst.st.args[0]}.",
                )
            )

    def _weight_rules(self, inst: _Instance, track: _Track, owner: bool) -> _Track | None:
        """keepalived's rules for a weighted tracker of an address owner or of a sync group
        member (without sync_group_tracking_weight): what it keeps (None: nothing)."""
        assert track.st is not None
        group = inst.group
        if owner:
            whose = "an address owner (priority 255)"
            why = f"keepalived ignores the weighted trackers of {whose}: its priority stays 255"
        elif group is not None and group.tracking_weight is None:
            whose = f"a member of vrrp_sync_group {group.kname} without sync_group_tracking_weight"
            why = f"keepalived ignores the weighted track scripts and files of {whose}"
        else:
            return track
        if track.kind == "interface":
            if owner:
                self.report(track.st, why)
                return None
            inst.notes.append(
                (
                    track.st,
                    f"track_interface {track.key} ({_where(track.st)}): keepalived 2.2 logs that "
                    f"it ignores the weight of {whose}, yet applies it; so does vipd.",
                )
            )
            return track
        if track.kind == "file" and track.weight == 1:
            inst.notes.append(
                (
                    track.st,
                    f"track_file {track.key} ({_where(track.st)}): keepalived makes the default "
                    f"weight 1 of {whose} weight 0: FAULT while the file holds a value other "
                    "than 0.",
                )
            )
            return replace(track, weight=0)
        self.report(track.st, why)
        return None

    def _tracker_entry(self, track: _Track, names: set[str]) -> tuple[object, str | None]:
        """The vipd entry for a tracker, with a comment saying where it comes from."""
        if track.group is not None:
            assert track.st is not None
            origin = f"vrrp_sync_group {track.group.kname} ({_where(track.st)})"
        elif track.st is None:
            origin = "own interface: keepalived tracks it unless dont_track_primary"
        else:
            origin = f"track_{track.kind} ({_where(track.st)})"
        if track.kind == "interface":
            names.add(track.key)
            if track.weight == 0:
                return track.key, origin
            return {"name": track.key, "weight": track.weight}, origin
        name = _tracker_name(track.key)
        base, n = name, 1
        while name in names:
            suffix = f"-{track.kind}" if n == 1 else f"-{track.kind}-{n}"
            name = base[: 128 - len(suffix)] + suffix
            n += 1
        names.add(name)
        entry: dict[str, object] = {"name": name}
        definition = track.definition
        if isinstance(definition, _ScriptDef):
            assert definition.argv is not None
            entry["command"] = _command(definition.argv)
            if definition.interval != 1:
                entry["interval"] = definition.interval
            if definition.timeout is not None:
                entry["timeout"] = definition.timeout
            if definition.rise != 1:
                entry["rise"] = definition.rise
            if definition.fall != 1:
                entry["fall"] = definition.fall
            if track.weight:
                entry["weight"] = track.weight
            origin = f"vrrp_script {track.key} ({_where(definition.st)}), {origin}"
        else:
            assert isinstance(definition, _FileDef) and definition.path is not None
            entry["path"] = definition.path
            if track.weight != 1:
                entry["weight"] = track.weight
            origin = f"{definition.st.keyword} {track.key} ({_where(definition.st)}), {origin}"
        return entry, origin

    def _priority_and_preemption(self, inst: _Instance, by_kw: dict[str, Statement]) -> None:
        state_st = by_kw.get("state")
        state = None
        if state_st is not None:
            state = _one(state_st)
            if state not in ("MASTER", "BACKUP"):
                raise _err(state_st, f"must be MASTER or BACKUP, got {state!r}")
        prio_st = by_kw.get("priority")
        if prio_st is not None:
            priority = _int(prio_st, 1, 255)
            inst.set("priority", priority)
        elif state == "MASTER":
            priority = 255
            inst.set("priority", 255, "keepalived's default for state MASTER without a priority")
        else:
            priority = 100
            inst.set("priority", 100)
        if state_st is not None:
            if state == "BACKUP":
                note = "vipd has no initial state; every instance starts as backup."
            elif priority == 255:
                note = "priority 255 (address owner) becomes master at once, as in keepalived."
            else:
                note = _MASTER_STATE_NOTE
            inst.notes.append((state_st, f"state {state} ({_where(state_st)}): {note}"))

        nopreempt_st = by_kw.get("nopreempt")
        preempt_st = by_kw.get("preempt")
        for flag in (nopreempt_st, preempt_st):
            if flag is not None:
                _none(flag)
        if preempt_st is not None and nopreempt_st is not None:
            # The later one wins, as in keepalived.
            first, last = sorted((preempt_st, nopreempt_st), key=lambda s: (s.file, s.line))
            self.report(first, f"overridden by the later {last.keyword} ({_where(last)})")
            if last is preempt_st:
                nopreempt_st = None
            else:
                preempt_st = None
        if nopreempt_st is not None:
            if state == "MASTER" or priority == 255:
                why = "state MASTER" if state == "MASTER" else "priority 255"
                self.report(
                    nopreempt_st,
                    f"keepalived ignores nopreempt with {why}, so vipd keeps preempting; "
                    "use state BACKUP (and a priority below 255) to get nopreempt",
                )
            else:
                inst.set("preempt", False, f"nopreempt ({_where(nopreempt_st)})")
        elif preempt_st is not None:
            inst.set("preempt", True)
        delay_st = by_kw.get("preempt_delay")
        if delay_st is not None:
            delay = _number(delay_st, 0, 1000)
            if state == "MASTER":
                self.report(
                    delay_st,
                    "keepalived ignores preempt_delay with state MASTER, so vipd preempts "
                    "without delay; use state BACKUP to keep the delay",
                )
            else:
                inst.set("preempt_delay", delay)

    def _advert_interval(self, inst: _Instance, st: Statement | None) -> None:
        if st is None:
            inst.set("advert_interval", 1.0)
            return
        raw = _number(st, 0.001, 255)
        # keepalived rounds VRRPv3 intervals to centiseconds and caps them at 40.95 s.
        advert = min(4095, max(1, math.floor(raw * 100 + 0.5))) / 100
        comment = None
        if advert != raw:
            comment = (
                f"advert_int {st.args[0]}: VRRPv3 carries centiseconds up to 40.95 s; "
                "keepalived rounds the same way"
            )
        inst.set("advert_interval", advert, comment)

    def _unicast(self, inst: _Instance, lines: _Lines, family: int) -> None:
        peers: list[str] = []
        for line, peer in lines.peers:
            if peer.version != family:
                self.report(line, f"an IPv{peer.version} peer for IPv{family} VIPs; left out")
            elif str(peer) not in peers:
                peers.append(str(peer))
        if peers:
            inst.set("unicast_peers", peers)
        elif lines.peer_block is not None and not lines.peers:
            self.report(
                lines.peer_block,
                "no peers: keepalived falls back to multicast here, and so does vipd",
            )
        src_st = lines.by_kw.get("unicast_src_ip")
        if src_st is None:
            return
        src = _address(src_st, _one(src_st))
        if not peers:
            self.report(
                src_st,
                "vipd sends multicast adverts from the interface's primary address "
                "(IPv6: its link-local address); a source is only set with unicast peers",
            )
        elif src.version != family:
            self.report(src_st, f"an IPv{src.version} source for IPv{family} VIPs")
        else:
            inst.set("unicast_source", str(src))

    def _instance_name(self, name: str) -> str:
        clean = name
        if not _NAME_RE.fullmatch(clean):
            clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:32] or "instance"
        base, n = clean, 2
        while clean in self._names:
            suffix = f"-{n}"
            clean = base[: 32 - len(suffix)] + suffix
            n += 1
        self._names.add(clean)
        return clean

    def _unicast_peer(self, st: Statement) -> _IPAddress:
        def fail(message: str) -> KeepalivedParseError:
            return KeepalivedParseError(st.file, st.line, f"unicast_peer: {message}")

        if st.block is not None:
            raise fail("a peer takes no { } block")
        try:
            peer = ip_address(st.keyword)
        except ValueError:
            raise fail(f"{st.keyword!r} is not an IP address") from None
        rest = st.args
        i = 0
        while i < len(rest):
            if rest[i] in ("min_ttl", "max_ttl") and i + 1 < len(rest):
                if not rest[i + 1].isdigit() or int(rest[i + 1]) > 255:
                    raise fail(f"{rest[i]} must be 0..255, got {rest[i + 1]!r}")
                i += 2
            else:
                raise fail(f"unknown option {rest[i]!r}")
        if rest:
            self.report(
                st,
                "vipd requires TTL 255 on every advert (RFC 5798); min_ttl/max_ttl are not "
                "supported",
            )
        return peer

    def _vip(self, st: Statement, interface: str | None) -> _Vip | None:
        _no_block(st)
        try:
            iface = ip_interface(st.keyword)
        except ValueError:
            raise KeepalivedParseError(
                st.file, st.line, f"virtual_ipaddress: {st.keyword!r} is not an address[/prefix]"
            ) from None
        options: dict[str, str] = {}
        flags: list[str] = []
        rest = st.args
        i = 0
        while i < len(rest):
            word = rest[i]
            if word in _VIP_VALUE_OPTIONS:
                if i + 1 >= len(rest):
                    raise KeepalivedParseError(
                        st.file, st.line, f"virtual_ipaddress: {word} needs a value"
                    )
                options[word] = rest[i + 1]
                i += 2
            elif word in _VIP_FLAG_OPTIONS:
                flags.append(word)
                i += 1
            else:
                raise KeepalivedParseError(
                    st.file, st.line, f"virtual_ipaddress: unknown option {word!r}"
                )
        problems: list[str] = []
        dev = options.pop("dev", None)
        if dev is not None and interface is not None and dev != interface:
            self.report(
                st,
                f"VIP left out: vipd puts every VIP on the instance's interface ({interface}), "
                f"not on {dev}; keepalived peers discard adverts whose address list differs "
                "from theirs, so a mixed pair needs this VIP gone from keepalived too",
            )
            return None
        brd = options.pop("brd", None)
        if brd is not None and brd != "+":
            standard = iface.version == 4 and brd == str(iface.network.broadcast_address)
            if not standard:
                problems.append(f"brd {brd} (vipd sets the standard broadcast address)")
        scope = options.pop("scope", None)
        if scope is not None and scope != "global":
            problems.append(f"scope {scope} (vipd adds VIPs with scope global)")
        # keepalived adds IPv6 /128 VIPs deprecated (preferred_lft 0) unless told "forever",
        # so they are never picked as source addresses; vipd's VIPs are always preferred.
        lifetime = options.pop("preferred_lft", None)
        if lifetime is None and iface.version == 6 and iface.network.prefixlen == 128:
            problems.append(
                "keepalived's deprecated /128 (preferred_lft 0 by default): vipd adds every "
                "VIP preferred, so it may become a source address"
            )
        elif lifetime not in (None, "forever"):
            problems.append(f"preferred_lft {lifetime} (vipd adds every VIP preferred, forever)")
        label = options.pop("label", None)
        if label is not None and iface.version == 6:
            problems.append("label (labels exist for IPv4 only)")
            label = None
        for key, value in options.items():
            problems.append(f"{key} {value} (no vipd setting)")
        for flag in flags:
            if flag != "-nodad":  # vipd always adds VIPs without DAD
                problems.append(f"{flag} (no vipd setting)")
        if problems:
            self.report(st, "VIP converted without " + "; ".join(problems))
        return _Vip(st, iface, label)

    def _labels(self, inst: _Instance, interface: str, vips: list[_Vip]) -> None:
        labels = {v.label for v in vips}
        if labels == {None}:
            return
        label = next(iter(labels)) if len(labels) == 1 else None
        if (
            label is not None
            and (label == interface or label.startswith(f"{interface}:"))
            and len(label) < 16
        ):
            inst.set("vip_label", label)
            return
        if label is not None:
            why = f'vipd labels must be "{interface}" or "{interface}:..." (at most 15 characters)'
        else:
            why = "vipd has one vip_label for all VIPs of an instance; these VIPs differ"
        for vip in vips:
            if vip.label is not None:
                self.report(vip.st, f"label {vip.label} not converted: {why}")

    def _version(self, inst_st: Statement, version_st: Statement | None, family: int) -> None:
        g = self.globals
        where: Statement | None = version_st
        if version_st is not None:
            version = _int(version_st, 2, 3)
        else:
            version, where = (g.version or 2), g.version_from
        if version == 3 or family == 6:
            return
        reason = (
            "keepalived runs VRRPv2 here; vipd speaks VRRPv3 only, so this keepalived node "
            "and a vipd node would not see each other: set vrrp_version 3 on every "
            "keepalived node before mixing"
        )
        if where is None:
            self.report(
                inst_st,
                "no vrrp_version (keepalived's default is 2): " + reason,
                text=_header(inst_st),
            )
        elif id(where) not in self._reported:  # a global line: report it once
            self._reported.add(id(where))
            self.report(where, reason)

    def _announce(self, inst: _Instance, garp: dict[str, tuple[float, Statement]]) -> None:
        g = self.globals.garp
        delay = garp.get("garp_master_delay") or g.get("garp_master_delay")
        refresh = garp.get("garp_master_refresh") or g.get("garp_master_refresh")
        if delay is None and "min_garp" in g:
            delay = (0.0, g["min_garp"][1])
        if delay is not None:
            seconds, st = delay
            source = f"{st.keyword} {st.args[0] if st.args else ''}".strip()
            if seconds == 0:
                inst.set("announce_count", 1, f"{source} ({_where(st)}): no second burst")
            else:
                spacing = min(60.0, max(1.1, seconds))
                inst.set("announce_count", 2, f"{source} ({_where(st)}): a second burst")
                inst.set("announce_spacing", spacing, f"{source}: {_seconds(seconds)} later")
                if spacing != seconds:
                    self.report(
                        st,
                        f"vipd spaces announcements 1.1..60 s apart (Linux ignores a second "
                        f"update within 1 s); using {spacing:g}",
                    )
        if refresh is not None:
            seconds, st = refresh
            source = f"{st.keyword} {st.args[0]}"
            if seconds == 0:
                inst.set(
                    "announce_refresh",
                    0.0,
                    f"{source} ({_where(st)}): off, as in keepalived; vipd's default is 5 s",
                )
            else:
                value = min(3600.0, max(1.1, seconds))
                inst.set("announce_refresh", value, f"{source} ({_where(st)})")
                if value != seconds:
                    self.report(st, f"vipd refreshes every 1.1..3600 s; using {value:g}")

    # ---- output

    def _render(self) -> str:
        out = [
            "# vipd configuration converted from keepalived by `vipd import-keepalived`",
            f"# from {_comment(self.source)}. Check it with `vipd check -c FILE`.",
        ]
        if self.unconverted:
            out.append("#")
            out.append(f"# {len(self.unconverted)} keepalived line(s) NOT converted:")
            for u in self.unconverted:
                out += _comment_lines(str(u), first="#   ", rest="#       ")
        g = self.globals
        out += ["", "[daemon]"]
        for note in g.notes:
            out += _comment_lines(note)
        if g.node_name is not None:
            assert g.node_name_from is not None
            out += _key_lines("node_name", g.node_name, f"router_id ({_where(g.node_name_from)})")
        else:
            out.append("# no router_id: node_name defaults to the host name (as router_id does)")
        if g.realtime is not None:
            priority, st = g.realtime
            out += _key_lines("realtime_priority", priority, f"vrrp_rt_priority ({_where(st)})")
        for inst in self.instances:
            out += ["", "[[instance]]"]
            out += _comment_lines(f"vrrp_instance {inst.st.args[0]} ({_where(inst.st)})")
            for _, note in sorted(inst.notes, key=lambda n: (n[0].file, n[0].line)):
                out += _comment_lines(note)
            out.append(f"name = {_toml(inst.name)}")
            for key in _KEY_ORDER:
                if key in inst.values:
                    out += _key_lines(key, inst.values[key], inst.comments.get(key))
            for key in _VIPD_TRACK_KEYS.values():
                if key in inst.trackers:
                    if key == "track_files":
                        out += _comment_lines(_FILE_NOTE)
                    out += _array_lines(key, inst.trackers[key])
            out += _hook_lines(inst.hooks)
        for group in self.groups:
            out += ["", "[[group]]"]
            out += _comment_lines(f"vrrp_sync_group {group.kname} ({_where(group.st)})")
            for note in group.notes:
                out += _comment_lines(note)
            out.append(f"name = {_toml(group.name)}")
            out += _key_lines("instances", [m.name for m in group.members], None)
            out += _hook_lines(group.hooks)
        return "\n".join(out) + "\n"


def _reverse_reason(track: _Track) -> str:
    source = ""
    definition = track.definition
    if definition is not None and track.st is not None and len(track.st.args) < 3:
        source = f", from {_header(definition.st)[:-2]} ({_where(definition.st)})"
    return _REVERSE_REASON.format(source=source)


def _tracker_name(name: str) -> str:
    """A keepalived script or file name as a vipd tracker name (printable, no blanks)."""
    clean = "".join(c if c.isprintable() and not c.isspace() else "_" for c in name)
    return clean[:128] or "tracker"


def _comment_lines(text: str, first: str = "# ", rest: str = "# ") -> list[str]:
    """``text`` as TOML comment lines of at most 100 characters."""
    lines = textwrap.wrap(
        _comment(text),
        width=_WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [first.rstrip()]


def _key_lines(key: str, value: object, comment: str | None) -> list[str]:
    """``key = value``, an array of several items one per line; the comment goes at the
    end of the line if it fits, else above the key."""
    if isinstance(value, list) and len(value) > 1:
        lines = [f"{key} = [", *(f"    {_toml(v)}," for v in value), "]"]
    else:
        lines = [f"{key} = {_toml(value)}"]
    if comment is None:
        return lines
    if len(lines[-1]) + 4 + len(_comment(comment)) <= _WIDTH:
        lines[-1] += f"  # {_comment(comment)}"
        return lines
    return _comment_lines(comment) + lines


def _array_lines(key: str, items: list[tuple[object, str | None]]) -> list[str]:
    """``key = [...]`` with one item per line, each with its comment (above it if the line
    would get too long)."""
    if len(items) == 1:
        value, comment = items[0]
        line = f"{key} = [{_toml(value)}]"
        if comment is None:
            return [line]
        if len(line) + 4 + len(_comment(comment)) <= _WIDTH:
            return [f"{line}  # {_comment(comment)}"]
    lines = [f"{key} = ["]
    for value, comment in items:
        item = f"    {_toml(value)},"
        if comment is not None:
            if len(item) + 4 + len(_comment(comment)) <= _WIDTH:
                item += f"  # {_comment(comment)}"
            else:
                lines += _comment_lines(comment, first="    # ", rest="    # ")
        lines.append(item)
    return [*lines, "]"]


def _hook_lines(hooks: dict[str, _Hook]) -> list[str]:
    lines: list[str] = []
    for key in _HOOK_KEYS:
        hook = hooks.get(key)
        if hook is not None:
            lines += _key_lines(key, _command(hook.argv), None)
    return lines


_WIDTH: Final = 100


_KEY_ORDER: Final = (
    "interface",
    "vrid",
    "priority",
    "advert_interval",
    "vips",
    "preempt",
    "preempt_delay",
    "unicast_peers",
    "unicast_source",
    "vip_label",
    "use_vmac",
    "announce_count",
    "announce_spacing",
    "announce_refresh",
)


def _comment(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = []
        for c in value:
            if c in '"\\':
                escaped.append("\\" + c)
            elif not c.isprintable():
                escaped.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
            else:
                escaped.append(c)
        return '"' + "".join(escaped) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _validate(text: str, source: str, unconverted: Sequence[Unconverted]) -> None:
    from vipd.config import ConfigError, parse_config

    try:
        parse_config(text, f"<converted from {source}>")
    except ConfigError as exc:
        raise KeepalivedImportError(
            source,
            None,
            f"the converted configuration is not valid for vipd:\n{exc}",
            unconverted,
        ) from None


def convert(statements: Sequence[Statement], source: str) -> ImportResult:
    """Convert parsed statements; ``source`` names the main file in the output."""
    return _Converter(source).run(statements)


def import_keepalived(path: str | os.PathLike[str]) -> ImportResult:
    """Parse and convert a keepalived configuration file (following its includes)."""
    return convert(parse_keepalived(path), os.fspath(path))


def import_keepalived_text(text: str, source: str = "<string>") -> ImportResult:
    """Parse and convert keepalived configuration text."""
    return convert(parse_keepalived_text(text, source), source)


# --------------------------------------------------------------------------- CLI


def cli_import(
    path: str,
    output: str | None = None,
    write: Callable[[str], object] | None = None,
    warn: Callable[[str], object] | None = None,
) -> int:
    """``vipd import-keepalived FILE [-o OUT]``: the TOML to stdout (or OUT), the lines not
    converted to stderr. Exit 0 if everything was converted, 1 if some lines were not,
    2 if the file cannot be read or parsed (or nothing in it converts)."""
    import sys

    out = write or sys.stdout.write
    err = warn or sys.stderr.write
    try:
        result = import_keepalived(path)
    except KeepalivedImportError as exc:
        _print_unconverted(err, exc.unconverted)
        err(f"vipd import-keepalived: {exc}\n")
        return 2
    if output is None:
        out(result.toml)
    else:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(result.toml)
        except OSError as e:
            err(f"vipd import-keepalived: cannot write {output}: {e.strerror or e}\n")
            return 2
    _print_unconverted(err, result.unconverted)
    return 1 if result.unconverted else 0


def _print_unconverted(err: Callable[[str], object], items: Iterable[Unconverted]) -> None:
    items = list(items)
    if items:
        err(f"{len(items)} keepalived line(s) not converted:\n")
        for item in items:
            err(f"{item}\n")
