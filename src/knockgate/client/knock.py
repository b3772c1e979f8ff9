"""Knock senders. TCP SYN knocks use a non-blocking connect (no root needed), UDP knocks a
datagram, and TCP knocks with other flags a raw packet (root)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Sequence
from ipaddress import ip_address

from knockgate.core.kinds import format_frame
from knockgate.errors import KnockgateError
from knockgate.model import Frame, IPAddress, TcpFlag

_IPV6_CHECKSUM = 7


def _literal(host: str) -> IPAddress | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def resolve(host: str, family: int = socket.AF_UNSPEC) -> IPAddress:
    """``host`` itself if it is an address of ``family`` (or of any, for AF_UNSPEC), else the
    resolver's first answer. Literals skip the resolver, whose first call costs ~2 ms of
    start-up (the IDNA codec, the C library's set-up); scoped ones ("fe80::1%eth0") do not,
    as the resolver's answer drops the scope."""
    literal = None if "%" in host else _literal(host)
    if literal is not None and family in (socket.AF_UNSPEC, _family(literal)):
        return literal
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise KnockgateError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    return ip_address(str(infos[0][4][0]).split("%")[0])


def _family(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def connect_can_send(frame: Frame) -> bool:
    """True when the SYN of a plain connect() matches the frame, so no raw socket is needed."""
    return frame.proto == "tcp" and frame.matches("tcp", frame.port, TcpFlag.SYN)


def send_frame(address: IPAddress, frame: Frame) -> None:
    if frame.proto == "udp":
        with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\0", (str(address), frame.port))
    elif connect_can_send(frame):
        _connect_syn(address, frame.port)
    else:
        _raw_tcp(address, frame)


def _connect_syn(address: IPAddress, port: int) -> None:
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # connect() sends the SYN before it returns EINPROGRESS; closing then sends nothing more.
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            sock.connect((str(address), port))
    finally:
        sock.close()


def _source_for(address: IPAddress) -> IPAddress:
    with socket.socket(_family(address), socket.SOCK_DGRAM) as probe:
        probe.connect((str(address), 9))
        return ip_address(probe.getsockname()[0].split("%")[0])


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_segment(source: IPAddress, address: IPAddress, sport: int, dport: int,
                flags: int, seq: int) -> bytes:
    """A bare 20-byte TCP header; checksummed here for IPv4, by the kernel for IPv6."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 64240, 0, 0)
    if address.version == 6:
        return header
    pseudo = source.packed + address.packed + struct.pack("!BBH", 0, socket.IPPROTO_TCP,
                                                          len(header))
    checksum = _checksum(pseudo + header)
    return header[:16] + struct.pack("!H", checksum) + header[18:]


def _raw_tcp(address: IPAddress, frame: Frame) -> None:
    try:
        sock = socket.socket(_family(address), socket.SOCK_RAW, socket.IPPROTO_TCP)
    except PermissionError as exc:
        raise KnockgateError(
            f"{format_frame(frame)} needs a raw socket: run as root (plain SYN and UDP knocks "
            "do not)"
        ) from exc
    with sock:
        if address.version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_CHECKSUM, 16)
        sport = 1024 + int.from_bytes(os.urandom(2), "big") % 64000
        seq = int.from_bytes(os.urandom(4), "big")
        segment = tcp_segment(_source_for(address), address, sport, frame.port,
                              frame.flags_value, seq)
        sock.sendto(segment, (str(address), 0))


def knock(address: IPAddress, frames: Sequence[Frame], delay_ms: float = 0) -> None:
    for index, frame in enumerate(frames):
        if index and delay_ms:
            time.sleep(delay_ms / 1000)
        send_frame(address, frame)


def send_datagram(address: IPAddress, port: int, payload: bytes) -> None:
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, (str(address), port))
