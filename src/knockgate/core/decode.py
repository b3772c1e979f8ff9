"""Bytes off the wire → Packet. Pure, and never raises on garbage: it returns None.

Link types: Ethernet (with one optional 802.1Q tag), Linux cooked capture (SLL) and raw IP.
The live capture uses SOCK_DGRAM, where the kernel has already removed the link header, so it
decodes as raw IP whatever the interface (Ethernet, PPP, WireGuard); the other two serve pcap
files and tests.
"""

from __future__ import annotations

import enum
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from knockgate.core.kinds import KINDS, ports
from knockgate.model import Packet

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = 0x8100
# IPv6 extension headers we step over to reach TCP/UDP (hop-by-hop, routing, destination opts).
_IPV6_SKIPPABLE = frozenset({0, 43, 60})


class LinkType(enum.IntEnum):
    """pcap's LINKTYPE_* numbers."""

    ETHERNET = 1
    RAW = 101
    LINUX_SLL = 113


class Knock(NamedTuple):
    """The few fields a knock needs, with addresses left as packed bytes: building and hashing
    ipaddress objects costs more than the rest of a packet's handling under a flood."""

    src: bytes
    dst: bytes
    proto: str
    dport: int
    flags: int


_IPV4_FIXED = struct.Struct("!BxH2xHxB2x4s4s")
# The transports knock kinds read, by IP protocol number (core/kinds/).
TRANSPORTS = {number: kind.decode_transport for kind in KINDS for number in kind.IP_PROTOCOLS}


def decode_knock(data: bytes) -> Knock | None:
    """A raw IP packet's knock fields, or None; IPv6 with extension headers goes the long way
    through ``decode``. Never raises on garbage."""
    try:
        if data[0] >> 4 == 4:
            return _ipv4_knock(data)
    except (IndexError, struct.error):
        return None
    return _knock_of(decode(data))


def _knock_of(packet: Packet | None) -> Knock | None:
    if packet is None:
        return None
    return Knock(packet.src.packed, packet.dst.packed, packet.proto, packet.dport, packet.flags)


def _ipv4_knock(data: bytes) -> Knock | None:
    first, total_len, fragment, proto, src, dst = _IPV4_FIXED.unpack_from(data)
    header_len = (first & 0x0F) * 4
    name = ports.IP_PROTOCOLS.get(proto)
    if name is None:  # the fast path is the port kind's; other kinds' transports go the long way
        return _knock_of(decode(data)) if proto in TRANSPORTS else None
    if header_len < 20 or fragment & 0x1FFF or len(data) < total_len:
        return None
    segment = total_len - header_len
    if name == "tcp":
        if segment < 20 or not 20 <= (data[header_len + 12] >> 4) * 4 <= segment:
            return None
        return Knock(src, dst, name, (data[header_len + 2] << 8) | data[header_len + 3],
                     data[header_len + 13])
    udp_len = (data[header_len + 4] << 8) | data[header_len + 5] if segment >= 8 else 0
    if not 8 <= udp_len <= segment:
        return None
    return Knock(src, dst, name, (data[header_len + 2] << 8) | data[header_len + 3], 0)


def decode_datagram(data: bytes, knock: Knock) -> Packet | None:
    """The whole Packet of a UDP ``knock`` that ``decode_knock(data)`` returned (an SPA
    datagram). IPv4 reuses the bounds decode_knock checked; IPv6 takes the long way."""
    if knock.proto != "udp" or len(knock.src) != 4:
        return decode(data)
    header_len = (data[0] & 0x0F) * 4
    udp_len = (data[header_len + 4] << 8) | data[header_len + 5]
    return Packet(IPv4Address(knock.src), IPv4Address(knock.dst), "udp",
                  (data[header_len] << 8) | data[header_len + 1], knock.dport, 0,
                  data[header_len + 8:header_len + udp_len])


def decode(data: bytes, link: LinkType = LinkType.RAW) -> Packet | None:
    try:
        return _decode(memoryview(data), link)
    except (IndexError, ValueError, struct.error):
        return None


def _decode(data: memoryview, link: LinkType) -> Packet | None:
    if link is LinkType.RAW:
        return decode_ip(data)
    if link is LinkType.ETHERNET:
        offset, ethertype = 14, struct.unpack_from("!H", data, 12)[0]
        if ethertype == _ETH_VLAN:
            offset, ethertype = 18, struct.unpack_from("!H", data, 16)[0]
    elif link is LinkType.LINUX_SLL:
        offset, ethertype = 16, struct.unpack_from("!H", data, 14)[0]
    else:
        return None
    if ethertype not in (_ETH_IPV4, _ETH_IPV6):
        return None
    return decode_ip(data[offset:])


def decode_ip(data: memoryview) -> Packet | None:
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return _decode_ipv4(data)
    if version == 6:
        return _decode_ipv6(data)
    return None


def _decode_ipv4(data: memoryview) -> Packet | None:
    header_len = (data[0] & 0x0F) * 4
    total_len = struct.unpack_from("!H", data, 2)[0]
    fragment = struct.unpack_from("!H", data, 6)[0]
    if header_len < 20 or total_len < header_len or len(data) < total_len:
        return None
    if fragment & 0x1FFF:
        return None  # a later fragment carries no ports
    src = IPv4Address(bytes(data[12:16]))
    dst = IPv4Address(bytes(data[16:20]))
    return _decode_l4(data[9], data[header_len:total_len], src, dst)


def _decode_ipv6(data: memoryview) -> Packet | None:
    if len(data) < 40:
        return None
    payload_len = struct.unpack_from("!H", data, 4)[0]
    if len(data) < 40 + payload_len:
        return None
    next_header = data[6]
    src = IPv6Address(bytes(data[8:24]))
    dst = IPv6Address(bytes(data[24:40]))
    body = data[40 : 40 + payload_len]
    while next_header in _IPV6_SKIPPABLE:
        ext_len = (body[1] + 1) * 8
        if ext_len > len(body):
            return None
        next_header, body = body[0], body[ext_len:]
    return _decode_l4(next_header, body, src, dst)


def _decode_l4(
    proto: int, body: memoryview, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address
) -> Packet | None:
    decoder = TRANSPORTS.get(proto)
    fields = decoder(proto, body) if decoder is not None else None
    return Packet(src, dst, *fields) if fields is not None else None
