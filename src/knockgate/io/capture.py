"""AF_PACKET capture with a kernel BPF filter, so packets that cannot matter never reach Python."""

from __future__ import annotations

import ctypes
import errno
import socket
from collections.abc import Iterator

from knockgate.errors import CaptureError
from knockgate.io.bpf import compile_filter, pack_program

_ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
_PACKET_HOST = 0
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
        for name in interfaces:
            try:
                socket.if_nametoindex(name)
            except OSError as exc:
                raise CaptureError(
                    f"no interface {name!r}; run 'knockgate interfaces' to list them"
                ) from exc
        self.interfaces = frozenset(interfaces)
        program = pack_program(compile_filter(filter_expression))
        try:
            # Unbound, so it sees every interface, including ones that appear later.
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                       socket.htons(_ETH_P_ALL))
        except PermissionError as exc:
            raise CaptureError("capturing packets needs root (CAP_NET_RAW)") from exc
        try:
            self._attach(program)
            self._grow_buffer()
            self._sock.setblocking(False)
            self._discard_unfiltered()
        except OSError as exc:
            self._sock.close()
            raise CaptureError(f"cannot set up packet capture: {exc}") from exc

    def _attach(self, program: bytes) -> None:
        buffer = ctypes.create_string_buffer(program)
        fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))

    def _grow_buffer(self) -> None:
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)

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
        self._attach(pack_program(compile_filter(filter_expression)))

    def drain(self) -> Iterator[tuple[bytes, str]]:
        """Yield (ip packet, interface) for packets addressed to this host, up to one batch."""
        for _ in range(_BATCH):
            try:
                data, address = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                    continue  # an interface went away mid-read; the others still work
                raise
            interface, _, pkttype = address[0], address[1], address[2]
            if pkttype != _PACKET_HOST or interface == "lo":
                continue
            if self.interfaces and interface not in self.interfaces:
                continue
            yield data, interface

    def close(self) -> None:
        self._sock.close()


def list_interfaces() -> list[tuple[int, str]]:
    return sorted(socket.if_nameindex())
