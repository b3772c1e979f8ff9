import struct
from ipaddress import ip_address

from knockgate.client.knock import connect_can_send, tcp_segment
from knockgate.core.kinds import parse_frame


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071's sum, written differently from the client's (modulo 0xFFFF, no carry loop),
    so the check does not verify the client's checksum with itself."""
    return sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)) % 0xFFFF


def test_ipv4_tcp_checksum_verifies():
    src, dst = ip_address("10.201.0.2"), ip_address("10.201.0.1")
    segment = tcp_segment(src, dst, 12345, 7000, 0x29, 99)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(segment))
    assert segment[16:18] != b"\0\0"
    assert ones_complement_sum(pseudo + segment) == 0
    assert segment == bytes.fromhex("30391b5800000063000000005029faf053420000")
    assert segment[13] == 0x29 and struct.unpack("!H", segment[2:4])[0] == 7000


def test_which_frames_need_raw_sockets():
    assert connect_can_send(parse_frame("tcp:1"))
    assert connect_can_send(parse_frame("tcp:1:syn,!ack"))
    assert connect_can_send(parse_frame("tcp:1:i"))
    assert not connect_can_send(parse_frame("tcp:1:x"))
    assert not connect_can_send(parse_frame("udp:1"))
