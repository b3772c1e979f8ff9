import struct

from hypothesis import given
from hypothesis import strategies as st

from knockgate.core.decode import LinkType, decode
from knockgate.model import TcpFlag
from tests.support.packets import DST4, SRC4, SRC6, ipv4, ipv6, tcp, udp


def test_ipv4_tcp():
    pkt = decode(ipv4(6, tcp(7000, TcpFlag.SYN)))
    assert pkt is not None
    assert (pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport, pkt.flags) == (
        SRC4, DST4, "tcp", 40000, 7000, TcpFlag.SYN)


def test_ipv4_udp_payload():
    pkt = decode(ipv4(17, udp(8000, b"hello")))
    assert pkt is not None and pkt.proto == "udp" and pkt.payload == b"hello"


def test_ipv6_tcp_and_extension_header():
    assert decode(ipv6(6, tcp(9000, TcpFlag.FIN))).flags == TcpFlag.FIN
    hop_by_hop = bytes([6, 0]) + bytes(6)  # next header TCP, length 8
    pkt = decode(ipv6(0, hop_by_hop + tcp(9000, TcpFlag.SYN)))
    assert pkt is not None and pkt.dport == 9000 and pkt.src == SRC6


def test_ethernet_vlan_and_cooked_links():
    frame = ipv4(17, udp(8000))
    ether = bytes(12) + b"\x08\x00" + frame
    vlan = bytes(12) + b"\x81\x00\x00\x05\x08\x00" + frame
    cooked = bytes(14) + b"\x08\x00" + frame
    for data, link in ((ether, LinkType.ETHERNET), (vlan, LinkType.ETHERNET),
                       (cooked, LinkType.LINUX_SLL)):
        pkt = decode(data, link)
        assert pkt is not None and pkt.dport == 8000
    assert decode(bytes(12) + b"\x08\x06" + frame, LinkType.ETHERNET) is None  # ARP


def test_later_fragments_and_other_protocols_are_ignored():
    assert decode(ipv4(6, tcp(7000, TcpFlag.SYN), frag=5)) is None
    assert decode(ipv4(1, b"\x08\x00" + bytes(6))) is None  # ICMP
    assert decode(ipv6(44, bytes(8) + tcp(7000, 2))) is None  # fragment header


def test_truncated_and_lying_lengths():
    good = ipv4(6, tcp(7000, TcpFlag.SYN))
    for cut in range(len(good)):
        assert decode(good[:cut]) is None
    bad_total = good[:2] + struct.pack("!H", 1000) + good[4:]
    assert decode(bad_total) is None
    bad_udp = ipv4(17, struct.pack("!HHHH", 1, 8000, 200, 0) + b"x")
    assert decode(bad_udp) is None
    bad_offset = bytearray(ipv4(6, tcp(7000, 2)))
    bad_offset[20 + 12] = 0xF0  # data offset 60 > segment
    assert decode(bytes(bad_offset)) is None


@given(st.binary(max_size=200), st.sampled_from(list(LinkType)))
def test_garbage_never_raises(data, link):
    decode(data, link)


@given(st.binary(min_size=1, max_size=80))
def test_mutated_headers_never_raise(tail):
    for head in (b"\x45", b"\x46", b"\x60", b"\x4f"):
        decode(head + tail)


def test_knock_view_agrees_with_the_full_decoder():
    from knockgate.core.decode import decode_knock

    for data in (ipv4(6, tcp(7000, TcpFlag.SYN | TcpFlag.ACK)), ipv4(17, udp(8000, b"x")),
                 ipv6(6, tcp(9000, TcpFlag.FIN)), ipv6(0, bytes([17, 0]) + bytes(6) + udp(5))):
        full, knock = decode(data), decode_knock(data)
        assert full is not None and knock is not None
        assert knock == (full.src.packed, full.dst.packed, full.proto, full.dport, full.flags)
    for bad in (b"", ipv4(6, tcp(7000, 2), frag=5), ipv4(1, bytes(8)),
                ipv4(6, tcp(7000, 2))[:30], ipv4(17, bytes(4)),
                ipv4(17, struct.pack("!HHHH", 1, 8000, 200, 0))):
        assert decode_knock(bad) is None


@given(st.binary(max_size=120))
def test_knock_view_never_raises_and_agrees(data):
    from knockgate.core.decode import decode_knock

    knock, full = decode_knock(data), decode(data)
    assert (knock is None) == (full is None)
    if knock is not None and full is not None:
        assert knock == (full.src.packed, full.dst.packed, full.proto, full.dport, full.flags)


def test_datagram_view_agrees_with_the_full_decoder():
    from knockgate.core.decode import decode_datagram, decode_knock

    for data in (ipv4(17, udp(62201, b"spa" * 40)), ipv4(17, udp(1, b"")),
                 ipv4(17, udp(2, b"padded") + b"\0" * 6), ipv6(17, udp(62201, b"six")),
                 ipv4(6, tcp(7000, TcpFlag.SYN))):
        knock = decode_knock(data)
        assert knock is not None
        assert decode_datagram(data, knock) == decode(data)


@given(st.binary(max_size=120))
def test_datagram_view_of_any_accepted_knock_agrees(data):
    from knockgate.core.decode import decode_datagram, decode_knock

    knock = decode_knock(data)
    if knock is not None:
        assert decode_datagram(data, knock) == decode(data)
