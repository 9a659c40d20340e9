"""The VIP guard's process (see vipd.net.guard): ``python -I -S guard_proc.py FD``.

It costs little more than a bare interpreter (about 9 MB of RSS, against the daemon's 30 MB):
it speaks netlink itself, one message type packed with struct (pyroute2 alone is 11 MB), and
takes sockets and signals from the C modules under ``socket`` and ``signal``, whose IntEnum
wrappers (and json's, for two log lines) would cost another 2 MB.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # typeshed has no stub for it
import _socket
import errno
import os
import struct
import sys

__all__ = ["deladdr_message", "frame", "frames", "log_line", "record"]

# <linux/rtnetlink.h>, <linux/netlink.h>, <linux/if_addr.h>
_RTM_DELADDR = 21
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 0x2
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type
#: A record the daemon sends: family, prefix length, interface index, then the address.
_RECORD = struct.Struct("=BBI")


def record(family: int, prefixlen: int, index: int, address: bytes) -> bytes:
    return _RECORD.pack(family, prefixlen, index) + address


def frame(op: bytes, entry: bytes) -> bytes:
    """One message on the stream: ``+`` or ``-``, the record's length, the record."""
    return op + bytes([len(entry)]) + entry


def frames(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Take the complete messages off the front of ``buffer``; a partial one stays."""
    out = []
    while len(buffer) >= 2 and len(buffer) >= 2 + buffer[1]:
        end = 2 + buffer[1]
        out.append((bytes(buffer[:1]), bytes(buffer[2:end])))
        del buffer[:end]
    return out


def _attr(kind: int, value: bytes) -> bytes:
    length = _RTATTR.size + len(value)
    return _RTATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def deladdr_message(entry: bytes, seq: int) -> bytes:
    """The RTM_DELADDR request that removes the address a :func:`record` describes. IPv4 names it by
    IFA_LOCAL (and IFA_ADDRESS, equal to it on a broadcast link, as ``ip`` sends it); IPv6 by
    IFA_ADDRESS."""
    family, prefixlen, index = _RECORD.unpack_from(entry)
    address = entry[_RECORD.size :]
    body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index)
    if family == _socket.AF_INET:
        body += _attr(_IFA_LOCAL, address)
    body += _attr(_IFA_ADDRESS, address)
    flags = _NLM_F_REQUEST | _NLM_F_ACK
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _RTM_DELADDR, flags, seq, 0) + body


def _json(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in escaped) + '"'


def log_line(event: str, **fields: str | int) -> str:
    """One JSON log line, the daemon's format (written by hand: see the module's docstring)."""
    items = {"event": event, "logger": "vipd.guard", "pid": os.getpid(), **fields}
    return "{" + ", ".join(f"{_json(k)}: {_json(v)}" for k, v in items.items()) + "}"


def _log(event: str, **fields: str | int) -> None:
    sys.stderr.write(log_line(event, **fields) + "\n")
    sys.stderr.flush()


def _remove(held: set[bytes]) -> None:
    records = sorted(held)
    nl = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _socket.NETLINK_ROUTE)
    try:
        nl.bind((0, 0))
        for seq, entry in enumerate(records, start=1):
            nl.send(deladdr_message(entry, seq))
        pending = len(records)
        while pending:
            data = nl.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                start = offset
                length, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, start)
                offset += max(length, _NLMSGHDR.size)
                if kind != _NLMSG_ERROR or not 1 <= seq <= len(records):
                    continue
                pending -= 1
                code = -struct.unpack_from("=i", data, start + _NLMSGHDR.size)[0]
                family, prefixlen, index = _RECORD.unpack_from(records[seq - 1])
                address = _socket.inet_ntop(family, records[seq - 1][_RECORD.size :])
                vip = f"{address}/{prefixlen}"
                if code == 0:
                    _log("vip-guard-removed", vip=vip, ifindex=index)
                elif code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    _log("vip-guard-remove-failed", vip=vip, error=os.strerror(code))
    finally:
        nl.close()


def _guard(fd: int) -> None:
    for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_IGN)
    held: set[bytes] = set()
    buffer = bytearray()
    daemon = _socket.socket(fileno=fd)
    try:
        while True:
            try:
                data = daemon.recv(4096)
            except ConnectionError:
                break
            if not data:
                break  # the daemon's end is closed: it has exited
            buffer += data
            for op, entry in frames(buffer):
                if op == b"+":
                    held.add(entry)
                else:
                    held.discard(entry)
    finally:
        daemon.close()
    if held:
        _remove(held)


if __name__ == "__main__":
    _guard(int(sys.argv[1]))
