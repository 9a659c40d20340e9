"""vipd's TOML configuration: parsing, validation and error reporting.

`parse_config` / `load_config` turn a TOML document into frozen dataclasses. Every
problem in the document is collected in one pass (like ``keepalived -t``) and raised
together as a `ConfigError`; each `ConfigIssue` names the file, the line and the field,
and says what was expected and what was found.

`tomllib` does not report positions, so a small `_Locator` scans the source text and
maps parsed paths such as ``("instance", 1, "priority")`` back to line numbers.
"""

from __future__ import annotations

import difflib
import grp
import json
import os
import re
import shlex
import socket
import tomllib
import urllib.parse
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from typing import Any, Final, TypeAlias, TypeVar

from vipd.witness.proto import KeyFileError, load_key

__all__ = [
    "CHECKSUM_MODES",
    "DEFAULT_CONTROL_SOCKET",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "ConfigError",
    "ConfigIssue",
    "DaemonConfig",
    "GroupConfig",
    "IPAddress",
    "IPInterface",
    "InstanceConfig",
    "TrackConfig",
    "WitnessConfig",
    "load_config",
    "parse_config",
]

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPInterface: TypeAlias = IPv4Interface | IPv6Interface

DEFAULT_CONTROL_SOCKET: Final = "/run/vipd/vipd.sock"
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
CHECKSUM_MODES: Final = ("pseudo-header", "message-only")
WITNESS_BACKENDS: Final = ("embedded", "etcd")
WITNESS_POLICIES: Final = ("hold-with-peer", "release")
DEFAULT_PEER_PORT: Final = 7481

_DAEMON_KEYS: Final = (
    "node_name",
    "control_socket",
    "control_group",
    "log_format",
    "log_level",
    "metrics_listen",
    "realtime_priority",
)
_NOTIFY_KEYS: Final = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")
_INSTANCE_KEYS: Final = (
    "name",
    "interface",
    "vrid",
    "priority",
    "advert_interval",
    "vips",
    "preempt",
    "preempt_delay",
    "unicast_peers",
    "unicast_source",
    "checksum",
    "vip_label",
    "use_vmac",
    "announce_count",
    "announce_spacing",
    "announce_refresh",
    "fence",
    "lease_name",
    "lease_ttl",
    "peers",
    "track_interfaces",
    "track_scripts",
    "track_http",
    "track_tcp",
    "track_files",
    *_NOTIFY_KEYS,
    "notify_timeout",
)
_WITNESS_KEYS: Final = (
    "backend",
    "address",
    "endpoints",
    "key_file",
    "policy",
    "peer_port",
    "fence_command",
    "fence_timeout",
)
_GROUP_KEYS: Final = ("name", "instances", *_NOTIFY_KEYS, "notify_timeout")
_TOP_KEYS: Final = ("daemon", "witness", "instance", "group")
_CHECK_KEYS: Final = ("timeout", "interval", "rise", "fall", "weight")
# tracker key -> (kind, keys of one entry)
_TRACK_KINDS: Final = {
    "track_interfaces": ("interface", ("name", "weight")),
    "track_scripts": ("script", ("name", "command", *_CHECK_KEYS)),
    "track_http": ("http", ("name", "url", "status", "verify_tls", *_CHECK_KEYS)),
    "track_tcp": ("tcp", ("name", "address", *_CHECK_KEYS)),
    "track_files": ("file", ("name", "path", "interval", "weight")),
}
DEFAULT_NOTIFY_TIMEOUT: Final = 10.0

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_IFNAMSIZ: Final = 16  # Linux: 15 bytes + NUL
_SUN_PATH_MAX: Final = 107  # sizeof(sockaddr_un.sun_path) - 1 for the NUL
_MAX_VIPS: Final = 255  # "Count IPvX Addr" is an 8-bit field in the VRRPv3 header


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class TrackConfig:
    """One tracker of an instance (docs/tracking.md); which fields matter depends on kind."""

    kind: str  # "interface", "script", "http", "tcp" or "file"
    name: str  # unique in its instance; an interface tracker's name is the interface
    weight: int = 0  # 0: FAULT while failed; > 0: added while OK; < 0: added while failed
    rise: int = 1
    fall: int = 1
    interval: float = 1.0  # seconds between checks (not interface)
    timeout: float = 1.0  # seconds a check may take (script, http, tcp)
    command: tuple[str, ...] = ()  # script
    url: str = ""  # http
    status: int = 200  # http: the expected status
    verify_tls: bool = True  # https
    address: tuple[str, int] | None = None  # tcp
    path: str = ""  # file


@dataclass(frozen=True)
class GroupConfig:
    """A sync group (keepalived's ``vrrp_sync_group``): instances that fail over together."""

    name: str
    instances: tuple[str, ...]
    notify: tuple[str, ...] = ()
    notify_master: tuple[str, ...] = ()
    notify_backup: tuple[str, ...] = ()
    notify_fault: tuple[str, ...] = ()
    notify_stop: tuple[str, ...] = ()
    notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT


