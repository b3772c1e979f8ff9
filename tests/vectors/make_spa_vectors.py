"""Writes tests/vectors/spa_v1.json, the known-answer vectors of SPA wire format v1.

    .venv/bin/python tests/vectors/make_spa_vectors.py > tests/vectors/spa_v1.json

Valid vectors come from ``seal_at``. Packets with a malformed body cannot be made by
``seal_at``, so they are assembled here by hand from the layout in docs/spa-protocol.md, with
``cryptography``'s ChaCha20-Poly1305 directly. Rerun only when the format changes on purpose:
the vectors exist to catch changes nobody meant. (Each valid vector has its own nonce: a nonce
is never reused under one key, not even in examples.)
"""

from __future__ import annotations

import base64
import json
import struct
import sys
from ipaddress import ip_address
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from knockgate.core.spa import SpaKey, SpaRequest, key_id_for, seal_at

KEYS = {"alice": bytes(range(32)), "bob": bytes(range(32, 64))}
NOW = 1_700_000_000
MAX_AGE = 30
NONCE = bytes.fromhex("000102030405060708090a0b")


def _key(name: str) -> SpaKey:
    return SpaKey(name, KEYS[name])


def _valid(comment: str, name: str, now: float, nonce: bytes, request: SpaRequest,
           ) -> dict[str, Any]:
    packet = seal_at(key=_key(name), now=now, nonce=nonce, request=request)
    return {
        "comment": comment,
        "key": name,
        "now": now,
        "nonce": nonce.hex(),
        "request": {
            "target": None if request.target is None else str(request.target),
            "ports": [list(port) for port in request.ports],
            "action": request.action,
        },
        "timestamp": int(now),
        "packet": packet.hex(),
    }


def _hand_made(name: str, body: bytes, timestamp: int = NOW, version: int = 1) -> bytes:
    header = struct.pack(">B8sQ12s", version, key_id_for(name), timestamp, NONCE)
    return header + ChaCha20Poly1305(KEYS[name]).encrypt(NONCE, body, header)


def _body(kind: int = 0, address: bytes = b"", action: int = 0, ports: bytes = b"",
          count: int | None = None) -> bytes:
    count = len(ports) // 3 if count is None else count
    return struct.pack(">B16sBB48s", kind, address, action, count, ports)


def _invalid(comment: str, packet: bytes, reason: str, now: float = NOW) -> dict[str, Any]:
    return {"comment": comment, "packet": packet.hex(), "now": now, "max_age": MAX_AGE,
            "reason": reason}


def valid_vectors() -> list[dict[str, Any]]:
    v4, v6 = ip_address("192.0.2.10"), ip_address("2001:db8::10")
    return [
        _valid("source address, one TCP port", "alice", NOW, NONCE,
               SpaRequest(None, (("tcp", 22),))),
        _valid("IPv4 target, TCP and UDP ports", "alice", NOW + 0.75, bytes(range(12, 24)),
               SpaRequest(v4, (("tcp", 22), ("udp", 51820)))),
        _valid("IPv6 target, action code", "bob", NOW, bytes(range(100, 112)),
               SpaRequest(v6, (), 7)),
        _valid("sixteen ports, the maximum", "bob", NOW, bytes(12),
               SpaRequest(None, tuple(("tcp", 1000 + i) for i in range(16)))),
        _valid("action 255, the largest", "alice", 0, bytes([255] * 12),
               SpaRequest(None, (), 255)),
    ]


def invalid_vectors() -> list[dict[str, Any]]:
    good = bytes.fromhex(valid_vectors()[0]["packet"])
    tampered = bytearray(good)
    tampered[-1] ^= 1
    port22 = struct.pack(">BH", 6, 22)
    return [
        _invalid("empty", b"", "short"),
        _invalid("version 2", b"\x02" + good[1:], "version"),
        _invalid("one byte short", good[:-1], "short"),
        _invalid("one byte long", good + b"\x00", "long"),
        _invalid("key id nobody has", good[:1] + bytes(8) + good[9:], "unknown key"),
        _invalid("last tag bit flipped", bytes(tampered), "auth"),
        _invalid("one second too old", good, "stale", NOW + MAX_AGE + 1),
        _invalid("one second in the future", good, "future", NOW - MAX_AGE - 1),
        _invalid("neither ports nor action", _hand_made("alice", _body()), "malformed body"),
        _invalid("ports and an action", _hand_made("alice", _body(action=1, ports=port22)),
                 "malformed body"),
        _invalid("port count 17", _hand_made("alice", _body(ports=port22, count=17)),
                 "malformed body"),
        _invalid("byte after the last port", _hand_made("alice", _body(ports=port22 + b"\x01")),
                 "malformed body"),
        _invalid("protocol 1 (ICMP)", _hand_made("alice", _body(ports=b"\x01\x00\x16")),
                 "malformed body"),
        _invalid("port 0", _hand_made("alice", _body(ports=b"\x06\x00\x00")), "malformed body"),
        _invalid("same port twice", _hand_made("alice", _body(ports=port22 * 2)),
                 "malformed body"),
        _invalid("target kind 5", _hand_made("alice", _body(kind=5, ports=port22)),
                 "malformed body"),
        _invalid("IPv4 target with bytes after the address",
                 _hand_made("alice", _body(kind=4, address=bytes(range(1, 6)), ports=port22)),
                 "malformed body"),
        _invalid("source target with an address",
                 _hand_made("alice", _body(kind=0, address=b"\x01", ports=port22)),
                 "malformed body"),
        _invalid("IPv6 multicast target",
                 _hand_made("alice", _body(kind=6, address=b"\xff\x02" + bytes(13) + b"\x01",
                                           ports=port22)),
                 "malformed body"),
        _invalid("IPv4 unspecified target",
                 _hand_made("alice", _body(kind=4, address=bytes(4), ports=port22)),
                 "malformed body"),
    ]


def main() -> None:
    document = {
        "description": "knockgate SPA wire format v1 (docs/spa-protocol.md). Secrets are "
                       "base64; packet, nonce and key_id are hex; now is Unix seconds.",
        "max_age": MAX_AGE,
        "keys": [{"name": name, "secret": base64.b64encode(secret).decode(),
                  "key_id": key_id_for(name).hex()} for name, secret in KEYS.items()],
        "valid": valid_vectors(),
        "invalid": invalid_vectors(),
    }
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
