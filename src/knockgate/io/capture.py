"""AF_PACKET capture with a kernel BPF filter, so packets that cannot matter never reach Python."""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Iterator

from knockgate.errors import CaptureError
from knockgate.io.bpf import compile_filter, host_only_prologue, pack_program
from knockgate.io.netlink import check_interfaces
from knockgate.io.sockopts import grow_receive_buffer

_ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26
_RCVBUF = 8 * 1024 * 1024
_BATCH = 512


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class Capture:
    """One SOCK_DGRAM packet socket on every interface, filtered in the kernel.

    ``interfaces`` empty means every interface but loopback, including ones that appear later
    (a PPPoE link that comes back).
    """

    def __init__(self, filter_expression: str, interfaces: tuple[str, ...] = ()) -> None:
        check_interfaces(interfaces)
        self.interfaces = frozenset(interfaces)
        program = _program(filter_expression)
        try:
            # Unbound, so it sees every interface, including ones that appear later.
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                       socket.htons(_ETH_P_ALL))
        except PermissionError as exc:
            raise CaptureError("capturing packets needs root (CAP_NET_RAW)") from exc
        try:
            self._attach(program)
            grow_receive_buffer(self._sock, _RCVBUF)
            self._sock.setblocking(False)
            self._discard_unfiltered()
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"cannot set up packet capture: {exc}") from exc

    def _attach(self, program: bytes) -> None:
        buffer = ctypes.create_string_buffer(program)
        fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))

    def _discard_unfiltered(self) -> None:
        """Drop what was queued between socket() and the filter attach: it was not filtered."""
        while True:
            try:
                self._sock.recv(1)
            except BlockingIOError:
                return

    def fileno(self) -> int:
        return self._sock.fileno()

    def replace_filter(self, filter_expression: str) -> None:
        self._attach(_program(filter_expression))

    def drain(self) -> Iterator[bytes]:
        """Yield the IP packets addressed to this host, up to one batch.

        The kernel filter already dropped other hosts' packets and loopback. Only when
        interfaces are named is the sender's address read: CPython looks the interface name up
        with an ioctl for every packet it returns an AF_PACKET address for.
        """
        for _ in range(_BATCH):
            try:
                if not self.interfaces:
                    yield self._sock.recv(65535)
                    continue
                data, address = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                    continue  # an interface went away mid-read; the others still work
                raise
            if address[0] in self.interfaces:
                yield data

    def close(self) -> None:
        self._sock.close()


def _program(filter_expression: str) -> bytes:
    return pack_program(host_only_prologue() + compile_filter(filter_expression))


def list_interfaces() -> list[tuple[int, str]]:
    return sorted(socket.if_nameindex())
