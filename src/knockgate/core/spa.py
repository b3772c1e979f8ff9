"""SPA wire format v1: ``seal_at`` builds a packet, ``open_at`` verifies one.

Pure: the caller passes the time and the nonce (like Fernet's ``encrypt_at_time``), so packets
are reproducible and known-answer vectors are exact. docs/spa-protocol.md is the reference; in
short, every v1 packet is exactly 112 bytes::

    header, cleartext, authenticated as AAD     body, ChaCha20-Poly1305 ciphertext
    version  key id  timestamp  nonce           target kind  address  action  count  ports  tag
       1       8        8        12                  1          16       1       1     48    16

``open_at`` checks in order of cost: length and version byte, one dict lookup for the key id,
AEAD authentication, the age window, and only then interprets the body. Every failure is the
same opaque ``InvalidMessage``; its ``reason`` is for debug logs.
"""

import base64
import math
import struct
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from knockgate.errors import ConfigError, InvalidMessage

VERSION = 1
KEY_ID_SIZE = 8
NONCE_SIZE = 12
SECRET_SIZE = 32
TAG_SIZE = 16
MAX_PORTS = 16
MAX_ACTION = 255

_HEADER = struct.Struct(f">B{KEY_ID_SIZE}sQ{NONCE_SIZE}s")
_BODY = struct.Struct(f">B16sBB{3 * MAX_PORTS}s")
_PORT = struct.Struct(">BH")
HEADER_SIZE = _HEADER.size
PACKET_SIZE = HEADER_SIZE + _BODY.size + TAG_SIZE

_KEY_ID_DOMAIN = b"knockgate spa v1 key id\x00"
_TARGET_SOURCE = 0
_PROTO_NUMBERS = {"tcp": 6, "udp": 17}
_PROTO_NAMES = {number: name for name, number in _PROTO_NUMBERS.items()}
_KEYGEN_HINT = "generate one with 'knockgate keygen' (base64 of 32 random bytes)"

Target = IPv4Address | IPv6Address | None


# The values here are NamedTuples and a plain class, not dataclasses: `knockgate open` imports
# this module, and importing dataclasses (with inspect, ast, dis) cost it ~5 ms. No ``from
# __future__ import annotations``: see model.py for what string annotations cost NamedTuples.


class _RequestFields(NamedTuple):
    target: Target = None
    ports: tuple[tuple[str, int], ...] = ()
    action: int | None = None


class SpaRequest(_RequestFields):
    """What a client asks for: ports to open, or one action code — exactly one of the two.

    ``target`` is the address to open for; None means "the source address of this packet".
    ``ports`` holds distinct ``(proto, port)`` pairs, proto "tcp" or "udp", at most 16.
    Raises ValueError when the request could not be encoded. (Build one by calling SpaRequest:
    the _make and _replace it inherits from NamedTuple skip these checks.)
    """

    __slots__ = ()

    def __new__(cls, target: Target = None, ports: tuple[tuple[str, int], ...] = (),
                action: int | None = None) -> "SpaRequest":
        problem = _target_problem(target) or _asks_problem(ports, action)
        if problem:
            raise ValueError(problem)
        return super().__new__(cls, target, ports, action)


def _target_problem(target: Target) -> str | None:
    if target is None:
        return None
    if not isinstance(target, IPv4Address | IPv6Address):
        return "target must be an IPv4Address, an IPv6Address or None"
    if target.is_unspecified or target.is_multicast:
        return f"target {target} cannot be the source of a connection"
    return None


def _asks_problem(ports: tuple[tuple[str, int], ...], action: int | None) -> str | None:
    if not isinstance(ports, tuple):
        return "ports must be a tuple of (proto, port) pairs"
    if bool(ports) == (action is not None):
        return "ask for ports or for an action code, exactly one of the two"
    if action is not None and not 1 <= action <= MAX_ACTION:
        return f"action code must be 1..{MAX_ACTION}"
    if len(ports) > MAX_PORTS:
        return f"at most {MAX_PORTS} ports per request"
    if len(set(ports)) != len(ports):
        return "a port is asked for twice"
    for proto, port in ports:
        if proto not in _PROTO_NUMBERS or not 1 <= port <= 0xFFFF:
            return f"bad port {proto}:{port}, expected tcp|udp and 1..65535"
    return None


class VerifiedRequest(NamedTuple):
    """A packet that authenticated under ``key_name``'s key and was fresh when opened."""

    key_id: bytes
    key_name: str
    timestamp: int
    nonce: bytes
    request: SpaRequest


class SpaKey:
    """One user's 32-byte secret and the public key id derived from its name. Frozen; equal
    to a key of the same name and secret; the secret stays out of its repr."""

    __slots__ = ("_aead", "key_id", "name", "secret")
    name: str
    secret: bytes
    key_id: bytes
    # Built once per key, not per packet: the daemon opens many packets under few keys.
    _aead: ChaCha20Poly1305

    def __init__(self, name: str, secret: bytes) -> None:
        if not name:
            raise ValueError("an SPA key needs a name")
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"an SPA secret is {SECRET_SIZE} bytes, not {len(secret)}")
        for attribute, value in (("name", name), ("secret", secret),
                                 ("key_id", key_id_for(name)),
                                 ("_aead", ChaCha20Poly1305(bytes(secret)))):
            object.__setattr__(self, attribute, value)

    def __setattr__(self, attribute: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {attribute!r}: an SpaKey is frozen")

    def __delattr__(self, attribute: str) -> None:
        raise AttributeError(f"cannot delete field {attribute!r}: an SpaKey is frozen")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpaKey):
            return NotImplemented
        return (self.name, self.secret) == (other.name, other.secret)

    def __hash__(self) -> int:
        return hash((self.name, self.secret))

    def __repr__(self) -> str:
        return f"SpaKey(name={self.name!r}, key_id={self.key_id!r})"


