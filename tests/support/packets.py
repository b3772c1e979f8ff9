"""Raw IP packets for unit tests of the decoder and the gate: what a capture socket returns."""

from __future__ import annotations

import struct
from ipaddress import ip_address

from knockgate.client.knock import tcp_segment
from knockgate.model import IPAddress, TcpFlag

SRC4, DST4 = ip_address("10.201.0.2"), ip_address("10.201.0.1")
SRC6, DST6 = ip_address("fd00:201::2"), ip_address("fd00:201::1")


def ipv4(proto: int, body: bytes, src: IPAddress = SRC4, dst: IPAddress = DST4,
         frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, frag, 64, proto, 0,
                       src.packed, dst.packed) + body


def ipv6(next_header: int, body: bytes, src: IPAddress = SRC6, dst: IPAddress = DST6) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), next_header, 64, src.packed,
                       dst.packed) + body


def udp(dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload


def tcp(dport: int, flags: int = TcpFlag.SYN, src: IPAddress = SRC4,
        dst: IPAddress = DST4) -> bytes:
    return tcp_segment(src, dst, 40000, dport, flags, 1)


def knock(frame: str, src: IPAddress = SRC4, dst: IPAddress = DST4) -> bytes:
    """The IPv4 packet of a ``tcp:PORT`` (SYN) or ``udp:PORT`` knock."""
    proto, port = frame.split(":")
    if proto == "udp":
        return ipv4(17, udp(int(port)), src, dst)
    return ipv4(6, tcp(int(port), TcpFlag.SYN, src, dst), src, dst)
