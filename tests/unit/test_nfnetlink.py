import errno
import socket
import struct
from ipaddress import ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from knockgate.core.nft.grants import concat_key
from knockgate.errors import FirewallError
from knockgate.io import nfnetlink
from knockgate.io.nfnetlink import SetElementWriter
from knockgate.io.nlwire import HEADER, attr, attributes, message, nested
from knockgate.io.nlwire import ack_errors as acknowledgement_errors

BEGIN, END = 0x10, 0x11
NEW, DEL = (10 << 8) | 12, (10 << 8) | 14
REQUEST, ACK, CREATE = 0x1, 0x4, 0x400


def headers(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(length, type, flags, sequence, body) of each message of a batch."""
    found, offset = [], 0
    while offset < len(data):
        length, kind, flags, seq, _ = HEADER.unpack_from(data, offset)
        found.append((length, kind, flags, seq, data[offset + HEADER.size : offset + length]))
        offset += (length + 3) & ~3
    assert offset == len(data)
    return found


def ack(seq: int, code: int) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", -code) + bytes(16)


class FakeKernel:
    """An nfnetlink socket: an error for every element message when ``error`` is set, an ack
    for every message that asks for one, all queued before send() returns."""

    def __init__(self) -> None:
        self.error = 0
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []
        self.recvs = 0

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        for _, kind, flags, seq, _ in headers(data):
            if kind in (NEW, DEL) and self.error:
                self.queue.append(ack(seq, self.error))
            elif flags & ACK:
                self.queue.append(ack(seq, 0))
        return len(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.recvs += 1
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return self.queue.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    fake = FakeKernel()
    monkeypatch.setattr(nfnetlink, "_open_socket", lambda: fake)
    return fake


def element(body: bytes) -> dict[int, bytes]:
    """The attributes of the one element of a NEWSETELEM/DELSETELEM body."""
    elements = attributes(body, 4)[3]  # past the nfgenmsg; NFTA_SET_ELEM_LIST_ELEMENTS
    return attributes(attributes(elements, 0)[1], 0)  # NFTA_LIST_ELEM


def test_a_grant_is_begin_add_delete_add_end_acked_once(kernel):
    SetElementWriter("knockgate").grant("ssh_v4", [ip_address("10.201.0.2").packed], 30000)
    (batch,) = kernel.sent
    parsed = headers(batch)
    assert [kind for _, kind, *_ in parsed] == [BEGIN, NEW, DEL, NEW, END]
    first = parsed[0][3]
    assert [seq for *_, seq, _ in parsed] == list(range(first, first + 5))
    assert [flags for _, _, flags, _, _ in parsed] == [
        REQUEST, REQUEST | CREATE, REQUEST, REQUEST | CREATE | ACK, REQUEST]
    assert parsed[0][4] == parsed[4][4] == struct.pack("=BBH", 0, 0, socket.htons(10))
    for _, _, _, _, body in parsed[1:4]:
        assert body[:4] == struct.pack("=BBH", 1, 0, 0)  # NFPROTO_INET
        assert attributes(body, 4)[1] == b"knockgate\0"
        assert attributes(body, 4)[2] == b"ssh_v4\0"
        assert attributes(element(body)[1], 0) == {1: bytes([10, 201, 0, 2])}
    assert 4 not in element(parsed[1][4]) and 4 not in element(parsed[2][4])
    assert element(parsed[3][4])[4] == struct.pack("!Q", 30000)
    assert kernel.recvs == 1


def expected_batch(seq: int, set_name: str, key: bytes, timeout_ms: int) -> bytes:
    """The batch built field by field with the nlwire helpers, as the kernel reads it."""
    def element_message(kind: int, flags: int, offset: int, timeout: bytes) -> bytes:
        value = nested(1, attr(1, key)) + (attr(4, timeout) if timeout else b"")
        body = (attr(1, b"knockgate\0") + attr(2, set_name.encode() + b"\0")
                + nested(3, nested(1, value)))
        return message(kind, REQUEST | flags, seq + offset, struct.pack("=BBH", 1, 0, 0) + body)

    edge = struct.pack("=BBH", 0, 0, socket.htons(10))
    return (message(BEGIN, REQUEST, seq, edge)
            + element_message(NEW, CREATE, 1, b"")
            + element_message(DEL, 0, 2, b"")
            + element_message(NEW, CREATE | ACK, 3, struct.pack("!Q", timeout_ms))
            + message(END, REQUEST, seq + 4, edge))


@pytest.mark.parametrize("key", [ip_address("10.201.0.2").packed, ip_address("fd00:201::2").packed,
                                 concat_key(ip_address("fd00::1"), "udp", 1194)])
def test_exact_bytes(kernel, key):
    SetElementWriter("knockgate").grant("spa_v6", [key], 1500)
    (batch,) = kernel.sent
    assert batch == expected_batch(headers(batch)[0][3], "spa_v6", key, 1500)


def test_later_grants_splice_their_key_into_the_same_batch(kernel):
    writer = SetElementWriter("knockgate")
    first, second = ip_address("10.0.0.1").packed, ip_address("10.0.0.2").packed
    writer.grant("ssh_v4", [first], 30000)
    writer.grant("ssh_v4", [second], 30000)
    assert kernel.sent[1] == kernel.sent[0].replace(first, second)
    writer.grant("ssh_v4", [second], 45000)
    assert element(headers(kernel.sent[2])[3][4])[4] == struct.pack("!Q", 45000)
    assert kernel.recvs == 3


def test_one_transaction_for_several_ports(kernel):
    keys = [concat_key(ip_address("10.0.0.1"), "tcp", port) for port in (22, 443)]
    SetElementWriter("knockgate").grant("spa_v4", keys, 1000)
    (batch,) = kernel.sent
    parsed = headers(batch)
    assert [kind for _, kind, *_ in parsed] == [BEGIN, NEW, DEL, NEW, NEW, DEL, NEW, END]
    first = parsed[0][3]
    assert [seq for *_, seq, _ in parsed] == list(range(first, first + 8))
    assert [bool(flags & ACK) for _, _, flags, _, _ in parsed] == [False] * 6 + [True, False]
    found = [attributes(element(body)[1], 0)[1] for _, _, _, _, body in parsed[1:7]]
    assert found == [keys[0]] * 3 + [keys[1]] * 3
    assert [4 in element(body) for _, _, _, _, body in parsed[1:7]] == [False, False, True] * 2
    assert kernel.recvs == 1


def test_a_refused_grant_reads_every_reply_and_leaves_the_writer_usable(kernel):
    writer = SetElementWriter("knockgate")
    kernel.error = errno.ENOENT
    with pytest.raises(FirewallError, match="refused the grant in set nope: No such file"):
        writer.grant("nope", [ip_address("10.0.0.1").packed], 1000)
    assert kernel.queue == []
    kernel.error = 0
    writer.grant("ssh_v4", [ip_address("10.0.0.1").packed], 1000)
    assert kernel.queue == []


def test_a_kernel_that_does_not_answer_is_an_error(kernel, monkeypatch):
    monkeypatch.setattr(kernel, "send", lambda data: len(data))
    with pytest.raises(FirewallError, match="no reply"):
        SetElementWriter("knockgate").grant("ssh_v4", [ip_address("10.0.0.1").packed], 1000)


def test_no_keys_sends_nothing(kernel):
    SetElementWriter("knockgate").grant("ssh_v4", [], 1000)
    assert kernel.sent == []


def test_acknowledgements():
    assert acknowledgement_errors(ack(5, 0) + ack(6, 2)) == {5: 0, 6: 2}


@given(st.binary(max_size=200))
def test_acknowledgement_parser_never_raises(data):
    acknowledgement_errors(data)
