import itertools
import struct
from ipaddress import ip_address

from hypothesis import given
from hypothesis import strategies as st

from knockgate.io.nfnetlink import concat_key, grant_batch
from knockgate.io.nlwire import ack_errors as acknowledgement_errors


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    found, offset = [], 0
    while offset < len(data):
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, offset)
        found.append((kind, flags, seq, data[offset + 16 : offset + length]))
        offset += (length + 3) & ~3
    return found


def test_grant_batch_is_begin_add_delete_add_end():
    batch, expected = grant_batch(itertools.count(100), "knockgate", "ssh_v4",
                                  [ip_address("10.201.0.2").packed], 30000)
    parsed = messages(batch)
    assert [kind for kind, *_ in parsed] == [0x10, (10 << 8) | 12, (10 << 8) | 14,
                                            (10 << 8) | 12, 0x11]
    assert [seq for _, _, seq, _ in parsed] == [100, 101, 102, 103, 104]
    assert expected == [101, 102, 103]
    last_add = parsed[3][3]
    assert b"knockgate\0" in last_add and b"ssh_v4\0" in last_add
    assert bytes([10, 201, 0, 2]) in last_add
    assert struct.pack("!Q", 30000) in last_add
    assert struct.pack("!Q", 30000) not in parsed[1][3]  # the first add carries no timeout
    assert all(flags & 0x4 for _, flags, _, _ in parsed[1:4])  # every element op is acked


def test_ipv6_key_is_sixteen_bytes():
    batch, _ = grant_batch(itertools.count(), "knockgate", "ssh_v6",
                           [ip_address("fd00:201::2").packed], 1500)
    assert ip_address("fd00:201::2").packed in batch


def test_concatenated_keys_pad_every_field_to_four_bytes():
    assert concat_key(ip_address("10.0.0.1"), "tcp", 22) == bytes(
        [10, 0, 0, 1, 6, 0, 0, 0, 0, 22, 0, 0])
    assert len(concat_key(ip_address("fd00::1"), "udp", 1194)) == 24


def test_one_transaction_for_several_ports():
    keys = [concat_key(ip_address("10.0.0.1"), "tcp", port) for port in (22, 443)]
    batch, expected = grant_batch(itertools.count(), "knockgate", "spa_v4", keys, 1000)
    assert len(expected) == 6
    assert len(messages(batch)) == 8


def ack(seq: int, code: int) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", -code) + bytes(16)


def test_acknowledgements():
    assert acknowledgement_errors(ack(5, 0) + ack(6, 2)) == {5: 0, 6: 2}


@given(st.binary(max_size=200))
def test_acknowledgement_parser_never_raises(data):
    acknowledgement_errors(data)
