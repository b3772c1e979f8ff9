"""This host's own addresses, kept current through rtnetlink.

A knock counts only when addressed to this host. Addresses change (a PPPoE reconnect, DHCP), so
we dump them once and then follow RTM_NEWADDR / RTM_DELADDR notifications.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

from knockgate.errors import CaptureError
from knockgate.io.nlwire import attributes, message, messages
from knockgate.model import IPAddress

_NETLINK_ROUTE = 0
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100
_RTM_NEWADDR = 20
_RTM_DELADDR = 21
_RTM_GETADDR = 22
_NLMSG_DONE = 3
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFADDRMSG = struct.Struct("=BBBBI")


def parse_messages(data: bytes) -> Iterator[tuple[int, IPAddress | None]]:
    """Yield (message type, address) from a netlink buffer; address None for other messages."""
    for kind, _, body in messages(data):
        yield kind, _address_of(body) if kind in (_RTM_NEWADDR, _RTM_DELADDR) else None


def _address_of(body: bytes) -> IPAddress | None:
    if len(body) < _IFADDRMSG.size:
        return None
    family = body[0]
    attrs = attributes(body, _IFADDRMSG.size)
    # On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
    if family == socket.AF_INET and raw and len(raw) == 4:
        return IPv4Address(raw)
    if family == socket.AF_INET6 and raw and len(raw) == 16:
        return IPv6Address(raw)
    return None


class LocalAddresses:
    """The set of addresses assigned to this host, updated from netlink events."""

    def __init__(self) -> None:
        self.addresses: set[IPAddress] = set()
        self.packed: set[bytes] = set()  # the same, for the packet path
        self._events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
        self._events.bind((0, _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
        self._events.setblocking(False)
        self.refresh()

    def fileno(self) -> int:
        return self._events.fileno()

    def refresh(self) -> None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as dump:
            dump.send(message(_RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1,
                              _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)))
            found: set[IPAddress] = set()
            while True:
                replies = list(parse_messages(dump.recv(65536)))
                found |= {a for kind, a in replies if kind == _RTM_NEWADDR and a is not None}
                if any(kind in (_NLMSG_DONE, _NLMSG_ERROR) for kind, _ in replies):
                    break
        self.addresses = found
        self.packed = {address.packed for address in found}

    def on_readable(self) -> list[str]:
        """Apply pending notifications; return a description of each change for the log."""
        changes: list[str] = []
        while True:
            try:
                data = self._events.recv(65536)
            except BlockingIOError:
                return changes
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.refresh()  # we missed events; start from a fresh dump
                return [*changes, "address events overflowed; re-read all addresses"]
            for kind, address in parse_messages(data):
                if address is None:
                    continue
                if kind == _RTM_NEWADDR and address not in self.addresses:
                    self.addresses.add(address)
                    self.packed.add(address.packed)
                    changes.append(f"address {address} added")
                elif kind == _RTM_DELADDR:
                    self.addresses.discard(address)
                    self.packed.discard(address.packed)
                    changes.append(f"address {address} removed")

    def close(self) -> None:
        self._events.close()


def check_interfaces(names: tuple[str, ...]) -> None:
    """Refuse a named interface that does not exist (the kernel's rules would silently match
    nothing on it)."""
    for name in names:
        try:
            socket.if_nametoindex(name)
        except OSError as exc:
            raise CaptureError(
                f"no interface {name!r}; run 'knockgate interfaces' to list them"
            ) from exc
