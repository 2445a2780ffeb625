"""The peer wire protocol: handshake records and frame layouts.

Every connection starts with a fixed 32-byte hello from the dialling member::

    magic "PTRP" | version u16 | kind u8 | reserved u8 | cluster_id u64 | from u64 | to u64

answered by a reply of 20 bytes plus a UTF-8 reason (empty when accepted)::

    status u8 | reserved u8 | reason_len u16 | cluster_id u64 | member_id u64 | reason

A rejected connection is closed by the receiver right after its reply. An accepted MESSAGES
connection then carries, from dialler to receiver only, frames ``length u32 | payload``. An
accepted SNAPSHOT connection carries frames ``length u32 | type u8 | body`` (``length`` counts the
type byte): one META frame, DATA frames, one END frame whose body is ``total u64 | sha256``; the
receiver answers with a result record ``status u8 | reason_len u16 | reason``. An accepted REQUEST
connection carries one frame ``length u32 | payload`` each way (the request, then the answer),
after which the receiver closes it. All integers are big-endian.

REQUEST connections serve members that are not (yet) part of the cluster, e.g. one started with
--initial-cluster-state existing that asks for the member list: their hello may carry cluster ID
0 and receiver ID 0 ("unknown"), and the sender need not be a known member.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"PTRP"
PROTOCOL_VERSION = 1

HELLO = struct.Struct(">4sHBBQQQ")
REPLY = struct.Struct(">BBHQQ")
FRAME_HEADER = struct.Struct(">I")
SNAP_FRAME_HEADER = struct.Struct(">IB")
SNAP_END = struct.Struct(">Q32s")
SNAP_RESULT = struct.Struct(">BH")

MAX_UINT64 = (1 << 64) - 1
MAX_FRAME = (1 << 32) - 1


class Kind(IntEnum):
    """What a connection carries after its handshake."""

    MESSAGES = 1
    SNAPSHOT = 2
    REQUEST = 3  # one request frame, one answer frame


class Status(IntEnum):
    """Handshake verdicts. The texts follow etcd's wording where etcd has one."""

    OK = 0
    INCOMPATIBLE_VERSION = 1
    CLUSTER_ID_MISMATCH = 2
    MEMBER_ID_MISMATCH = 3
    REMOVED_MEMBER = 4
    UNKNOWN_SENDER = 5
    NOT_ACCEPTED = 6

    @property
    def text(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    Status.OK: "ok",
    Status.INCOMPATIBLE_VERSION: "incompatible version",
    Status.CLUSTER_ID_MISMATCH: "cluster ID mismatch",
    Status.MEMBER_ID_MISMATCH: "member ID mismatch",
    Status.REMOVED_MEMBER: "the member has been permanently removed from the cluster",
    Status.UNKNOWN_SENDER: "sender not found",
    Status.NOT_ACCEPTED: "kind of stream not accepted",
}


class SnapFrame(IntEnum):
    META = 1
    DATA = 2
    END = 3


class ProtocolError(Exception):
    """The other end broke the wire protocol (not a petcd peer, or a bug)."""


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    kind: int
    cluster_id: int
    from_id: int
    to_id: int

    def encode(self) -> bytes:
        return HELLO.pack(
            MAGIC, self.version, self.kind, 0, self.cluster_id, self.from_id, self.to_id
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Hello:
        magic, version, kind, _, cluster_id, from_id, to_id = HELLO.unpack(data)
        if magic != MAGIC:
            raise ProtocolError("not a petcd peer connection (bad magic)")
        return cls(version, kind, cluster_id, from_id, to_id)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    cluster_id: int
    member_id: int
    reason: str = ""

    def encode(self) -> bytes:
        reason = self.reason.encode()[:0xFFFF]
        return REPLY.pack(self.status, 0, len(reason), self.cluster_id, self.member_id) + reason


def encode_snap_result(ok: bool, reason: str = "") -> bytes:
    raw = reason.encode()[:0xFFFF]
    return SNAP_RESULT.pack(0 if ok else 1, len(raw)) + raw