@dataclass(frozen=True)
class InstanceConfig:
    """One VRRP virtual router (keepalived's ``vrrp_instance``)."""

    name: str
    interface: str
    vrid: int
    priority: int
    advert_interval: float
    vips: tuple[IPInterface, ...]
    preempt: bool
    preempt_delay: float
    unicast_peers: tuple[IPAddress, ...]
    unicast_source: IPAddress | None
    checksum: str
    vip_label: str | None
    use_vmac: bool
    announce_count: int
    announce_spacing: float
    announce_refresh: float
    fence: bool = False  # promote only on a witness grant ([witness] must be configured)
    lease_name: str = ""  # the lease both nodes share; defaults to the instance name
    lease_ttl: float | None = None  # None: this instance's Master_Down_Interval
    peers: tuple[IPAddress, ...] = ()  # peer-channel addresses; defaults to unicast_peers
    track_interfaces: tuple[TrackConfig, ...] = ()
    track_scripts: tuple[TrackConfig, ...] = ()
    track_http: tuple[TrackConfig, ...] = ()
    track_tcp: tuple[TrackConfig, ...] = ()
    track_files: tuple[TrackConfig, ...] = ()
    notify: tuple[str, ...] = ()  # run with INSTANCE <name> <STATE> <priority> appended
    notify_master: tuple[str, ...] = ()
    notify_backup: tuple[str, ...] = ()
    notify_fault: tuple[str, ...] = ()
    notify_stop: tuple[str, ...] = ()
    notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT

    @property
    def trackers(self) -> tuple[TrackConfig, ...]:
        """Every tracker, in the order of the keys above."""
        return (
            *self.track_interfaces,
            *self.track_scripts,
            *self.track_http,
            *self.track_tcp,
            *self.track_files,
        )

    @property
    def family(self) -> int:
        """4 or 6: the address family of the VIPs (validation guarantees one family)."""
        return self.vips[0].version

    @property
    def advert_centiseconds(self) -> int:
        """The advertisement interval as carried in VRRPv3 packets (12-bit centiseconds)."""
        return round(self.advert_interval * 100)


@dataclass(frozen=True)
class WitnessConfig:
    """The witness that fences promotions (``[witness]``); see docs/fencing.md."""

    backend: str  # "embedded" or "etcd"
    address: tuple[str, int] | None  # embedded: the witness's UDP address
    endpoints: tuple[str, ...]  # etcd: client URLs
    key: bytes  # shared HMAC key (embedded witness and the peer channel)
    key_file: str
    policy: str  # "hold-with-peer" or "release"
    peer_port: int
    fence_command: tuple[str, ...]  # run after the grant, before promotion; () for none
    fence_timeout: float


@dataclass(frozen=True)
class DaemonConfig:
    node_name: str
    control_socket: str
    log_format: str
    log_level: str
    instances: tuple[InstanceConfig, ...]
    source: str
    witness: WitnessConfig | None = None
    control_group: str | None = None  # socket mode 0660 for this group; None: root only
    metrics_listen: tuple[str, int] | None = None  # Prometheus /metrics; None: off
    groups: tuple[GroupConfig, ...] = ()
    realtime_priority: int = 0  # SCHED_RR priority of the event loop's thread; 0: SCHED_OTHER


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a configuration file; `issues` lists them all."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(self.issues)

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


def load_config(path: str | os.PathLike[str]) -> DaemonConfig:
    """Read and validate a config file; any problem (including I/O) raises ConfigError."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        issue = ConfigIssue(source, None, "", f"cannot read config file: {reason}")
        raise ConfigError([issue]) from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = data[e.start : e.start + 1].hex()
        message = f"file is not valid UTF-8 (byte 0x{bad} at offset {e.start})"
        raise ConfigError([ConfigIssue(source, line, "", message)]) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> DaemonConfig:
    """Parse and validate TOML text. Raises ConfigError listing every problem found."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([_syntax_issue(str(e), text, source)]) from None
    except ValueError as e:  # e.g. an integer literal longer than int's digit limit
        issue = ConfigIssue(source, None, "", f"TOML value cannot be parsed: {e}")
        raise ConfigError([issue]) from None
    except RecursionError:
        issue = ConfigIssue(source, None, "", "TOML syntax error: arrays/tables nested too deeply")
        raise ConfigError([issue]) from None
    report = _Report(source, _Locator(text))
    config = _build(raw, report, source)
    if report.issues or config is None:
        # Stable sort: document order, issues without a line first.
        raise ConfigError(sorted(report.issues, key=lambda i: i.line or 0))
    return config


def _syntax_issue(message: str, text: str, source: str) -> ConfigIssue:
    line: int | None = None
    m = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if m:
        line = int(m[1])
        message = f"{message[: m.start()]} (column {m[2]})"
    elif message.endswith(" (at end of document)"):
        line = text.count("\n") + 1
        message = message.removesuffix(" (at end of document)") + " (at end of file)"
    return ConfigIssue(source, line, "", f"TOML syntax error: {message}")


# --------------------------------------------------------------------------- locator

_Path: TypeAlias = tuple[str | int, ...]
_BARE_KEY_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)


