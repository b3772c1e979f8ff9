"""fwknop 2.x single packet authorization (Rijndael + HMAC), both directions, pure.

Written from the wire-format facts in ``/work/shared/notes/fwknop-spa-format.md`` and checked
against Debian's fwknop 2.6.10 client and server (known-answer packets in tests/vectors/fwknop).

Server side, :func:`decode`, in this order (cheap checks, then authenticate, then interpret):

1. payload length 140..1500 bytes, standard base64 alphabet only, no ``=``, and not already
   starting with ``U2FsdGVkX1`` (fwknopd drops those: an attacker could prepend the prefix to a
   seen packet to change its replay digest);
2. the HMAC (its type comes from the caller's stanza, never from the packet) over the base64
   ciphertext with ``U2FsdGVkX1`` put back, compared in constant time;
3. AES-256-CBC with OpenSSL's ``EVP_BytesToKey(MD5, 1 iteration)`` salted key/IV, PKCS#7;
4. the plaintext fields, the inner digest (type inferred from its length) and the age window.

Every rejection raises :class:`~knockgate.errors.InvalidMessage`, and nothing else, for any
input. Packets without an HMAC are only decoded when the caller passes ``allow_no_hmac=True``.

Client side, :func:`encode`, takes the time, the 16-digit random value and the 8-byte salt as
parameters, so its output is reproducible; fwknopd 2.6.10 accepts what it produces.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from types import MappingProxyType

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from knockgate.errors import InvalidMessage
from knockgate.model import FWKNOP_MAX_AGE

# fwknopd's MIN_SPA_DATA_SIZE. Measured with the 2.6.10 client: the smallest access packet it
# builds (no HMAC, MD5 digest, one-letter user, 1.2.3.4,tcp/1) is exactly 140; with any HMAC
# far more. Only a no-HMAC command like `-C x` comes out shorter (118), and fwknopd drops it.
MIN_PAYLOAD = 140
MAX_PAYLOAD = 1500  # fwknopd's MAX_SPA_PACKET_LEN
DEFAULT_PORT = 62201
PROTOCOL_VERSION = "3.0.0"
MAX_KEY_LEN = 32  # AES-256: the client refuses longer passphrases ("Invalid key length")

SALTED_PREFIX_B64 = b"U2FsdGVkX1"  # base64 of "Salted__" (first 10 characters are constant)
_SALTED = b"Salted__"
_BLOCK = 16
_B64_WIRE = re.compile(rb"[A-Za-z0-9+/]+")
_DIGITS = re.compile(r"[0-9]+")
_RAND = re.compile(r"[0-9]{16}")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")
_PROTOS = ("tcp", "udp", "icmp", "none")
# fwknop's field limits (lib/fko_limits.h): a larger field is a malformed packet.
_MAX_USER_B64 = 64
_MAX_FIELD_B64 = 256
_MAX_TIMESTAMP = 12
_MAX_VERSION = 8
_MAX_CLIENT_TIMEOUT = 2 << 15
_MAX_NAT_HOST = 70
_USER_FORBIDDEN = frozenset('"/\\[]:;|=,+*?<>')


class MsgType(enum.IntEnum):
    COMMAND = 0
    ACCESS = 1
    NAT_ACCESS = 2
    CLIENT_TIMEOUT_ACCESS = 3
    CLIENT_TIMEOUT_NAT_ACCESS = 4
    LOCAL_NAT_ACCESS = 5
    CLIENT_TIMEOUT_LOCAL_NAT_ACCESS = 6


NAT_TYPES = frozenset({MsgType.NAT_ACCESS, MsgType.CLIENT_TIMEOUT_NAT_ACCESS,
                       MsgType.LOCAL_NAT_ACCESS, MsgType.CLIENT_TIMEOUT_LOCAL_NAT_ACCESS})
TIMEOUT_TYPES = frozenset({MsgType.CLIENT_TIMEOUT_ACCESS, MsgType.CLIENT_TIMEOUT_NAT_ACCESS,
                           MsgType.CLIENT_TIMEOUT_LOCAL_NAT_ACCESS})


# Name as fwknop spells it in access.conf and on its command line → hashlib's name.
HASHES: Mapping[str, str] = MappingProxyType({
    name: lib
    for name, lib in (("md5", "md5"), ("sha1", "sha1"), ("sha256", "sha256"),
                      ("sha384", "sha384"), ("sha512", "sha512"),
                      ("sha3_256", "sha3_256"), ("sha3_512", "sha3_512"))
    if lib in hashlib.algorithms_available
})
HMAC_TYPES = frozenset(HASHES)


def b64_len(digest_size: int) -> int:
    """Length of unpadded base64 for ``digest_size`` bytes (22 for MD5 ... 86 for SHA-512)."""
    return (digest_size * 4 + 2) // 3


def _hash_b64(name: str, data: bytes) -> bytes:
    return b64encode_nopad(hashlib.new(HASHES[name], data).digest())


def _digest_len(name: str) -> int:
    return b64_len(hashlib.new(HASHES[name]).digest_size)


def _digests_by_length() -> dict[int, tuple[str, ...]]:
    # Inner digests: fwknop infers the type from the base64 length; SHA3 shares its lengths
    # with SHA-256/512 and is tried after them (HASHES lists SHA-2 first).
    table: dict[int, tuple[str, ...]] = {}
    for name in HASHES:
        length = _digest_len(name)
        table[length] = (*table.get(length, ()), name)
    return table


_DIGESTS_BY_LEN = MappingProxyType(_digests_by_length())


Access = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class FwknopRequest:
    """A verified fwknop SPA request.

    ``allow_ip`` is kept as sent: ``0.0.0.0`` (client ``-s``) means "the packet's source", which
    only the caller knows. ``access`` is the (proto, port) list, or for ``MsgType.COMMAND`` the
    command string exactly as sent (never run it through a shell). ``replay_digest`` is the
    SHA-256 of the raw wire payload: remember it for the age window to refuse replays.
    """

    username: str
    timestamp: int
    msg_type: MsgType
    allow_ip: IPv4Address
    access: Access | str
    client_timeout: int | None
    nat_access: tuple[str, int] | None
    replay_digest: bytes
    version: str = PROTOCOL_VERSION
    digest_type: str = "sha256"
    server_auth: str | None = None


# --------------------------------------------------------------------------- primitives


def b64encode_nopad(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode_nopad(text: bytes | str) -> bytes:
    raw = text.encode("ascii") if isinstance(text, str) else text
    if not _B64_WIRE.fullmatch(raw) or len(raw) % 4 == 1:
        raise InvalidMessage("bad base64")
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMessage("bad base64") from exc


def evp_bytes_to_key(password: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """OpenSSL's EVP_BytesToKey with MD5 and one iteration: (32-byte key, 16-byte IV).

    Only a KDF for interoperability with fwknop; it is weak for low-entropy passphrases, which
    is why ``fwknop --key-gen`` keys (32 random bytes) are the ones to use.
    """
    out = b""
    block = b""
    while len(out) < 32 + _BLOCK:
        block = hashlib.md5(block + password + salt).digest()
        out += block
    return out[:32], out[32:32 + _BLOCK]


def _aes_cbc(key: bytes, salt: bytes, data: bytes, *, encrypt: bool) -> bytes:
    aes_key, iv = evp_bytes_to_key(key, salt)
    cipher = Cipher(algorithms.AES(aes_key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def _hmac_b64(hmac_key: bytes, hmac_type: str, data: bytes) -> bytes:
    return b64encode_nopad(hmac.new(hmac_key, data, HASHES[hmac_type]).digest())


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or not 1 <= len(key) <= MAX_KEY_LEN:
        raise InvalidMessage("encryption key must be 1-32 bytes")


# --------------------------------------------------------------------------- decode


def replay_key(payload: bytes) -> bytes:
    """SHA-256 of the raw wire payload, as in ``FwknopRequest.replay_digest``.

    Cheap enough to look up before :func:`decode`; record it only after a packet verifies, so
    garbage cannot fill the replay cache.
    """
    return hashlib.sha256(bytes(payload)).digest()


def decode(payload: bytes, *, key: bytes, hmac_key: bytes | None, hmac_type: str = "sha256",
           now: float, max_age: float = FWKNOP_MAX_AGE,
           allow_no_hmac: bool = False) -> FwknopRequest:
    """Verify and parse one fwknop SPA payload (the UDP data, bytes) against one stanza's keys.

    ``hmac_key=None`` is refused unless ``allow_no_hmac`` (fwknop's pre-HMAC mode: the packet
    is then authenticated only by decrypting to a well-formed plaintext, which is weak).
    Raises InvalidMessage for every failure.
    """
    unverified = _cheap_checks(payload)
    _check_key(key)
    ciphertext_b64 = _authenticate(unverified, hmac_key, hmac_type, allow_no_hmac)
    plaintext = _decrypt(ciphertext_b64, key)
    request = _parse_plaintext(plaintext, replay_key(unverified))
    if not abs(now - request.timestamp) <= max_age:
        raise InvalidMessage("stale or future timestamp")
    return request


def _cheap_checks(payload: object) -> bytes:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise InvalidMessage("payload is not bytes")
    data = bytes(payload)
    if not MIN_PAYLOAD <= len(data) <= MAX_PAYLOAD:
        raise InvalidMessage("bad length")
    if not _B64_WIRE.fullmatch(data):
        raise InvalidMessage("not base64")
    if data.startswith(SALTED_PREFIX_B64):
        raise InvalidMessage("salted prefix on the wire")
    return data


def _authenticate(unverified: bytes, hmac_key: bytes | None, hmac_type: str,
                  allow_no_hmac: bool) -> bytes:
    """Return the full base64 ciphertext (prefix restored) once the HMAC, if any, verifies."""
    if hmac_key is None:
        if not allow_no_hmac:
            raise InvalidMessage("no HMAC key and unauthenticated packets not allowed")
        return SALTED_PREFIX_B64 + unverified
    if hmac_type not in HASHES or not isinstance(hmac_key, bytes | bytearray) or not hmac_key:
        raise InvalidMessage("unusable HMAC key or type")
    tag_len = _digest_len(hmac_type)
    body, tag = unverified[:-tag_len], unverified[-tag_len:]
    ciphertext_b64 = SALTED_PREFIX_B64 + body
    expected = _hmac_b64(bytes(hmac_key), hmac_type, ciphertext_b64)
    if not hmac.compare_digest(expected, tag):
        raise InvalidMessage("HMAC mismatch")
    return ciphertext_b64


def _decrypt(ciphertext_b64: bytes, key: bytes) -> str:
    raw = _b64decode_nopad(ciphertext_b64)
    body = raw[len(_SALTED) + 8:]
    if not raw.startswith(_SALTED) or not body or len(body) % _BLOCK:
        raise InvalidMessage("bad ciphertext framing")
    padded = _aes_cbc(bytes(key), raw[len(_SALTED):len(_SALTED) + 8], body, encrypt=False)
    unpadder = padding.PKCS7(_BLOCK * 8).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise InvalidMessage("bad padding") from exc
    if not all(0x20 <= byte <= 0x7E for byte in plain):
        raise InvalidMessage("plaintext not printable")
    return plain.decode("ascii")


def _parse_plaintext(plaintext: str, replay_digest: bytes) -> FwknopRequest:
    head, sep, digest = plaintext.rpartition(":")
    if not sep:
        raise InvalidMessage("no digest")
    digest_type = _verify_digest(head, digest)
    fields = head.split(":")
    if len(fields) < 6:
        raise InvalidMessage("too few fields")
    rand, user_b64, stamp, version, type_text, message_b64, *extra = fields
    if not _RAND.fullmatch(rand):
        raise InvalidMessage("bad random value")
    msg_type = _parse_msg_type(type_text)
    nat_b64, server_auth_b64, timeout_text = _split_extra(msg_type, extra)
    allow_ip, access = _parse_message(msg_type, _b64_field(message_b64, _MAX_FIELD_B64))
    return FwknopRequest(
        username=_parse_username(user_b64),
        timestamp=_parse_decimal(stamp, _MAX_TIMESTAMP, "timestamp"),
        msg_type=msg_type,
        allow_ip=allow_ip,
        access=access,
        client_timeout=_parse_client_timeout(timeout_text),
        nat_access=None if nat_b64 is None else _parse_nat(_b64_field(nat_b64, _MAX_FIELD_B64)),
        replay_digest=replay_digest,
        version=_parse_version(version),
        digest_type=digest_type,
        server_auth=None if server_auth_b64 is None
        else _b64_field(server_auth_b64, _MAX_FIELD_B64),
    )


def _verify_digest(head: str, digest: str) -> str:
    for name in _DIGESTS_BY_LEN.get(len(digest), ()):
        expected = _hash_b64(name, head.encode("ascii"))
        if hmac.compare_digest(expected, digest.encode("ascii")):
            return name
    raise InvalidMessage("inner digest mismatch")


def _parse_msg_type(text: str) -> MsgType:
    if not _DIGITS.fullmatch(text) or len(text) > 2:
        raise InvalidMessage("bad message type")
    try:
        return MsgType(int(text))
    except ValueError as exc:
        raise InvalidMessage("unknown message type") from exc


def _split_extra(msg_type: MsgType,
                 extra: list[str]) -> tuple[str | None, str | None, str | None]:
    """(nat_access, server_auth, client_timeout) fields, each present or None, per type."""
    nat = timeout = None
    rest = list(extra)
    if msg_type in NAT_TYPES:
        if not rest:
            raise InvalidMessage("NAT access field missing")
        nat = rest.pop(0)
    if msg_type in TIMEOUT_TYPES:
        if not rest:
            raise InvalidMessage("client timeout missing")
        timeout = rest.pop()
    if len(rest) > 1:
        raise InvalidMessage("too many fields")
    return nat, (rest[0] if rest else None), timeout


def _b64_field(text: str, limit: int) -> str:
    if not 1 <= len(text) <= limit:
        raise InvalidMessage("field empty or too long")
    raw = _b64decode_nopad(text)
    if not raw or not all(0x20 <= byte <= 0x7E for byte in raw):
        raise InvalidMessage("field not printable ASCII")
    return raw.decode("ascii")


def _parse_decimal(text: str, limit: int, what: str) -> int:
    if not _DIGITS.fullmatch(text) or len(text) > limit:
        raise InvalidMessage(f"bad {what}")
    return int(text)


def _parse_version(text: str) -> str:
    if len(text) > _MAX_VERSION or not _VERSION.fullmatch(text):
        raise InvalidMessage("bad version")
    return text


def _parse_username(user_b64: str) -> str:
    user = _b64_field(user_b64, _MAX_USER_B64)
    if any(ch in _USER_FORBIDDEN for ch in user):
        raise InvalidMessage("bad username")
    return user


def _parse_client_timeout(text: str | None) -> int | None:
    if text is None:
        return None
    value = _parse_decimal(text, 5, "client timeout")
    if value > _MAX_CLIENT_TIMEOUT:
        raise InvalidMessage("client timeout too large")
    return value


def _parse_ipv4(text: str) -> IPv4Address:
    if not 7 <= len(text) <= 15 or not re.fullmatch(r"[0-9.]+", text):
        raise InvalidMessage("bad allow IP")
    try:
        return IPv4Address(text)
    except AddressValueError as exc:
        raise InvalidMessage("bad allow IP") from exc


def _parse_message(msg_type: MsgType, message: str) -> tuple[IPv4Address, Access | str]:
    ip_text, sep, rest = message.partition(",")
    if not sep or not rest:
        raise InvalidMessage("message lacks IP or body")
    allow_ip = _parse_ipv4(ip_text)
    if msg_type is MsgType.COMMAND:
        return allow_ip, rest
    return allow_ip, tuple(_parse_proto_port(item) for item in rest.split(","))


def _parse_proto_port(item: str) -> tuple[str, int]:
    proto, sep, port_text = item.partition("/")
    if not sep or proto not in _PROTOS:
        raise InvalidMessage("bad proto/port")
    return proto, _parse_port(port_text)


def _parse_port(text: str) -> int:
    port = _parse_decimal(text, 5, "port")
    if not 1 <= port <= 65535:
        raise InvalidMessage("port out of range")
    return port


def _parse_nat(text: str) -> tuple[str, int]:
    host, sep, port_text = text.partition(",")
    if not sep or not 1 <= len(host) <= _MAX_NAT_HOST or any(ch in ' /?"\'\\,' for ch in host):
        raise InvalidMessage("bad NAT access")
    return host, _parse_port(port_text)


# --------------------------------------------------------------------------- encode


def encode(now: float, rand16: str, salt8: bytes, user: str, allow_ip: IPv4Address | str,
           access: Access | str, key: bytes, hmac_key: bytes | None,
           hmac_type: str = "sha256", msg_type: MsgType | int = MsgType.ACCESS,
           client_timeout: int | None = None, *, nat_access: tuple[str, int] | None = None,
           digest_type: str = "sha256", server_auth: str | None = None) -> bytes:
    """Build the UDP payload the fwknop 2.x client would send (ASCII bytes, no newline).

    Pure: the timestamp, the 16-digit random value and the 8-byte salt are parameters
    (``os.urandom`` belongs to the caller). ``hmac_key=None`` builds a legacy packet without
    HMAC. Raises ValueError for arguments fwknopd would refuse.
    """
    kind = MsgType(msg_type)
    if (client_timeout is not None) != (kind in TIMEOUT_TYPES):
        raise ValueError("client_timeout goes with message types 3, 4 and 6 only")
    if (nat_access is not None) != (kind in NAT_TYPES):
        raise ValueError("nat_access goes with message types 2, 4, 5 and 6 only")
    if len(salt8) != 8:
        raise ValueError("salt must be 8 bytes")
    if hmac_key is not None and (hmac_type not in HASHES or not hmac_key):
        raise ValueError(f"HMAC type must be one of {sorted(HASHES)} with a non-empty key")
    head = _encode_fields(int(now), rand16, user, str(allow_ip), access, kind, client_timeout,
                          nat_access, server_auth)
    plaintext = _append_digest(head, digest_type)
    _validate_encoded(plaintext)
    wire = _seal(plaintext.encode("ascii"), key, salt8, hmac_key, hmac_type)
    if not MIN_PAYLOAD <= len(wire) <= MAX_PAYLOAD:
        raise ValueError(f"packet is {len(wire)} bytes; fwknopd accepts {MIN_PAYLOAD}-"
                         f"{MAX_PAYLOAD}")
    return wire


def _encode_fields(timestamp: int, rand16: str, user: str, allow_ip: str, access: Access | str,
                   kind: MsgType, client_timeout: int | None,
                   nat_access: tuple[str, int] | None, server_auth: str | None) -> str:
    if isinstance(access, str):
        body = access
    else:
        body = ",".join(f"{proto}/{port}" for proto, port in access)
    fields = [rand16, _b64text(user), str(timestamp), PROTOCOL_VERSION, str(int(kind)),
              _b64text(f"{allow_ip},{body}")]
    if nat_access is not None:
        fields.append(_b64text(f"{nat_access[0]},{nat_access[1]}"))
    if server_auth is not None:
        fields.append(_b64text(server_auth))
    if client_timeout is not None:
        fields.append(str(client_timeout))
    return ":".join(fields)


def _b64text(text: str) -> str:
    return b64encode_nopad(text.encode("ascii")).decode("ascii")


def _append_digest(head: str, digest_type: str) -> str:
    if digest_type not in HASHES:
        raise ValueError(f"digest type must be one of {sorted(HASHES)}")
    return f"{head}:{_hash_b64(digest_type, head.encode('ascii')).decode('ascii')}"


def _validate_encoded(plaintext: str) -> None:
    # Parse our own output with the server's rules: what we send is what we would accept.
    try:
        _parse_plaintext(plaintext, b"")
    except InvalidMessage as exc:
        raise ValueError(f"fwknopd would refuse this request: {exc.reason}") from None


def _seal(plaintext: bytes, key: bytes, salt8: bytes, hmac_key: bytes | None,
          hmac_type: str) -> bytes:
    if not 1 <= len(key) <= MAX_KEY_LEN:
        raise ValueError("encryption key must be 1-32 bytes")
    padder = padding.PKCS7(_BLOCK * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    sealed = _SALTED + salt8 + _aes_cbc(key, salt8, padded, encrypt=True)
    ciphertext_b64 = b64encode_nopad(sealed)
    wire = ciphertext_b64[len(SALTED_PREFIX_B64):]
    if hmac_key is not None:
        wire += _hmac_b64(hmac_key, hmac_type, ciphertext_b64)
    return wire
