import base64
import json
import struct
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from knockgate.core import spa
from knockgate.core.spa import (
    PACKET_SIZE,
    SpaKey,
    SpaRequest,
    VerifiedRequest,
    decode_secret,
    generate_secret,
    key_id_for,
    make_keyring,
    open_at,
    seal_at,
)
from knockgate.errors import ConfigError, InvalidMessage

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "spa_v1.json").read_text())
ALICE = SpaKey("alice", bytes(range(32)))
BOB = SpaKey("bob", bytes(range(32, 64)))
KEYRING = make_keyring([ALICE, BOB])
NOW = 1_700_000_000
NONCE = bytes(range(12))
SSH = SpaRequest(None, (("tcp", 22),))


def seal(request: SpaRequest = SSH, now: float = NOW, key: SpaKey = ALICE) -> bytes:
    return seal_at(key=key, now=now, nonce=NONCE, request=request)


def open_(packet: bytes, now: float = NOW, max_age: float = 30) -> VerifiedRequest:
    return open_at(unverified_packet=packet, now=now, max_age=max_age, keyring=KEYRING)


def reason(packet: bytes, now: float = NOW, max_age: float = 30) -> str:
    with pytest.raises(InvalidMessage) as caught:
        open_(packet, now, max_age)
    assert str(caught.value) == "invalid message"  # the reason never reaches the outside
    return caught.value.reason


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [
    SSH,
    SpaRequest(ip_address("192.0.2.1"), (("tcp", 22), ("udp", 53))),
    SpaRequest(ip_address("2001:db8::1"), (("udp", 65535),)),
    SpaRequest(None, (), 1),
    SpaRequest(ip_address("2001:db8::2"), (), 255),
    SpaRequest(None, tuple(("udp", port) for port in range(1, 17))),
], ids=["source", "ipv4", "ipv6", "action", "ipv6-action", "16-ports"])
def test_round_trip(request_: SpaRequest) -> None:
    packet = seal(request_)
    assert len(packet) == PACKET_SIZE == 112
    assert open_(packet) == VerifiedRequest(ALICE.key_id, "alice", NOW, NONCE, request_)


def test_layout_matches_the_protocol_document() -> None:
    packet = seal(SpaRequest(ip_address("192.0.2.1"), (("udp", 53),)), now=NOW + 0.9)
    header = packet[:29]
    assert header == b"\x01" + key_id_for("alice") + struct.pack(">Q", NOW) + NONCE
    body = ChaCha20Poly1305(ALICE.secret).decrypt(NONCE, packet[29:], header)
    assert body == b"\x04" + bytes([192, 0, 2, 1]) + bytes(12) + b"\x00\x01" + b"\x11\x00\x35" \
        + bytes(45)


def test_key_id_is_a_truncated_domain_separated_hash() -> None:
    assert key_id_for("alice") == bytes.fromhex(VECTORS["keys"][0]["key_id"])
    assert len(key_id_for("x")) == 8
    assert key_id_for("alice") != key_id_for("alicf")


# --- rejections -------------------------------------------------------------------------------


def test_empty_and_truncated_packets_are_short() -> None:
    packet = seal()
    assert {reason(packet[:n]) for n in range(PACKET_SIZE)} == {"short"}


def test_oversize_packets_are_long() -> None:
    assert reason(seal() + b"\x00") == "long"
    assert reason(b"\x01" * 65536) == "long"


def test_other_version_is_rejected_before_length() -> None:
    assert reason(b"\x02" + seal()[1:]) == "version"
    assert reason(b"\x00") == "version"


def test_unknown_key_id() -> None:
    stranger = SpaKey("mallory", bytes(32))
    assert reason(seal(key=stranger)) == "unknown key"


def test_wrong_secret_for_a_known_name() -> None:
    impostor = SpaKey("alice", bytes(32))
    assert reason(seal(key=impostor)) == "auth"


def test_any_flipped_bit_is_rejected() -> None:
    packet = seal()
    reasons = set()
    for index in range(len(packet)):
        for bit in range(8):
            tampered = bytearray(packet)
            tampered[index] ^= 1 << bit
            reasons.add(reason(bytes(tampered)))
    assert reasons == {"version", "unknown key", "auth"}


def test_age_window_is_inclusive_at_both_ends() -> None:
    packet = seal()
    assert open_(packet, now=NOW + 30).timestamp == NOW
    assert open_(packet, now=NOW - 30).timestamp == NOW
    assert reason(packet, now=NOW + 30.001) == "stale"
    assert reason(packet, now=NOW - 30.001) == "future"


def test_timestamp_is_floored_to_seconds() -> None:
    assert open_(seal(now=NOW + 0.999)).timestamp == NOW


# --- known-answer vectors ---------------------------------------------------------------------