class _Locator:
    """Maps parsed paths to 1-based source lines.

    Only ever run on text that tomllib accepted, so it can be lenient: it tracks table
    headers (counting ``[[array]]`` entries), dotted keys, inline tables and array
    elements, and skips over strings so that brackets or ``#`` inside them don't
    confuse it. Every loop is guarded to make progress, whatever the input.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._n = len(text)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._lines: dict[_Path, int] = {}
        self._aot_counts: dict[_Path, int] = {}
        self._scan()

    def line(self, path: _Path) -> int | None:
        """Line of `path`, else of its nearest recorded ancestor; None for the root."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(path[:end])
            if found is not None:
                return found
        return None

    def _mark(self, path: _Path, pos: int) -> None:
        self._lines.setdefault(path, bisect_right(self._line_starts, pos))

    def _skip_ws(self, i: int, newlines: bool = False) -> int:
        text, n = self._text, self._n
        while i < n:
            c = text[i]
            if c in " \t" or (newlines and c in "\r\n"):
                i += 1
            elif newlines and c == "#":
                i = self._next_line(i)
            else:
                break
        return i

    def _next_line(self, i: int) -> int:
        j = self._text.find("\n", i)
        return self._n if j < 0 else j + 1

    def _scan(self) -> None:
        text, n = self._text, self._n
        table: _Path = ()
        i = 0
        while i < n:
            i = self._skip_ws(i, newlines=True)
            if i >= n:
                break
            start = i
            if text.startswith("[[", i):
                keys, i = self._key(i + 2)
                if keys:
                    parent = self._resolve(keys[:-1], start)
                    array = (*parent, keys[-1])
                    self._mark(array, start)
                    count = self._aot_counts.get(array, 0) + 1
                    self._aot_counts[array] = count
                    table = (*array, count - 1)
                    self._mark(table, start)
            elif text[i] == "[":
                keys, i = self._key(i + 1)
                if keys:
                    table = self._resolve(keys, start)
            else:
                keys, i = self._key(i)
                if keys:
                    for k in range(1, len(keys) + 1):
                        self._mark(table + keys[:k], start)
                    i = self._skip_ws(i)
                    if i < n and text[i] == "=":
                        i = self._value(self._skip_ws(i + 1), table + keys)
            # The rest of the line can only be a closing bracket, blanks or a comment.
            i = self._next_line(max(i, start))

    def _resolve(self, keys: _Path, pos: int) -> _Path:
        """Header keys -> path, descending into the latest entry of each [[array]].

        Tables that the header creates implicitly (``a`` for ``[a.b]``) get its line.
        """
        path: _Path = ()
        for key in keys:
            path = (*path, key)
            count = self._aot_counts.get(path)
            if count:
                path = (*path, count - 1)
            self._mark(path, pos)
        return path

    def _key(self, i: int) -> tuple[_Path, int]:
        """Parse a (possibly dotted, possibly quoted) key starting at i."""
        text, n = self._text, self._n
        keys: list[str | int] = []
        while True:
            i = self._skip_ws(i)
            if i >= n:
                break
            if text[i] in "\"'":
                end = self._string_end(i)
                keys.append(_decode_quoted_key(text[i:end]))
                i = end
            else:
                j = i
                while j < n and text[j] in _BARE_KEY_CHARS:
                    j += 1
                if j == i:
                    break
                keys.append(text[i:j])
                i = j
            i = self._skip_ws(i)
            if i < n and text[i] == ".":
                i += 1
                continue
            break
        return tuple(keys), i

    def _string_end(self, i: int) -> int:
        """Index just past the string literal starting at i (any of the four kinds)."""
        text, n = self._text, self._n
        quote = text[i]
        escapes = quote == '"'
        if text.startswith(quote * 3, i):
            j = i + 3
            while j < n:
                if escapes and text[j] == "\\":
                    j += 2
                elif text.startswith(quote * 3, j):
                    j += 3
                    for _ in range(2):  # up to two quotes may end the content
                        if j < n and text[j] == quote:
                            j += 1
                    return j
                else:
                    j += 1
            return n
        j = i + 1
        while j < n:
            c = text[j]
            if escapes and c == "\\":
                j += 2
            elif c == quote:
                return j + 1
            elif c == "\n":
                return j
            else:
                j += 1
        return n

    def _value(self, i: int, path: _Path) -> int:
        """Skip the value at i, recording lines of array elements and inline-table keys."""
        text, n = self._text, self._n
        if i >= n:
            return i
        c = text[i]
        if c in "\"'":
            return self._string_end(i)
        if c == "[":
            i += 1
            index = 0
            while i < n:
                i = self._skip_ws(i, newlines=True)
                if i >= n:
                    break
                if text[i] == "]":
                    return i + 1
                if text[i] == ",":
                    i += 1
                    continue
                self._mark((*path, index), i)
                i = max(self._value(i, (*path, index)), i + 1)
                index += 1
            return i
        if c == "{":
            i += 1
            while i < n:
                i = self._skip_ws(i, newlines=True)
                if i >= n:
                    break
                if text[i] == "}":
                    return i + 1
                if text[i] == ",":
                    i += 1
                    continue
                start = i
                keys, i = self._key(i)
                if not keys:
                    i = start + 1
                    continue
                for k in range(1, len(keys) + 1):
                    self._mark(path + keys[:k], start)
                i = self._skip_ws(i)
                if i < n and text[i] == "=":
                    i = self._value(self._skip_ws(i + 1), path + keys)
            return i
        # Scalar: number, bool, date/time. None of these contains a delimiter.
        while i < n and text[i] not in ",]}#\r\n":
            i += 1
        return i


def _decode_quoted_key(raw: str) -> str:
    try:
        # tomllib already accepted the document, so this reuses its exact escape rules.
        return str(next(iter(tomllib.loads(f"{raw} = 0"))))
    except (tomllib.TOMLDecodeError, StopIteration):
        return raw[1:-1]


# --------------------------------------------------------------------------- validation

_T = TypeVar("_T")


class _Invalid(Exception):
    """Raised by a value checker; the message says what was expected and what was found."""


class _Report:
    def __init__(self, source: str, locator: _Locator) -> None:
        self.source = source
        self.locator = locator
        self.issues: list[ConfigIssue] = []

    def add(self, path: _Path, field_name: str, message: str) -> None:
        line = self.locator.line(path)
        self.issues.append(ConfigIssue(self.source, line, field_name, message))


