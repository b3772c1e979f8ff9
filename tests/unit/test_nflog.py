import socket
import struct
from ipaddress import ip_address

from hypothesis import given
from hypothesis import strategies as st

from knockgate.io.nflog import LogEvent, ack_error, bind_message, parse_log_messages

PACKET_TYPE = (4 << 8) | 0
IPV4_HEADER = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 201, 0, 2, 10, 201, 0, 1])
IPV6_HEADER = (bytes([0x60, 0, 0, 0, 0, 20, 6, 64]) + ip_address("fd00:201::2").packed
               + ip_address("fd00:201::1").packed)


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(body: bytes, kind: int = PACKET_TYPE, seq: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def logged(family: int, payload: bytes, prefix: bytes | None = b"kg:ssh\0") -> bytes:
    attrs = attr(1, struct.pack("!HBB", 0x0800, 1, 0)) + attr(9, payload)
    if prefix is not None:
        attrs = attr(10, prefix) + attrs
    return message(struct.pack("=BBH", family, 0, socket.htons(27495)) + attrs)


def test_ipv4_and_ipv6_events_in_one_datagram():
    data = logged(socket.AF_INET, IPV4_HEADER + b"tcp") + logged(socket.AF_INET6, IPV6_HEADER)
    assert parse_log_messages(data) == [
        LogEvent("kg:ssh", ip_address("10.201.0.2"), IPV4_HEADER + b"tcp"),
        LogEvent("kg:ssh", ip_address("fd00:201::2"), IPV6_HEADER),
    ]


def test_nested_flag_bits_in_attribute_types_are_ignored():
    body = (struct.pack("=BBH", socket.AF_INET, 0, 0) + attr(10 | 0x8000, b"kg:a\0")
            + attr(9 | 0x4000, IPV4_HEADER))
    assert parse_log_messages(message(body)) == [
        LogEvent("kg:a", ip_address("10.201.0.2"), IPV4_HEADER)]


def test_missing_prefix_is_empty_and_unterminated_prefix_is_read_whole():
    assert parse_log_messages(logged(socket.AF_INET, IPV4_HEADER, None))[0].prefix == ""
    assert parse_log_messages(logged(socket.AF_INET, IPV4_HEADER, b"kg:x"))[0].prefix == "kg:x"


def test_bad_messages_are_skipped_not_fatal():
    good = logged(socket.AF_INET, IPV4_HEADER)
    skipped = [
        logged(socket.AF_INET, IPV4_HEADER[:19]),          # header cut short
        logged(socket.AF_INET6, IPV4_HEADER),              # family and version disagree
        logged(socket.AF_INET, IPV6_HEADER),
        logged(socket.AF_INET6, IPV6_HEADER[:39]),
        logged(7, IPV4_HEADER),                            # not an IP family
        logged(socket.AF_INET, b""),                       # no packet copied
        message(struct.pack("=i", 0) + b"\0" * 16, kind=2),  # an acknowledgement
        message(b"\x02"),                                  # body shorter than nfgenmsg
    ]
    for bad in skipped:
        assert parse_log_messages(bad + good) == parse_log_messages(good), bad


def test_garbage_after_a_good_message_keeps_the_good_one():
    good = logged(socket.AF_INET, IPV4_HEADER)
    assert len(parse_log_messages(good + b"\xff" * 7)) == 1
    assert len(parse_log_messages(good + struct.pack("=IHHII", 9999, PACKET_TYPE, 0, 0, 0))) == 1
    assert parse_log_messages(struct.pack("=IHHII", 3, PACKET_TYPE, 0, 0, 0) + good) == []


def test_overlong_attribute_stops_the_attribute_walk():
    body = (struct.pack("=BBH", socket.AF_INET, 0, 0) + attr(9, IPV4_HEADER)
            + struct.pack("=HH", 200, 10) + b"kg:")
    assert parse_log_messages(message(body)) == [
        LogEvent("", ip_address("10.201.0.2"), IPV4_HEADER)]


def test_bind_message_layout():
    data = bind_message(27495, seq=9, copy_range=64)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
    assert (length, kind, flags, seq) == (len(data), (4 << 8) | 1, 0x1 | 0x4, 9)
    assert data[16:20] == struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(27495))
    assert attr(1, b"\x01") in data                                   # NFULNL_CFG_CMD_BIND
    assert attr(2, struct.pack("!IBB", 64, 2, 0)) in data             # copy 64 bytes of packet
    assert attr(5, struct.pack("!I", 1)) in data                      # deliver each packet


def test_ack_error():
    ack = message(struct.pack("=i", -16) + b"\0" * 16, kind=2, seq=5)
    assert ack_error(ack, 5) == 16
    assert ack_error(ack, 6) is None
    assert ack_error(message(struct.pack("=i", 0), kind=2, seq=1), 1) == 0
    assert ack_error(b"\x01\x02", 1) is None


@given(st.binary(max_size=400))
def test_hostile_bytes_never_raise(data):
    for event in parse_log_messages(data):  # whatever parses names the source its packet has
        offset = 12 if event.source.version == 4 else 8
        assert event.packet[offset:offset + len(event.source.packed)] == event.source.packed


@given(st.integers(0, 255), st.binary(max_size=80), st.binary(max_size=60),
       st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=20)), max_size=4))
def test_hostile_packet_messages_never_raise(family, payload, prefix, extra):
    attrs = attr(9, payload) + attr(10, prefix) + b"".join(attr(k, v) for k, v in extra)
    data = message(struct.pack("=BBH", family, 0, 0) + attrs)
    for cut in (len(data), len(data) // 2, 17):
        parse_log_messages(data[:cut])
    ack_error(data, 0)