def _request(raw: dict) -> SpaRequest:
    target = None if raw["target"] is None else ip_address(raw["target"])
    return SpaRequest(target, tuple((proto, port) for proto, port in raw["ports"]), raw["action"])


def _vector_keyring() -> dict[bytes, SpaKey]:
    return make_keyring(SpaKey(k["name"], base64.b64decode(k["secret"])) for k in VECTORS["keys"])


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["comment"])
def test_valid_vectors_both_directions(vector: dict) -> None:
    keyring = _vector_keyring()
    key = next(k for k in keyring.values() if k.name == vector["key"])
    request = _request(vector["request"])
    nonce = bytes.fromhex(vector["nonce"])
    packet = bytes.fromhex(vector["packet"])
    assert seal_at(key=key, now=vector["now"], nonce=nonce, request=request) == packet
    verified = open_at(unverified_packet=packet, now=vector["now"], max_age=VECTORS["max_age"],
                       keyring=keyring)
    assert verified == VerifiedRequest(key.key_id, key.name, vector["timestamp"], nonce, request)


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["comment"])
def test_invalid_vectors(vector: dict) -> None:
    with pytest.raises(InvalidMessage) as caught:
        open_at(unverified_packet=bytes.fromhex(vector["packet"]), now=vector["now"],
                max_age=vector["max_age"], keyring=_vector_keyring())
    assert caught.value.reason == vector["reason"]


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "exactly one"),
    ({"ports": (("tcp", 22),), "action": 1}, "exactly one"),
    ({"action": 0}, "1..255"),
    ({"action": 256}, "1..255"),
    ({"ports": tuple(("tcp", p) for p in range(1, 18))}, "at most 16"),
    ({"ports": (("tcp", 22), ("tcp", 22))}, "twice"),
    ({"ports": (("icmp", 1),)}, "bad port"),
    ({"ports": (("tcp", 0),)}, "bad port"),
    ({"ports": (("udp", 65536),)}, "bad port"),
    ({"ports": [("tcp", 22)]}, "tuple"),
    ({"target": "192.0.2.1", "action": 1}, "IPv4Address"),
    ({"target": ip_address("0.0.0.0"), "action": 1}, "cannot be the source"),
    ({"target": ip_address("ff02::1"), "action": 1}, "cannot be the source"),
])
def test_request_refuses_what_it_cannot_encode(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpaRequest(**kwargs)


def test_same_port_over_tcp_and_udp_is_two_ports() -> None:
    request = SpaRequest(None, (("tcp", 53), ("udp", 53)))
    assert open_(seal(request)).request == request


def test_seal_refuses_bad_nonce_and_time() -> None:
    with pytest.raises(ValueError, match="nonce"):
        seal_at(key=ALICE, now=NOW, nonce=bytes(11), request=SSH)
    with pytest.raises(ValueError, match="time"):
        seal_at(key=ALICE, now=-1, nonce=NONCE, request=SSH)


# --- keys and secrets -------------------------------------------------------------------------


def test_key_repr_hides_the_secret() -> None:
    assert ALICE.secret.hex() not in repr(ALICE)
    assert "secret" not in repr(ALICE)


def test_key_needs_a_name_and_32_bytes() -> None:
    with pytest.raises(ValueError, match="name"):
        SpaKey("", bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        SpaKey("alice", bytes(16))


def test_keyring_is_indexed_by_key_id() -> None:
    assert make_keyring([ALICE, BOB]) == {ALICE.key_id: ALICE, BOB.key_id: BOB}


def test_keyring_refuses_a_name_twice() -> None:
    with pytest.raises(ConfigError, match="'alice' is defined twice"):
        make_keyring([ALICE, SpaKey("alice", bytes(32))])


def test_keyring_refuses_colliding_key_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spa, "key_id_for", lambda name: bytes(8))
    with pytest.raises(ConfigError, match="'alice' and 'bob' have the same key id") as caught:
        make_keyring([SpaKey("alice", bytes(32)), SpaKey("bob", bytes(32))])
    assert caught.value.hint == "rename one of them"


def test_secret_text_round_trip() -> None:
    text = generate_secret(bytes(range(32)))
    assert text == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert decode_secret(f"  {text}\n") == bytes(range(32))


def test_generate_secret_needs_32_bytes() -> None:
    with pytest.raises(ValueError, match="32"):
        generate_secret(bytes(31))


@pytest.mark.parametrize(("text", "message"), [
    ("not base64!", "not valid base64"),
    ("AAEC AwQF", "not valid base64"),
    ("é", "not valid base64"),
    (base64.b64encode(bytes(16)).decode(), "16 bytes, not 32"),
    ("", "0 bytes"),
])
def test_decode_secret_explains_bad_text(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        decode_secret(text)
    assert "knockgate keygen" in str(caught.value)
