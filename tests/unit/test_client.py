import struct
from ipaddress import ip_address

from knockgate.client.knock import _checksum, connect_can_send, tcp_segment
from knockgate.core.kinds import parse_frame


def test_ipv4_tcp_checksum_verifies():
    src, dst = ip_address("10.201.0.2"), ip_address("10.201.0.1")
    segment = tcp_segment(src, dst, 12345, 7000, 0x29, 99)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(segment))
    assert _checksum(pseudo + segment) == 0
    assert segment[13] == 0x29 and struct.unpack("!H", segment[2:4])[0] == 7000


def test_which_frames_need_raw_sockets():
    assert connect_can_send(parse_frame("tcp:1"))
    assert connect_can_send(parse_frame("tcp:1:syn,!ack"))
    assert connect_can_send(parse_frame("tcp:1:i"))
    assert not connect_can_send(parse_frame("tcp:1:x"))
    assert not connect_can_send(parse_frame("udp:1"))
