"""Grants as one raw nfnetlink batch: the only nftables operation on the packet path.

libnftables re-reads the ruleset cache before every command (about 30 syscalls, 0.3-0.5 ms on
our test bed); a grant only needs "add/delete/add this element", which the kernel takes as one
batch. The table itself is written through libnftables (io/nft.py); which set a grant goes to
and its keys are core/nft/grants.py's.

A grant usually comes after the daemon has idled, when every line of Python it runs costs several
times its warm price. So the batch around the keys is built once per set and shape, a grant
splices its keys in, and only the last message asks for an acknowledgement: one send, one recv.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence

from knockgate.errors import FirewallError
from knockgate.io.nlwire import HEADER, NLMSG_ERROR, ack_errors, attr, message, nested

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
_NFGENMSG = struct.Struct("=BBH")
_ATTR_HEADER = 4
_ACK = struct.Struct("=4xH2xI4xi")  # of an nlmsgerr: type, sequence, -errno
_REPLY_TIMEOUT = struct.pack("@ll", 2, 0)  # struct timeval: 2 s
_RECV_SIZE = 65536

# The fragments around each key (key.join(group) is that key's add/delete/add), and the
# acknowledgement that means the whole batch was committed.
_Template = tuple[tuple[tuple[bytes, ...], ...], tuple[int, int, int]]
_Shape = tuple[str, tuple[int, ...], int]  # set name, key lengths, timeout in ms


def _message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    return message(kind, flags, seq, _NFGENMSG.pack(family, 0, res_id) + body)


def _batch_edge(kind: int, seq: int) -> bytes:
    return _message(kind, _NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                    socket.htons(_NFNL_SUBSYS_NFTABLES), b"")


def _element_message(kind: int, flags: int, seq: int, table: str, set_name: str, key_len: int,
                     timeout_ms: int | None) -> tuple[bytes, bytes]:
    """The message with a ``key_len``-byte key, as the bytes before and after that key."""
    element = [nested(_NFTA_SET_ELEM_KEY, attr(_NFTA_DATA_VALUE, bytes(key_len)))]
    if timeout_ms is not None:
        element.append(attr(_NFTA_SET_ELEM_TIMEOUT, struct.pack("!Q", timeout_ms)))
    names = (attr(_NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
             + attr(_NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"))
    body = names + nested(_NFTA_SET_ELEM_LIST_ELEMENTS, nested(_NFTA_LIST_ELEM, *element))
    raw = _message((_NFNL_SUBSYS_NFTABLES << 8) | kind, _NLM_F_REQUEST | flags, seq,
                   _NFPROTO_INET, 0, body)
    # The key is the first payload byte of four nested attributes: elements, list, key, value.
    start = HEADER.size + _NFGENMSG.size + len(names) + 4 * _ATTR_HEADER
    return raw[:start], raw[start + key_len:]


def _key_fragments(table: str, set_name: str, key_len: int, timeout_ms: int, seq: int,
                   acked: bool) -> list[bytes]:
    """Add, delete, add of one key: the four fragments around its three copies. Add, delete,
    add succeeds whether or not the element exists, restarts its timeout, and needs nothing
    newer than Debian 12's kernel (6.1)."""
    steps = ((_NFT_MSG_NEWSETELEM, _NLM_F_CREATE, None),
             (_NFT_MSG_DELSETELEM, 0, None),
             (_NFT_MSG_NEWSETELEM, _NLM_F_CREATE | (_NLM_F_ACK if acked else 0), timeout_ms))
    (head1, tail1), (head2, tail2), (head3, tail3) = (
        _element_message(kind, flags, seq + n, table, set_name, key_len, timeout)
        for n, (kind, flags, timeout) in enumerate(steps))
    return [head1, tail1 + head2, tail2 + head3, tail3]


def _grant_template(table: str, set_name: str, key_lengths: tuple[int, ...], timeout_ms: int,
                    seq: int) -> _Template:
    """One transaction that (re)adds keys of these lengths with a fresh timeout, its messages
    numbered from ``seq``."""
    # Failures are reported unasked; a success reply only for the last element message, as
    # kernels before 6.10 never acknowledge BATCH_END.
    groups = [_key_fragments(table, set_name, key_len, timeout_ms, seq + 1 + 3 * index,
                             acked=index == len(key_lengths) - 1)
              for index, key_len in enumerate(key_lengths)]
    end = seq + 1 + 3 * len(key_lengths)
    groups[0][0] = _batch_edge(_NFNL_MSG_BATCH_BEGIN, seq) + groups[0][0]
    groups[-1][-1] += _batch_edge(_NFNL_MSG_BATCH_END, end)
    return tuple(map(tuple, groups)), (NLMSG_ERROR, end - 1, 0)


def _open_socket() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        sock.bind((0, 0))
    except OSError as exc:
        raise FirewallError(f"cannot open an nfnetlink socket: {exc}") from exc
    # A kernel timeout rather than settimeout(): Python would poll() before every send and recv.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _REPLY_TIMEOUT)
    return sock


class SetElementWriter:
    """A netlink socket that adds timed elements to knockgate's sets."""

    def __init__(self, table: str) -> None:
        self._table = table
        # Every batch reuses these numbers: nothing is left queued that could be mistaken for a
        # reply to a later batch, since the kernel answers before send() returns.
        self._seq = int.from_bytes(os.urandom(3), "big")
        self._templates: dict[_Shape, _Template] = {}
        self._sock = _open_socket()

    def grant(self, set_name: str, keys: Sequence[bytes], timeout_ms: int) -> None:
        if not keys:
            return
        shape = (set_name, tuple(map(len, keys)), timeout_ms)
        groups, committed = self._templates.get(shape) or self._remember(shape)
        try:
            self._sock.send(b"".join(map(bytes.join, keys, groups)))
            reply = self._sock.recv(_RECV_SIZE)
            if len(reply) >= _ACK.size and _ACK.unpack_from(reply) == committed:
                return
            reason = self._read_refusal(reply)
        except BlockingIOError as exc:
            raise FirewallError("nfnetlink grant: no reply from the kernel in 2 s") from exc
        except OSError as exc:
            raise FirewallError(f"nfnetlink grant failed: {exc}") from exc
        raise FirewallError(f"nftables refused the grant in set {set_name}: {reason}")

    def _remember(self, shape: _Shape) -> _Template:
        template = _grant_template(self._table, *shape, self._seq)
        self._templates[shape] = template
        return template

    def _read_refusal(self, reply: bytes) -> str:
        """Why the kernel aborted the batch, once every reply it queued is read."""
        codes = set(ack_errors(reply).values())
        while True:
            try:
                codes.update(ack_errors(self._sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)).values())
            except BlockingIOError:
                return ", ".join(map(os.strerror, sorted(codes - {0}))) or "unexpected reply"

    def close(self) -> None:
        self._sock.close()