@dataclass
class _Table:
    """One TOML table being validated: `path` locates it, `label` names it in messages."""

    report: _Report
    path: _Path
    label: str
    data: Mapping[str, Any]
    bad: set[str] = field(default_factory=set)

    def name(self, key: str, index: int | None = None) -> str:
        name = f"{self.label}.{key}" if self.label else key
        return name if index is None else f"{name}[{index}]"

    def error(self, key: str, message: str, index: int | None = None) -> None:
        path = (*self.path, key) if index is None else (*self.path, key, index)
        self.report.add(path, self.name(key, index), message)
        self.bad.add(key)

    def check_unknown(self, known: Sequence[str]) -> None:
        for key in self.data:
            if key not in known:
                self.error(key, _unknown_key_message(key, known))

    def take(self, key: str, check: Callable[[object], _T], default: _T) -> _T:
        """The checked value, or `default` if absent or invalid (invalid: error recorded)."""
        if key not in self.data:
            return default
        try:
            return check(self.data[key])
        except _Invalid as e:
            self.error(key, str(e))
            return default

    def require(self, key: str, check: Callable[[object], _T], example: str) -> _T | None:
        if key not in self.data:
            self.error(key, f"required key is missing (e.g. {key} = {example})")
            return None
        try:
            return check(self.data[key])
        except _Invalid as e:
            self.error(key, str(e))
            return None

    def take_list(
        self, key: str, check: Callable[[object], _T], what: str
    ) -> list[tuple[int, _T]] | None:
        """Valid (index, item) pairs; None if absent or not an array. Bad items reported."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, list):
            self.error(key, f"must be an array of {what}, got {_show(value)}")
            return None
        items: list[tuple[int, _T]] = []
        for index, item in enumerate(value):
            try:
                items.append((index, check(item)))
            except _Invalid as e:
                self.error(key, str(e), index)
        return items


def _unknown_key_message(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (known keys: {', '.join(known)})"


def _show(value: object) -> str:
    """Render a parsed TOML value for an error message, TOML-style."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:56] + '..."'
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


# ---- value checkers (object -> typed value, or raise _Invalid)


