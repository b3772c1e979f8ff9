"""Hostile input for the fwknop codec and access.conf parser.

h11's rule: garbage either decodes or is rejected by the one expected error — InvalidMessage
for packets, ConfigError for configs — never any other exception.
"""

from __future__ import annotations

import base64
import contextlib
import json
import string
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from knockgate.compat.fwknop import wire as fwknop
from knockgate.compat.fwknop.access import FwknopAccess, parse_access_conf, select_stanza
from knockgate.compat.fwknop.wire import HMAC_TYPES, FwknopRequest, MsgType, decode, encode
from knockgate.errors import ConfigError, InvalidMessage

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "fwknop"
REAL = json.loads((VECTORS / "access_sha256.json").read_text())
REAL_PAYLOAD = REAL["payload"].encode()
REAL_NOW = int(REAL["facts"]["timestamp"])
KEY = base64.b64decode(REAL["key_base64"])
HMAC_KEY = base64.b64decode(REAL["hmac_key_base64"])
B64 = string.ascii_letters + string.digits + "+/"
# filter_too_much: assume() keeps packets of a valid length; an unlucky draw must not fail CI.
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def decode_or_reject(payload: object, **kwargs) -> FwknopRequest | None:
    args = {"key": KEY, "hmac_key": HMAC_KEY, "now": REAL_NOW}
    args.update(kwargs)
    try:
        return decode(payload, **args)  # type: ignore[arg-type]
    except InvalidMessage:
        return None


@FUZZ
@given(st.binary(max_size=2000), st.booleans())
def test_any_bytes(payload, with_hmac):
    assert decode_or_reject(payload, hmac_key=HMAC_KEY if with_hmac else None,
                            allow_no_hmac=not with_hmac) is None


@FUZZ
@given(st.text(alphabet=B64, min_size=140, max_size=600), st.sampled_from(sorted(HMAC_TYPES)))
def test_base64_garbage_never_authenticates(text, hmac_type):
    assert decode_or_reject(text.encode(), hmac_type=hmac_type) is None


@FUZZ
@given(st.text(alphabet=B64, min_size=130, max_size=600))
def test_base64_garbage_without_hmac_goes_through_decrypt(text):
    # No HMAC: random ciphertext reaches AES, padding and parsing. Must still only reject.
    decode_or_reject(text.encode(), hmac_key=None, allow_no_hmac=True)


@FUZZ
@given(st.data())
def test_mutated_real_packet(data):
    payload = bytearray(REAL_PAYLOAD)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "byte"]))
        index = data.draw(st.integers(0, len(payload) - 1))
        if op == "flip":
            payload[index] = ord(data.draw(st.sampled_from(B64)))
        elif op == "insert":
            payload.insert(index, ord(data.draw(st.sampled_from(B64))))
        elif op == "delete" and len(payload) > 1:
            del payload[index]
        else:
            payload[index] = data.draw(st.integers(0, 255))
    result = decode_or_reject(bytes(payload))
    assert (result is not None) == (bytes(payload) == REAL_PAYLOAD)


# Printable plaintext sealed with the right key and no HMAC: everything behind the crypto.
_FIELD = st.text(alphabet=string.printable.strip() + " ", max_size=40)


@FUZZ
@given(st.lists(_FIELD, min_size=0, max_size=12), st.sampled_from(sorted(HMAC_TYPES)),
       st.booleans())
def test_plaintext_parser_behind_the_crypto(fields, digest_type, with_digest):
    head = ":".join(fields)
    assume(head.isascii())
    plaintext = fwknop._append_digest(head, digest_type) if with_digest else head
    wire = fwknop._seal(plaintext.encode(), KEY, b"saltsalt", None, "sha256")
    assume(fwknop.MIN_PAYLOAD <= len(wire) <= fwknop.MAX_PAYLOAD)
    decode_or_reject(wire, hmac_key=None, allow_no_hmac=True)


_B64_FIELD = st.binary(min_size=0, max_size=30).map(
    lambda raw: base64.b64encode(raw).rstrip(b"=").decode())


@FUZZ
@given(st.from_regex(r"[0-9]{14,17}", fullmatch=True), _B64_FIELD,
       st.from_regex(r"[0-9]{1,13}", fullmatch=True), st.sampled_from(["3.0.0", "2.0", "x"]),
       st.integers(-1, 9).map(str), _B64_FIELD, st.lists(_B64_FIELD, max_size=4))
def test_structured_fields_behind_the_crypto(rand, user, stamp, version, kind, message, extra):
    head = ":".join([rand, user, stamp, version, kind, message, *extra])
    wire = fwknop._seal(fwknop._append_digest(head, "sha256").encode(), KEY, b"saltsalt",
                        HMAC_KEY, "sha256")
    decode_or_reject(wire, now=float(stamp) if stamp.isdigit() else 0.0)


_USER = st.text(alphabet=string.ascii_letters + string.digits + "._-@ ", min_size=1,
                max_size=30)
_PORTS = st.lists(st.tuples(st.sampled_from(["tcp", "udp", "icmp"]), st.integers(1, 65535)),
                  min_size=1, max_size=8).map(tuple)


