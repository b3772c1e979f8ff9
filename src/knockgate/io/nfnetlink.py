"""Grants as one raw nfnetlink batch: the only nftables operation on the packet path.

libnftables re-reads the ruleset cache before every command (about 30 syscalls, 0.3-0.5 ms on
our test bed); a grant only needs "add/delete/add this element", which the kernel takes as one
batch in two syscalls. The ruleset itself is still written through libnftables (io/nft.py).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct

from knockgate.errors import FirewallError
from knockgate.io.nlwire import ack_errors, attr, message, nested
from knockgate.model import IPAddress

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFNL_MSG_BATCH_BEGIN = 0x10
_NFNL_MSG_BATCH_END = 0x11
_NFT_MSG_NEWSETELEM = 12
_NFT_MSG_DELSETELEM = 14
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_CREATE = 0x400
_NFPROTO_INET = 1
_NFTA_SET_ELEM_LIST_TABLE = 1
_NFTA_SET_ELEM_LIST_SET = 2
_NFTA_SET_ELEM_LIST_ELEMENTS = 3
_NFTA_LIST_ELEM = 1
_NFTA_SET_ELEM_KEY = 1
_NFTA_SET_ELEM_TIMEOUT = 4
_NFTA_DATA_VALUE = 1
_PROTO_NUMBERS = {"tcp": 6, "udp": 17}
_NFGENMSG = struct.Struct("=BBH")


def _message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    return message(kind, flags, seq, _NFGENMSG.pack(family, 0, res_id) + body)


def _element_message(kind: int, seq: int, table: str, set_name: str, key: bytes,
                     timeout_ms: int | None) -> bytes:
    element = [nested(_NFTA_SET_ELEM_KEY, attr(_NFTA_DATA_VALUE, key))]
    if timeout_ms is not None:
        element.append(attr(_NFTA_SET_ELEM_TIMEOUT, struct.pack("!Q", timeout_ms)))
    body = (
        attr(_NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
        + attr(_NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
        + nested(_NFTA_SET_ELEM_LIST_ELEMENTS, nested(_NFTA_LIST_ELEM, *element))
    )
    flags = _NLM_F_REQUEST | _NLM_F_ACK | (_NLM_F_CREATE if kind == _NFT_MSG_NEWSETELEM else 0)
    return _message((_NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, _NFPROTO_INET, 0, body)


def concat_key(address: IPAddress, proto: str, port: int) -> bytes:
    """Key of an ``addr . inet_proto . inet_service`` element; each field padded to 4 bytes."""
    return address.packed + bytes([_PROTO_NUMBERS[proto], 0, 0, 0]) + struct.pack("!HH", port, 0)


def grant_batch(seq: itertools.count[int], table: str, set_name: str, keys: list[bytes],
                timeout_ms: int) -> tuple[bytes, list[int]]:
    """Bytes of one transaction that (re)adds every key with a fresh timeout, and the
    sequence numbers whose acknowledgements to expect."""
    begin = _message(_NFNL_MSG_BATCH_BEGIN, _NLM_F_REQUEST, next(seq), socket.AF_UNSPEC,
                     socket.htons(_NFNL_SUBSYS_NFTABLES), b"")
    # add, delete, add: succeeds whether or not the element exists, and restarts its timeout.
    steps = [(kind, key, timeout) for key in keys for kind, timeout in (
        (_NFT_MSG_NEWSETELEM, None), (_NFT_MSG_DELSETELEM, None),
        (_NFT_MSG_NEWSETELEM, timeout_ms))]
    numbers = [next(seq) for _ in steps]
    body = b"".join(_element_message(kind, n, table, set_name, key, timeout)
                    for (kind, key, timeout), n in zip(steps, numbers, strict=True))
    end = _message(_NFNL_MSG_BATCH_END, _NLM_F_REQUEST, next(seq), socket.AF_UNSPEC,
                   socket.htons(_NFNL_SUBSYS_NFTABLES), b"")
    return begin + body + end, numbers


class SetElementWriter:
    """A netlink socket that adds timed elements to knockgate's sets."""

    def __init__(self, table: str) -> None:
        self._table = table
        self._seq = itertools.count(int.from_bytes(os.urandom(3), "big"))
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
            self._sock.bind((0, 0))
        except OSError as exc:
            raise FirewallError(f"cannot open an nfnetlink socket: {exc}") from exc
        self._sock.settimeout(2.0)

    def grant(self, set_name: str, keys: list[bytes], timeout_ms: int) -> None:
        batch, expected = grant_batch(self._seq, self._table, set_name, keys, timeout_ms)
        try:
            self._sock.send(batch)
            errors = self._collect(set(expected))
        except OSError as exc:
            raise FirewallError(f"nfnetlink grant failed: {exc}") from exc
        failed = {code for code in errors.values() if code}
        if failed:
            reason = ", ".join(os.strerror(code) for code in sorted(failed))
            raise FirewallError(f"nftables refused the grant in set {set_name}: {reason}")

    def _collect(self, expected: set[int]) -> dict[int, int]:
        errors: dict[int, int] = {}
        while not expected <= errors.keys():
            # After an error the kernel has aborted the batch: take what is queued, then stop.
            flags = socket.MSG_DONTWAIT if any(errors.values()) else 0
            try:
                data = self._sock.recv(65536, flags)
            except BlockingIOError:
                break
            errors.update((seq, code) for seq, code in ack_errors(data).items()
                          if seq in expected)
        return errors

    def close(self) -> None:
        self._sock.close()
