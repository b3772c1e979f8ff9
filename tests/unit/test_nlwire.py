import struct

from hypothesis import given
from hypothesis import strategies as st

from knockgate.io.netlink import parse_messages
from knockgate.io.nlwire import ack_errors, attr, attributes, message, messages, nested


def test_round_trip_and_alignment():
    body = b"\x02\x00\x00\x00" + attr(1, b"abc") + nested(3, attr(1, b"\x01\x02"))
    data = message(20, 0, 7, body) + message(3, 0, 8, b"")
    (kind, seq, got), (done, _, _) = messages(data)
    assert (kind, seq, got, done) == (20, 7, body, 3)
    parsed = attributes(got, 4)
    assert parsed[1] == b"abc" and attributes(parsed[3], 0) == {1: b"\x01\x02"}


def test_ack_errors():
    ack = message(2, 0, 5, struct.pack("=i", -17) + bytes(16)) + message(2, 0, 6, bytes(20))
    assert ack_errors(ack) == {5: 17, 6: 0}


def test_rtnetlink_address_messages():
    ifaddr = struct.pack("=BBBBI", 2, 24, 0, 0, 3)
    data = message(20, 0, 1, ifaddr + attr(2, bytes([10, 201, 0, 1])))
    assert [(kind, str(address)) for kind, address in parse_messages(data)] == [
        (20, "10.201.0.1")]


@given(st.binary(max_size=200), st.integers(0, 8))
def test_garbage_never_raises(data, offset):
    messages(data)
    attributes(data, offset)
    ack_errors(data)
    list(parse_messages(data))