def _int_range(lo: int, hi: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return value
        raise _Invalid(f"must be an integer {lo}..{hi}, got {_show(value)}")

    return check


def _seconds(lo: float, hi: float, *, zero_means_off: bool = False) -> Callable[[object], float]:
    expected = f"a number of seconds {lo:g}..{hi:g}"
    if zero_means_off:
        expected = f"0 (off) or {expected}"

    def check(value: object) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Compare before float(): a huge TOML integer would overflow a float.
            if zero_means_off and value == 0:
                return 0.0
            if lo <= value <= hi:
                return float(value)
        raise _Invalid(f"must be {expected}, got {_show(value)}")

    return check


def _advert_interval(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.01 <= value <= 40.95:
        centis = float(value) * 100
        if abs(centis - round(centis)) < 1e-6:
            return round(centis) / 100
    raise _Invalid(
        "must be a number of seconds 0.01..40.95 in steps of 0.01 "
        f"(VRRPv3 carries centiseconds), got {_show(value)}"
    )


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"must be true or false, got {_show(value)}")


def _choice(*choices: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, str) and value in choices:
            return value
        options = " | ".join(f'"{c}"' for c in choices)
        raise _Invalid(f"must be one of {options}, got {_show(value)}")

    return check


def _string(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid(f"must be a string, got {_show(value)}")


def _instance_name(value: object) -> str:
    if isinstance(value, str) and _NAME_RE.fullmatch(value):
        return value
    raise _Invalid(f"must be 1..32 characters from [A-Za-z0-9_.-], got {_show(value)}")


def _ifname(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a network interface name (string), got {_show(value)}")
    problem = None
    if not value:
        problem = "is empty"
    elif not value.isprintable() or any(c.isspace() for c in value):
        problem = "contains whitespace or control characters"
    elif "/" in value or ":" in value:
        problem = "contains '/' or ':'"
    elif value in (".", ".."):
        problem = "is '.' or '..'"
    elif len(value.encode()) >= _IFNAMSIZ:
        problem = f"is longer than {_IFNAMSIZ - 1} bytes"
    if problem:
        raise _Invalid(f"must be a valid Linux interface name, got {_show(value)}, which {problem}")
    return value


def _printable_name(max_len: int) -> Callable[[object], str]:
    def check(value: object) -> str:
        if (
            isinstance(value, str)
            and 1 <= len(value) <= max_len
            and value.isprintable()
            and not any(c.isspace() for c in value)
        ):
            return value
        raise _Invalid(
            f"must be 1..{max_len} printable characters without spaces, got {_show(value)}"
        )

    return check


_node_name = _printable_name(64)
_tracker_name = _printable_name(128)


def _socket_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _Invalid(f"must be an absolute path, got {_show(value)}")
    if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > _SUN_PATH_MAX:
        raise _Invalid(
            f"must fit a Unix socket address (at most {_SUN_PATH_MAX} bytes, no NUL), "
            f"got {_show(value)}"
        )
    return value


def _unicast_problem(addr: IPAddress) -> str | None:
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_loopback:
        return "a loopback address"
    if isinstance(addr, IPv4Address) and addr == IPv4Address("255.255.255.255"):
        return "the broadcast address"
    return None


def _vip(value: object) -> IPInterface:
    expected = 'an address "ADDR/PREFIX" (or bare "ADDR")'
    if not isinstance(value, str):
        raise _Invalid(f"must be {expected}, got {_show(value)}")
    if "%" in value:
        raise _Invalid(f"must not carry a zone index (%...), got {_show(value)}")
    try:
        vip = ip_interface(value)
    except ValueError:
        raise _Invalid(f"must be {expected}, got {_show(value)}") from None
    problem = _unicast_problem(vip.ip)
    if problem:
        raise _Invalid(f"must be a unicast address, got {value!s}, which is {problem}")
    return vip


def _address(value: object) -> IPAddress:
    if not isinstance(value, str) or "%" in value:
        raise _Invalid(f"must be an IP address string without zone, got {_show(value)}")
    try:
        addr = ip_address(value)
    except ValueError:
        raise _Invalid(f"must be an IPv4 or IPv6 address, got {_show(value)}") from None
    problem = _unicast_problem(addr)
    if problem:
        raise _Invalid(f"must be a unicast address, got {value!s}, which is {problem}")
    return addr


def _host_port(value: object) -> tuple[str, int]:
    expected = 'an address "HOST:PORT" (IPv6 as "[ADDR]:PORT")'
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if sep and host and port.isdigit() and 1 <= int(port) <= 65535:
            try:
                ip_address(host)
            except ValueError:
                pass
            else:
                return host, int(port)
    raise _Invalid(f"must be {expected}, got {_show(value)}")


def _group(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be a group name, got {_show(value)}")
    try:
        grp.getgrnam(value)
    except KeyError:
        raise _Invalid(f"no such group {value!r} on this host") from None
    return value


def _url(value: object) -> str:
    if isinstance(value, str) and re.fullmatch(r"https?://[^\s/]+(:\d+)?/?", value):
        return value.rstrip("/")
    raise _Invalid(f'must be a URL like "http://192.0.2.10:2379", got {_show(value)}')


def _command(value: object) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        try:
            return tuple(shlex.split(value))
        except ValueError as e:
            raise _Invalid(f"cannot be split into arguments: {e}") from None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _Invalid(f"must be a command (string or array of strings), got {_show(value)}")


def _http_url(value: object) -> str:
    if isinstance(value, str) and value.isprintable() and not any(c.isspace() for c in value):
        try:
            parts = urllib.parse.urlsplit(value)
            _ = parts.port  # raises ValueError for a port that is not 0..65535
        except ValueError:
            pass
        else:
            if parts.scheme in ("http", "https") and parts.hostname:
                return value
    raise _Invalid(
        f'must be an http:// or https:// URL like "http://127.0.0.1:8080/health", '
        f"got {_show(value)}"
    )


def _abs_path(value: object) -> str:
    if isinstance(value, str) and value.startswith("/") and "\0" not in value:
        return value
    raise _Invalid(f"must be an absolute path, got {_show(value)}")


def _read_key(path: str) -> bytes:
    try:
        return load_key(path)
    except KeyFileError as e:
        raise _Invalid(str(e)) from None


def _family_name(version: int) -> str:
    return f"IPv{version}"


# ---- table validators


def _build(raw: dict[str, Any], report: _Report, source: str) -> DaemonConfig | None:
    top = _Table(report, (), "", raw)
    top.check_unknown(_TOP_KEYS)

    daemon_data = raw.get("daemon", {})
    if not isinstance(daemon_data, dict):
        top.error("daemon", f"must be a table ([daemon]), got {_show(daemon_data)}")
        daemon_data = {}
    daemon = _Table(report, ("daemon",), "daemon", daemon_data)
    daemon.check_unknown(_DAEMON_KEYS)
    node_name = daemon.take("node_name", _node_name, "")
    if not node_name:
        node_name = socket.gethostname()
    control_socket = daemon.take("control_socket", _socket_path, DEFAULT_CONTROL_SOCKET)
    log_format = daemon.take("log_format", _choice(*LOG_FORMATS), "auto")
    log_level = daemon.take("log_level", _choice(*LOG_LEVELS), "info")
    control_group = daemon.take("control_group", _group, None)
    metrics_listen = daemon.take("metrics_listen", _host_port, None)
    realtime_priority = daemon.take("realtime_priority", _int_range(0, 99), 0)

    witness = _build_witness(report, top, raw, source)

    instances: list[InstanceConfig | None] = []
    seen = _Seen()
    instance_data = raw.get("instance")
    if instance_data is None:
        top.error("instance", "at least one [[instance]] table is required")
    elif not isinstance(instance_data, list) or not instance_data:
        top.error(
            "instance",
            f"must be one or more [[instance]] tables, got {_show(instance_data)}",
        )
    else:
        for index, item in enumerate(instance_data):
            if not isinstance(item, dict):
                top.error("instance", f"must be a table, got {_show(item)}", index)
                instances.append(None)
                continue
            instances.append(_build_instance(report, index, item, seen, witness is not None))

    groups = _build_groups(report, top, raw, set(seen.names))

    if report.issues:
        return None
    return DaemonConfig(
        node_name=node_name,
        control_socket=control_socket,
        log_format=log_format,
        log_level=log_level,
        instances=tuple(i for i in instances if i is not None),
        source=source,
        witness=witness,
        control_group=control_group,
        metrics_listen=metrics_listen,
        groups=groups,
        realtime_priority=realtime_priority,
    )


def _build_witness(
    report: _Report, top: _Table, raw: Mapping[str, Any], source: str
) -> WitnessConfig | None:
    data = raw.get("witness")
    if data is None:
        return None
    if not isinstance(data, dict):
        top.error("witness", f"must be a table ([witness]), got {_show(data)}")
        return None
    t = _Table(report, ("witness",), "witness", data)
    t.check_unknown(_WITNESS_KEYS)
    backend = t.require("backend", _choice(*WITNESS_BACKENDS), '"embedded"')
    policy = t.take("policy", _choice(*WITNESS_POLICIES), "hold-with-peer")
    peer_port = t.take("peer_port", _int_range(1, 65535), DEFAULT_PEER_PORT)
    no_command: tuple[str, ...] = ()
    fence_command = t.take("fence_command", _command, no_command)
    fence_timeout = t.take("fence_timeout", _seconds(0.1, 600), 10.0)
    address = None
    if backend == "embedded":
        address = t.require("address", _host_port, '"192.0.2.10:7480"')
    elif backend == "etcd" and "address" in data:
        t.error("address", 'is for backend = "embedded"; etcd takes endpoints')
    endpoints: list[tuple[int, str]] = []
    if backend == "etcd":
        if "endpoints" not in data:
            t.error(
                "endpoints", 'required key is missing (e.g. endpoints = ["http://192.0.2.10:2379"])'
            )
        endpoints = t.take_list("endpoints", _url, "URL strings") or []
        if "endpoints" in data and not data["endpoints"]:
            t.error("endpoints", "must list at least one etcd client URL")
    elif backend == "embedded" and "endpoints" in data:
        t.error("endpoints", 'is for backend = "etcd"; the embedded witness takes address')
    # The key authenticates the embedded witness and the peer channel (both backends).
    key_file = t.require("key_file", _string, '"/etc/vipd/witness.key"')
    key = b""
    if key_file is not None:
        if not os.path.isabs(key_file):
            key_file = os.path.join(os.path.dirname(os.path.abspath(source)), key_file)
        try:
            key = _read_key(key_file)
        except _Invalid as e:
            t.error("key_file", str(e))
    if t.bad or backend is None or key_file is None:
        return None
    return WitnessConfig(
        backend=backend,
        address=address,
        endpoints=tuple(url for _, url in endpoints),
        key=key,
        key_file=key_file,
        policy=policy,
        peer_port=peer_port,
        fence_command=fence_command,
        fence_timeout=fence_timeout,
    )


@dataclass
class _Seen:
    """Cross-instance uniqueness state, filled in as instances are validated."""

    names: dict[str, str] = field(default_factory=dict)
    vrids: dict[tuple[str, int, int], str] = field(default_factory=dict)
    vips: dict[IPAddress, str] = field(default_factory=dict)


def _build_instance(
    report: _Report, index: int, data: Mapping[str, Any], seen: _Seen, has_witness: bool
) -> InstanceConfig | None:
    raw_name = data.get("name")
    label = f"instance[{index}]"
    if isinstance(raw_name, str) and _NAME_RE.fullmatch(raw_name):
        label = f"{label} ({raw_name})"
    t = _Table(report, ("instance", index), label, data)
    t.check_unknown(_INSTANCE_KEYS)

    name = t.require("name", _instance_name, '"web"')
    interface = t.require("interface", _ifname, '"eth0"')
    vrid = t.require("vrid", _int_range(1, 255), "51")
    priority = t.take("priority", _int_range(1, 255), 100)
    advert_interval = t.take("advert_interval", _advert_interval, 1.0)
    preempt = t.take("preempt", _bool, True)
    preempt_delay = t.take("preempt_delay", _seconds(0, 1000), 0.0)
    checksum = t.take("checksum", _choice(*CHECKSUM_MODES), "pseudo-header")
    vip_label = t.take("vip_label", _string, None)
    use_vmac = t.take("use_vmac", _bool, False)
    announce_count = t.take("announce_count", _int_range(1, 20), 3)
    announce_spacing = t.take("announce_spacing", _seconds(1.1, 60), 1.2)
    announce_refresh = t.take("announce_refresh", _seconds(1.1, 3600, zero_means_off=True), 5.0)
    unicast_source = t.take("unicast_source", _address, None)
    fence = t.take("fence", _bool, has_witness)
    if fence and not has_witness:
        t.error("fence", "needs a [witness] table (the witness that grants the lease)")
    lease_name = t.take("lease_name", _instance_name, "")
    lease_ttl = t.take("lease_ttl", _seconds(0.05, 3600), None)
    trackers = _build_trackers(report, t)
    hooks = _take_hooks(t)
    notify_timeout = t.take("notify_timeout", _seconds(0.1, 3600), DEFAULT_NOTIFY_TIMEOUT)

    # --- vips: non-empty, one family, no duplicates here or in earlier instances
    family: int | None = None
    vip_items = t.take_list("vips", _vip, 'addresses like "192.0.2.100/24"')
    if "vips" not in data:
        t.error("vips", 'required key is missing (e.g. vips = ["192.0.2.100/24"])')
    elif vip_items is not None and not data["vips"]:
        t.error("vips", "must list at least one address, got an empty array")
    elif vip_items is not None and len(data["vips"]) > _MAX_VIPS:
        t.error(
            "vips",
            f"must list at most {_MAX_VIPS} addresses (the VRRPv3 limit), got {len(data['vips'])}",
        )
    if vip_items:
        families = {vip.version for _, vip in vip_items}
        if len(families) > 1:
            first4 = next(vip for _, vip in vip_items if vip.version == 4)
            first6 = next(vip for _, vip in vip_items if vip.version == 6)
            t.error("vips", f"mixes IPv4 and IPv6 addresses: {first4}, {first6}")
        elif "vips" not in t.bad:
            family = families.pop()
        where: dict[IPAddress, int] = {}
        for i, vip in vip_items:
            if vip.ip in where:
                t.error("vips", f"duplicate address {vip.ip} (also vips[{where[vip.ip]}])", i)
                continue
            where[vip.ip] = i
            owner = seen.vips.get(vip.ip)
            if owner is not None:
                t.error("vips", f"{vip.ip} is already a VIP of {owner}", i)
            else:
                seen.vips[vip.ip] = label

    # --- unicast peers and source
    peer_items = t.take_list("unicast_peers", _address, "IP address strings") or []
    peers_where: dict[IPAddress, int] = {}
    for i, peer in peer_items:
        if family is not None and peer.version != family:
            t.error(
                "unicast_peers",
                f"must be an {_family_name(family)} address like the vips, "
                f"got {_family_name(peer.version)} address {peer}",
                i,
            )
        elif peer in peers_where:
            t.error(
                "unicast_peers",
                f"duplicate peer {peer} (also unicast_peers[{peers_where[peer]}])",
                i,
            )
        else:
            peers_where[peer] = i
    fence_peers = t.take_list("peers", _address, "IP address strings") or []
    for i, peer in fence_peers:
        if family is not None and peer.version != family:
            t.error(
                "peers",
                f"must be an {_family_name(family)} address like the vips, "
                f"got {_family_name(peer.version)} address {peer}",
                i,
            )
    if unicast_source is not None:
        if family is not None and unicast_source.version != family:
            t.error(
                "unicast_source",
                f"must be an {_family_name(family)} address like the vips, "
                f"got {_family_name(unicast_source.version)} address {unicast_source}",
            )
        if not data.get("unicast_peers") and "unicast_peers" not in t.bad:
            t.error(
                "unicast_source",
                "is only meaningful with unicast_peers (without peers vipd uses multicast); "
                "add unicast_peers or remove unicast_source",
            )

    # --- IPv4-only options
    if family == 6 and checksum == "message-only":
        t.error(
            "checksum",
            '"message-only" (RFC 9568) applies to IPv4 only; IPv6 VRRP always '
            'checksums the pseudo-header, so use "pseudo-header" or drop the key',
        )
    if vip_label is not None:
        if family == 6:
            t.error("vip_label", "address labels exist only for IPv4; remove it for IPv6 vips")
        elif len(vip_label) >= _IFNAMSIZ:
            t.error(
                "vip_label",
                f"must be at most {_IFNAMSIZ - 1} characters, got {_show(vip_label)} "
                f"({len(vip_label)} characters)",
            )
        elif (
            interface is not None
            and vip_label != interface
            and not vip_label.startswith(f"{interface}:")
        ):
            t.error(
                "vip_label",
                f'must be "{interface}" or start with "{interface}:" (Linux requires the '
                f"label to begin with the interface name), got {_show(vip_label)}",
            )

    # --- cross-instance uniqueness
    if name is not None:
        other = seen.names.get(name)
        if other is not None:
            t.error("name", f"duplicate instance name {name!r} (also {other})")
        else:
            seen.names[name] = f"instance[{index}]"
    if interface is not None and vrid is not None and family is not None:
        key = (interface, vrid, family)
        other = seen.vrids.get(key)
        if other is not None:
            t.error(
                "vrid",
                f"{interface} already has an {_family_name(family)} VRRP instance with "
                f"vrid {vrid}: {other}",
            )
        else:
            seen.vrids[key] = label

    if t.bad or name is None or interface is None or vrid is None or vip_items is None:
        return None
    return InstanceConfig(
        name=name,
        interface=interface,
        vrid=vrid,
        priority=priority,
        advert_interval=advert_interval,
        vips=tuple(vip for _, vip in vip_items),
        preempt=preempt,
        preempt_delay=preempt_delay,
        unicast_peers=tuple(peer for _, peer in peer_items),
        unicast_source=unicast_source,
        checksum=checksum,
        vip_label=vip_label,
        use_vmac=use_vmac,
        announce_count=announce_count,
        announce_spacing=announce_spacing,
        announce_refresh=announce_refresh,
        fence=fence,
        lease_name=lease_name or name,
        lease_ttl=lease_ttl,
        peers=tuple(p for _, p in fence_peers) or tuple(p for _, p in peer_items),
        track_interfaces=trackers["track_interfaces"],
        track_scripts=trackers["track_scripts"],
        track_http=trackers["track_http"],
        track_tcp=trackers["track_tcp"],
        track_files=trackers["track_files"],
        notify=hooks["notify"],
        notify_master=hooks["notify_master"],
        notify_backup=hooks["notify_backup"],
        notify_fault=hooks["notify_fault"],
        notify_stop=hooks["notify_stop"],
        notify_timeout=notify_timeout,
    )


_TRACK_EXAMPLES: Final = {
    "track_interfaces": '[{name = "eth1", weight = -50}]',
    "track_scripts": '[{command = "/usr/local/bin/check-nginx", weight = 0}]',
    "track_http": '[{url = "http://127.0.0.1:8080/health"}]',
    "track_tcp": '[{address = "127.0.0.1:8080"}]',
    "track_files": '[{path = "/run/vipd/web.weight", weight = 10}]',
}


def _take_hooks(t: _Table) -> dict[str, tuple[str, ...]]:
    no_command: tuple[str, ...] = ()
    return {key: t.take(key, _command, no_command) for key in _NOTIFY_KEYS}


def _build_trackers(report: _Report, t: _Table) -> dict[str, tuple[TrackConfig, ...]]:
    """Every track_* array of one instance; tracker names must be unique in the instance."""
    result: dict[str, tuple[TrackConfig, ...]] = {}
    names: dict[str, str] = {}
    for key, (kind, keys) in _TRACK_KINDS.items():
        result[key] = ()
        if key not in t.data:
            continue
        value = t.data[key]
        example = _TRACK_EXAMPLES[key]
        if not isinstance(value, list):
            t.error(key, f"must be an array of tables like {example}, got {_show(value)}")
            continue
        built: list[TrackConfig] = []
        for index, item in enumerate(value):
            if kind == "interface" and isinstance(item, str):
                item = {"name": item}  # shorthand: track_interfaces = ["eth1"]
            if not isinstance(item, dict):
                t.error(key, f"must be a table like {example[1:-1]}, got {_show(item)}", index)
                continue
            entry = _Table(report, (*t.path, key, index), t.name(key, index), item)
            entry.check_unknown(keys)
            tracker = _build_tracker(entry, kind)
            if entry.bad:
                t.bad.add(key)
            if tracker is None:
                continue
            other = names.get(tracker.name)
            if other is not None:
                entry.error(
                    "name",
                    f"duplicate tracker name {tracker.name!r} (also {other}); "
                    "give each tracker of an instance its own name",
                )
                t.bad.add(key)
                continue
            names[tracker.name] = f"{key}[{index}]"
            built.append(tracker)
        result[key] = tuple(built)
    return result


def _build_tracker(entry: _Table, kind: str) -> TrackConfig | None:
    weight = entry.take("weight", _int_range(-254, 254), 1 if kind == "file" else 0)
    rise = entry.take("rise", _int_range(1, 1000), 1)
    fall = entry.take("fall", _int_range(1, 1000), 1)
    interval = entry.take("interval", _seconds(0.1, 3600), 1.0)
    timeout = entry.take("timeout", _seconds(0.1, 3600), interval)
    # An interface tracker's name is the interface; other trackers may be given a label.
    label = "" if kind == "interface" else entry.take("name", _tracker_name, "")
    common: dict[str, Any] = {
        "kind": kind,
        "weight": weight,
        "rise": rise,
        "fall": fall,
        "interval": interval,
        "timeout": timeout,
    }
    name: str | None
    if kind == "interface":
        name = entry.require("name", _ifname, '"eth1"')
        if name is None:
            return None
    elif kind == "script":
        command = entry.require("command", _command, '"/usr/local/bin/check-nginx"')
        if command is None:
            return None
        common["command"] = command
        name = label or os.path.basename(command[0]) or command[0]
    elif kind == "http":
        url = entry.require("url", _http_url, '"http://127.0.0.1:8080/health"')
        common["status"] = entry.take("status", _int_range(100, 599), 200)
        common["verify_tls"] = entry.take("verify_tls", _bool, True)
        if url is None:
            return None
        common["url"] = url
        name = label or url
    elif kind == "tcp":
        address = entry.require("address", _host_port, '"127.0.0.1:8080"')
        if address is None:
            return None
        common["address"] = address
        host, port = address
        name = label or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    else:
        path = entry.require("path", _abs_path, '"/run/vipd/web.weight"')
        if path is None:
            return None
        common["path"] = path
        name = label or path
    if entry.bad:
        return None
    return TrackConfig(name=name, **common)


def _build_groups(
    report: _Report, top: _Table, raw: Mapping[str, Any], instance_names: set[str]
) -> tuple[GroupConfig, ...]:
    data = raw.get("group")
    if data is None:
        return ()
    if not isinstance(data, list) or not data:
        top.error("group", f"must be one or more [[group]] tables, got {_show(data)}")
        return ()
    groups: list[GroupConfig] = []
    names: dict[str, str] = {}
    member_of: dict[str, str] = {}
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            top.error("group", f"must be a table, got {_show(item)}", index)
            continue
        raw_name = item.get("name")
        label = f"group[{index}]"
        if isinstance(raw_name, str) and _NAME_RE.fullmatch(raw_name):
            label = f"{label} ({raw_name})"
        g = _Table(report, ("group", index), label, item)
        g.check_unknown(_GROUP_KEYS)
        name = g.require("name", _instance_name, '"web"')
        if name is not None:
            other = names.get(name)
            if other is not None:
                g.error("name", f"duplicate group name {name!r} (also {other})")
            else:
                names[name] = f"group[{index}]"
        members = g.take_list("instances", _instance_name, "instance names")
        if "instances" not in item:
            g.error("instances", 'required key is missing (e.g. instances = ["web", "api"])')
        elif members is not None and not item["instances"]:
            g.error("instances", "must list at least one instance, got an empty array")
        here: dict[str, int] = {}
        for j, member in members or []:
            if member not in instance_names:
                g.error("instances", f"no [[instance]] is named {member!r}", j)
            elif member in here:
                g.error(
                    "instances",
                    f"duplicate instance {member!r} (also instances[{here[member]}])",
                    j,
                )
            elif member in member_of:
                g.error(
                    "instances",
                    f"{member!r} is already in group {member_of[member]!r}; an instance "
                    "belongs to one group at most",
                    j,
                )
            else:
                here[member] = j
                member_of[member] = name or label
        hooks = _take_hooks(g)
        notify_timeout = g.take("notify_timeout", _seconds(0.1, 3600), DEFAULT_NOTIFY_TIMEOUT)
        if g.bad or name is None or members is None:
            continue
        groups.append(
            GroupConfig(
                name=name,
                instances=tuple(m for _, m in members),
                notify=hooks["notify"],
                notify_master=hooks["notify_master"],
                notify_backup=hooks["notify_backup"],
                notify_fault=hooks["notify_fault"],
                notify_stop=hooks["notify_stop"],
                notify_timeout=notify_timeout,
            )
        )
    return tuple(groups)
