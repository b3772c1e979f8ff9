"""Netlink message framing shared by the rtnetlink, NFLOG and nf_tables sockets. Pure, and
never raises on garbage: parsing stops at the first message or attribute that does not fit."""

from __future__ import annotations

import struct

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ATTR = struct.Struct("=HH")
_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000


def _aligned(length: int) -> int:
    return (length + 3) & ~3


def message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + payload


def attr(kind: int, payload: bytes) -> bytes:
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, sequence, body) of each whole message in ``data``."""
    found, offset = [], 0
    while offset + HEADER.size <= len(data):
        length, kind, _, seq, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            break
        found.append((kind, seq, data[offset + HEADER.size : offset + length]))
        offset += _aligned(length)
    return found


def attributes(body: bytes, offset: int) -> dict[int, bytes]:
    """The attributes of a message body from ``offset`` on (past its fixed header)."""
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(body):
        length, kind = _ATTR.unpack_from(body, offset)
        if length < _ATTR.size or offset + length > len(body):
            break
        found[kind & _TYPE_MASK] = body[offset + _ATTR.size : offset + length]
        offset += _aligned(length)
    return found


def ack_errors(data: bytes) -> dict[int, int]:
    """Sequence number → errno (0: success) of each acknowledgement in ``data``."""
    return {seq: -struct.unpack_from("=i", body)[0]
            for kind, seq, body in messages(data) if kind == NLMSG_ERROR and len(body) >= 4}
