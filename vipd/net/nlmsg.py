"""The netlink framing that vipd reads and writes with struct itself (vipd.net.neighbours,
vipd.net.rtaddr): message header, attribute header, error message. The VIP guard keeps its own
copy (vipd.net.guard_proc runs in an interpreter that imports nothing from vipd)."""

from __future__ import annotations

import struct

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
RTATTR = struct.Struct("=HH")  # length, type
NLMSGERR = struct.Struct("=i")  # -errno (0: acknowledged), then the request's header
U32 = struct.Struct("=I")

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x100, 0x400, 0x300
