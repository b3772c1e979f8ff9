"""Any bytes either verify or raise InvalidMessage; nothing else escapes ``open_at``."""

import struct

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import example, given
from hypothesis import strategies as st

from knockgate.core.spa import (
    PACKET_SIZE,
    SpaKey,
    SpaRequest,
    VerifiedRequest,
    make_keyring,
    open_at,
    seal_at,
)
from knockgate.errors import InvalidMessage

ALICE = SpaKey("alice", bytes(range(32)))
KEYRING = make_keyring([ALICE])
NOW = 1_700_000_000
NONCE = bytes(12)
VALID = seal_at(key=ALICE, now=NOW, nonce=NONCE, request=SpaRequest(None, (("tcp", 22),)))


def outcome(packet: bytes) -> VerifiedRequest | str:
    try:
        return open_at(unverified_packet=packet, now=NOW, max_age=30, keyring=KEYRING)
    except InvalidMessage as exc:
        return exc.reason


def authentic(body: bytes) -> bytes:
    """A packet that authenticates whatever its body says, built from the documented layout."""
    header = struct.pack(">B8sQ12s", 1, ALICE.key_id, NOW, NONCE)
    return header + ChaCha20Poly1305(ALICE.secret).encrypt(NONCE, body, header)


@given(st.binary(max_size=2 * PACKET_SIZE))
@example(b"")
@example(VALID[:29])
def test_arbitrary_bytes(packet: bytes) -> None:
    """Bytes nobody sealed are refused, by the cheapest check that applies: a forgery would
    need the key."""
    got = outcome(packet)
    if packet == VALID:
        assert isinstance(got, VerifiedRequest)
    elif len(packet) != PACKET_SIZE or packet[:1] != VALID[:1]:
        assert got in ("short", "long", "version")
    elif packet[1:9] != ALICE.key_id:
        assert got == "unknown key"
    else:
        assert got == "auth"


@given(st.binary(min_size=PACKET_SIZE - 9, max_size=PACKET_SIZE - 9))
def test_arbitrary_bytes_behind_a_known_key_id_fail_authentication(rest: bytes) -> None:
    assert outcome(VALID[:9] + rest) == "auth"


@given(st.data())
def test_mutated_valid_packets_are_rejected(data: st.DataObject) -> None:
    packet = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(packet)))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if edit == "flip" and index < len(packet):
            packet[index] ^= data.draw(st.integers(1, 255))
        elif edit == "insert":
            packet.insert(index, data.draw(st.integers(0, 255)))
        elif edit == "delete" and index < len(packet):
            del packet[index]
        elif edit == "truncate":
            del packet[index:]
    result = outcome(bytes(packet))
    assert isinstance(result, VerifiedRequest) == (bytes(packet) == VALID)


@st.composite
def _near_valid_bodies(draw: st.DrawFn) -> bytes:
    """Bodies one or two fields away from valid, to reach every branch of the decoder."""
    kind = draw(st.sampled_from([0, 4, 6, 5]))
    address = draw(st.binary(min_size=16, max_size=16)
                   | st.binary(min_size=4, max_size=4).map(lambda v4: v4 + bytes(12))
                   | st.just(bytes(16)))
    action = draw(st.sampled_from([0, 0, 0, 1, 255]))
    ports = draw(st.lists(st.builds(struct.pack, st.just(">BH"), st.sampled_from([6, 17, 6, 17, 1]),
                                    st.integers(0, 0xFFFF)), max_size=17))
    count = len(ports) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    slots = b"".join(ports)[:48]
    return struct.pack(">B16sBB48s", kind, address, action, max(count, 0), slots)


@given(st.binary(min_size=67, max_size=67) | _near_valid_bodies())
@example(bytes.fromhex("00" * 17 + "0001" + "060016") + bytes(45))
def test_authentic_bodies_decode_canonically_or_are_malformed(body: bytes) -> None:
    result = outcome(authentic(body))
    if isinstance(result, str):
        assert result == "malformed body"
    else:  # one request, one encoding: sealing it again gives back the same bytes
        assert seal_at(key=ALICE, now=NOW, nonce=NONCE, request=result.request) == authentic(body)


_PORTS = st.lists(st.tuples(st.sampled_from(["tcp", "udp"]), st.integers(1, 65535)),
                  min_size=1, max_size=16, unique=True).map(tuple)
_TARGETS = st.none() | st.ip_addresses().filter(
    lambda a: not (a.is_unspecified or a.is_multicast))
# action given explicitly: builds() fills every field of a NamedTuple, defaults or not.
_REQUESTS = (st.builds(SpaRequest, _TARGETS, _PORTS, st.none())
             | st.builds(SpaRequest, _TARGETS, st.just(()), st.integers(1, 255)))


@given(_REQUESTS, st.binary(min_size=12, max_size=12), st.floats(0, 2**40))
def test_every_request_round_trips(request: SpaRequest, nonce: bytes, now: float) -> None:
    packet = seal_at(key=ALICE, now=now, nonce=nonce, request=request)
    verified = open_at(unverified_packet=packet, now=now, max_age=1, keyring=KEYRING)
    assert verified.request == request