def key_id_for(name: str) -> bytes:
    """The 8-byte key id sent in clear: a domain-separated SHA-256 of the key's name."""
    # cryptography's SHA-256, not hashlib's: hashlib would load a second OpenSSL (~4 MB).
    digest = hashes.Hash(hashes.SHA256())
    digest.update(_KEY_ID_DOMAIN + name.encode("utf-8"))
    return digest.finalize()[:KEY_ID_SIZE]


def make_keyring(keys: Iterable[SpaKey]) -> dict[bytes, SpaKey]:
    """Index keys by key id for ``open_at``; ConfigError if two keys would share an id."""
    keyring: dict[bytes, SpaKey] = {}
    for key in keys:
        other = keyring.setdefault(key.key_id, key)
        if other is key:
            continue
        if other.name == key.name:
            raise ConfigError(f"SPA key {key.name!r} is defined twice",
                              hint="key names must be unique")
        raise ConfigError(
            f"SPA keys {other.name!r} and {key.name!r} have the same key id "
            f"{key.key_id.hex()}", hint="rename one of them")
    return keyring


def generate_secret(random_bytes: bytes) -> str:
    """Text form of a new secret, for ``knockgate keygen``; pass ``os.urandom(32)``."""
    if len(random_bytes) != SECRET_SIZE:
        raise ValueError(f"need {SECRET_SIZE} random bytes, got {len(random_bytes)}")
    return base64.b64encode(random_bytes).decode("ascii")


def decode_secret(text: str) -> bytes:
    """The 32 bytes behind a secret from ``generate_secret``; ConfigError with a hint if not."""
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII str
        raise ConfigError("the SPA secret is not valid base64", hint=_KEYGEN_HINT) from None
    if len(secret) != SECRET_SIZE:
        raise ConfigError(f"the SPA secret decodes to {len(secret)} bytes, not {SECRET_SIZE}",
                          hint=_KEYGEN_HINT)
    return secret


def seal_at(*, key: SpaKey, now: float, nonce: bytes, request: SpaRequest) -> bytes:
    """A v1 packet asking for ``request``, stamped with ``now`` (Unix seconds, floored).

    ``nonce`` must be 12 fresh random bytes (``os.urandom(12)``): it is the AEAD nonce and the
    replay key, so reusing one under the same key breaks both.
    """
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce is {NONCE_SIZE} bytes, not {len(nonce)}")
    timestamp = math.floor(now)
    if not 0 <= timestamp < 1 << 64:
        raise ValueError(f"time {now} does not fit the packet")
    header = _HEADER.pack(VERSION, key.key_id, timestamp, nonce)
    return header + key._aead.encrypt(nonce, _encode_body(request), header)


def open_at(
    *, unverified_packet: bytes, now: float, max_age: float, keyring: Mapping[bytes, SpaKey]
) -> VerifiedRequest:
    """Verify a packet received at ``now``; raises InvalidMessage(reason) on any failure.

    Accepted only if it authenticates and ``|now - timestamp| <= max_age``. Replays are not
    detected here: pass the result to ``ReplayWindow.admit``.
    """
    if not unverified_packet:
        raise InvalidMessage("short")
    if unverified_packet[0] != VERSION:
        raise InvalidMessage("version")
    if len(unverified_packet) != PACKET_SIZE:
        raise InvalidMessage("short" if len(unverified_packet) < PACKET_SIZE else "long")
    _, unverified_key_id, unverified_timestamp, unverified_nonce = _HEADER.unpack_from(
        unverified_packet)
    key = keyring.get(unverified_key_id)
    if key is None:
        raise InvalidMessage("unknown key")
    header = unverified_packet[:HEADER_SIZE]
    try:
        body = key._aead.decrypt(unverified_nonce, unverified_packet[HEADER_SIZE:], header)
    except InvalidTag:
        raise InvalidMessage("auth") from None
    timestamp, nonce = unverified_timestamp, unverified_nonce
    if now - timestamp > max_age:
        raise InvalidMessage("stale")
    if timestamp - now > max_age:
        raise InvalidMessage("future")
    try:
        request = _decode_body(body)
    except ValueError:
        raise InvalidMessage("malformed body") from None
    return VerifiedRequest(key.key_id, key.name, timestamp, nonce, request)


def _encode_body(request: SpaRequest) -> bytes:
    target = request.target
    kind = _TARGET_SOURCE if target is None else target.version
    address = b"" if target is None else target.packed
    ports = b"".join(_PORT.pack(_PROTO_NUMBERS[proto], port) for proto, port in request.ports)
    # struct zero-fills the unused address bytes and port slots.
    return _BODY.pack(kind, address, request.action or 0, len(request.ports), ports)


def _decode_body(body: bytes) -> SpaRequest:
    """The request in a decrypted body; ValueError unless it is the one canonical encoding."""
    kind, address, action, count, slots = _BODY.unpack(body)
    if count > MAX_PORTS or any(slots[3 * count:]):
        raise ValueError("port count")
    ports = tuple((_proto_name(number), port)
                  for number, port in _PORT.iter_unpack(slots[:3 * count]))
    return SpaRequest(_decode_target(kind, address), ports, action or None)


def _decode_target(kind: int, address: bytes) -> Target:
    if kind == _TARGET_SOURCE and not any(address):
        return None
    if kind == 4 and not any(address[4:]):
        return IPv4Address(address[:4])
    if kind == 6:
        return IPv6Address(address)
    raise ValueError("target")


def _proto_name(number: int) -> str:
    try:
        return _PROTO_NAMES[number]
    except KeyError:
        raise ValueError("protocol") from None
