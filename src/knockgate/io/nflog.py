"""NFLOG (nfnetlink_log) listener: how the daemon learns what the kernel's rules saw.

The nftables rule that opens a kernel door logs the packet to one NFLOG group with the prefix
``kg:<door>``; the scan guard and the kernel's first stage of userspace doors log there too. We
bind a NETLINK_NETFILTER socket to that group, ask for whole packets (a knock handed to the
daemon is decoded from its copy) and a queue threshold of one packet, so every event arrives at
once instead of in batches flushed each second.

We send no NFULNL_CFG_CMD_PF_BIND. Old kernels only handed packets to nfnetlink_log for families
bound that way; nftables' log statement names its logger (NF_LOG_TYPE_ULOG) so the binding is not
consulted, and binding would make nfnetlink_log the namespace's default logger for unrelated log
calls (conntrack's, for one).
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from knockgate.errors import CaptureError
from knockgate.io.nlwire import ack_errors, attr, attributes, message, messages
from knockgate.io.sockopts import grow_receive_buffer
from knockgate.model import IPAddress

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ULOG = 4
_NFULNL_MSG_PACKET = 0
_NFULNL_MSG_CONFIG = 1
_NFULA_PAYLOAD = 9
_NFULA_PREFIX = 10
_NFULA_CFG_CMD = 1
_NFULA_CFG_MODE = 2
_NFULA_CFG_QTHRESH = 5
_NFULNL_CFG_CMD_BIND = 1
_NFULNL_COPY_PACKET = 2
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NFGENMSG = struct.Struct("=BBH")
_PACKET = (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_PACKET
_CONFIG = (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_CONFIG
# Whole packets: a knock handed over by core/nft/first_stage.py is decoded from its copy.
DEFAULT_COPY_RANGE = 0xFFFF
# Room for bursts: handed-over knocks, openings and scan resets must not be dropped.
_RCVBUF = 4 * 1024 * 1024
# Datagrams the daemon reads per turn of its loop, so a flood of events cannot
# starve the rest of the event loop.
MAX_READS = 256


class LogEvent(NamedTuple):
    prefix: str
    source: IPAddress
    packet: bytes  # the logged packet from its IP header on, as far as it was copied


def bind_message(group: int, seq: int, copy_range: int = DEFAULT_COPY_RANGE) -> bytes:
    """One config request: bind ``group``, copy ``copy_range`` bytes, deliver every packet."""
    body = (
        _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(group))
        + attr(_NFULA_CFG_CMD, bytes([_NFULNL_CFG_CMD_BIND]))
        + attr(_NFULA_CFG_MODE, struct.pack("!IBB", copy_range, _NFULNL_COPY_PACKET, 0))
        + attr(_NFULA_CFG_QTHRESH, struct.pack("!I", 1))
    )
    return message(_CONFIG, _NLM_F_REQUEST | _NLM_F_ACK, seq, body)


def ack_error(data: bytes, seq: int) -> int | None:
    """The errno the kernel answered request ``seq`` with (0: done), or None if not in ``data``."""
    return ack_errors(data).get(seq)


def _source(family: int, packet: bytes) -> IPAddress | None:
    version = packet[0] >> 4 if packet else 0
    if family == socket.AF_INET and version == 4 and len(packet) >= 20:
        return IPv4Address(packet[12:16])
    if family == socket.AF_INET6 and version == 6 and len(packet) >= 40:
        return IPv6Address(packet[8:24])
    return None


def parse_log_messages(data: bytes) -> list[LogEvent]:
    """Pure: the prefix, source and packet of each logged packet in one datagram. Never raises; a
    message that is not a packet, or whose IP header is cut or disagrees with its family, is
    skipped."""
    events = []
    for kind, _, body in messages(data):
        if kind != _PACKET or len(body) < _NFGENMSG.size:
            continue
        attrs = attributes(body, _NFGENMSG.size)
        packet = attrs.get(_NFULA_PAYLOAD, b"")
        source = _source(body[0], packet)
        if source is None:
            continue
        prefix = attrs.get(_NFULA_PREFIX, b"").split(b"\0", 1)[0]
        events.append(LogEvent(prefix.decode("utf-8", errors="replace"), source, packet))
    return events


class NflogListener:
    """One NFLOG group, read without blocking; hand ``fileno()`` to the event loop."""

    def __init__(self, group: int, copy_range: int = DEFAULT_COPY_RANGE,
                 timeout: float = 2.0) -> None:
        self.group = group
        self.lost = 0  # times the socket overflowed and events were dropped
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        try:
            self._sock.bind((0, 0))
            grow_receive_buffer(self._sock, _RCVBUF)
            self._sock.settimeout(timeout)
            self._bind(group, copy_range)
            self._sock.setblocking(False)
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"cannot listen on NFLOG group {group}: {exc.strerror or exc}"
                               ) from exc

    def _bind(self, group: int, copy_range: int) -> None:
        self._sock.send(bind_message(group, 1, copy_range))
        while True:
            code = ack_error(self._sock.recv(65536), 1)
            if code == 0:
                return
            if code is not None:
                hint = " (another process listens on it)" if code == errno.EBUSY else ""
                raise OSError(code, f"{errno.errorcode.get(code, code)}{hint}")

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[LogEvent] | None:
        """The events of one datagram, or None when none is waiting. After an overflow
        (``lost`` grows) the events that did not fit are gone: an empty list."""
        try:
            return parse_log_messages(self._sock.recv(65536))
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.lost += 1
            return []

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NflogListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