@FUZZ
@given(_USER, st.integers(0, 2**32 - 1).map(IPv4Address), _PORTS,
       st.sampled_from([MsgType.ACCESS, MsgType.CLIENT_TIMEOUT_ACCESS]),
       st.integers(0, 65536), st.sampled_from(sorted(HMAC_TYPES)),
       st.sampled_from(sorted(HMAC_TYPES)), st.binary(min_size=8, max_size=8),
       st.from_regex(r"[0-9]{16}", fullmatch=True), st.integers(0, 2**34))
def test_roundtrip(user, ip, ports, kind, timeout, hmac_type, digest_type, salt, rand, now):
    client_timeout = timeout if kind is MsgType.CLIENT_TIMEOUT_ACCESS else None
    wire = encode(now, rand, salt, user, ip, ports, KEY, HMAC_KEY, hmac_type, kind,
                  client_timeout, digest_type=digest_type)
    request = decode(wire, key=KEY, hmac_key=HMAC_KEY, hmac_type=hmac_type, now=now)
    assert (request.username, request.allow_ip, request.access, request.msg_type,
            request.client_timeout, request.timestamp) == (user, ip, ports, kind,
                                                           client_timeout, now)


@FUZZ
@given(st.text(alphabet=string.printable, min_size=1, max_size=150))
def test_command_roundtrip_or_valueerror(command):
    try:
        wire = encode(REAL_NOW, "1" * 16, b"saltsalt", "u", "10.0.0.1", command, KEY,
                      HMAC_KEY, "sha256", MsgType.COMMAND)
    except ValueError:
        return
    assert decode(wire, key=KEY, hmac_key=HMAC_KEY, now=REAL_NOW).access == command


# --------------------------------------------------------------------------- access.conf

_NAMES = ["SOURCE", "KEY", "KEY_BASE64", "HMAC_KEY", "HMAC_KEY_BASE64", "HMAC_DIGEST_TYPE",
          "OPEN_PORTS", "RESTRICT_PORTS", "FW_ACCESS_TIMEOUT", "MAX_FW_TIMEOUT",
          "REQUIRE_SOURCE_ADDRESS", "REQUIRE_USERNAME", "ENABLE_CMD_EXEC", "DESTINATION",
          "ACCESS_EXPIRE", "ACCESS_EXPIRE_EPOCH", "ENCRYPTION_MODE", "GPG_HOME_DIR",
          "KNOCKGATE_ALLOW_NO_HMAC", "KNOCKGATE_CMD_SHELL", "CMD_CYCLE_OPEN", "%include",
          "ENABLE_CMD_SUDO_EXEC", "open_ports", "BOGUS", "#", ";"]
_VALUES = st.one_of(
    st.sampled_from(["ANY", "Y", "N", "yes", "maybe", "sha256", "SHA1", "md5", "cbc", "legacy",
                     "tcp/22", "tcp/22, udp/53", "udp/0", "10.0.0.0/8", "1.2.3.4, 5.6.7.8",
                     "::1", "30", "0", "-5", "99999999999", "12/31/2030", "13/45/2030",
                     REAL["key_base64"], REAL["hmac_key_base64"], "__CHANGEME__", "a;b"]),
    st.text(max_size=30),
)
_LINE = st.one_of(
    st.tuples(st.sampled_from(_NAMES), st.sampled_from([" ", "\t", ": ", "  "]), _VALUES)
    .map("".join),
    st.text(max_size=40),
)


def parse_or_reject(text: str) -> FwknopAccess | None:
    try:
        return parse_access_conf(text, "fuzz.conf")
    except ConfigError as error:
        assert str(error).startswith("fuzz.conf")
        return None


@FUZZ
@given(st.text(max_size=500))
def test_access_conf_any_text(text):
    parse_or_reject(text)


@FUZZ
@given(st.binary(max_size=500))
def test_access_conf_any_bytes(raw):
    parse_or_reject(raw.decode("utf-8", "surrogateescape"))


@FUZZ
@given(st.lists(_LINE, max_size=25))
def test_access_conf_structured(lines):
    access = parse_or_reject("\n".join(lines))
    if access is not None:
        assert access.stanzas
        for stanza in access.stanzas:
            assert 1 <= len(stanza.key) <= 32
            assert stanza.hmac_key is not None or stanza.allow_no_hmac
            assert stanza.hmac_type in HMAC_TYPES


_GOOD_CONF = (f"SOURCE ANY\nKEY_BASE64 {REAL['key_base64']}\n"
              f"HMAC_KEY_BASE64 {REAL['hmac_key_base64']}\n")
_STANZAS = parse_access_conf(_GOOD_CONF).stanzas


@FUZZ
@given(st.one_of(st.binary(max_size=600), st.just(REAL_PAYLOAD)),
       st.one_of(st.text(max_size=20), st.integers(0, 2**32 - 1).map(IPv4Address),
                 st.sampled_from(["::1", "10.0.0.1", None])),
       st.floats(allow_nan=True, allow_infinity=True))
def test_select_stanza_only_invalid_message(payload, source, now):
    with contextlib.suppress(InvalidMessage):
        select_stanza(_STANZAS, payload, source, now)
