"""Kernel packet filters compiled by libpcap's own compiler (pcap_compile), through ctypes.

Admins already know the filter language, and libpcap's optimiser is better than anything we
would assemble by hand. We compile for raw IP (DLT_RAW) because the capture socket is SOCK_DGRAM:
the kernel has stripped the link header before the filter runs, whatever the interface.
"""

from __future__ import annotations

import ctypes
import struct

from knockgate.errors import CaptureError

_DLT_RAW = 12
_NETMASK_UNKNOWN = 0xFFFFFFFF
_SNAPLEN = 65535


class _Insn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _Program(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn)))


# The soname Debian's libpcap0.8 installs, tried first: ctypes.util.find_library runs ldconfig
# in a subprocess and imports shutil, tempfile and more (0.7 MB of the daemon's resident memory).
_SONAME = "libpcap.so.0.8"


def _libpcap() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(_SONAME)
    except OSError:
        from ctypes.util import find_library

        try:
            lib = ctypes.CDLL(find_library("pcap") or _SONAME)
        except OSError as exc:
            raise CaptureError(f"libpcap is missing ({exc}): apt-get install libpcap0.8"
                               ) from exc
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.pcap_compile.argtypes = (
        ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
    )
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
    lib.pcap_freecode.argtypes = (ctypes.POINTER(_Program),)
    lib.pcap_close.argtypes = (ctypes.c_void_p,)
    return lib


def compile_filter(expression: str) -> list[tuple[int, int, int, int]]:
    """Compile a pcap filter expression into classic BPF instructions (code, jt, jf, k)."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(_DLT_RAW, _SNAPLEN)
    if not handle:
        raise CaptureError("libpcap could not open a dead handle")
    program = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1,
                            _NETMASK_UNKNOWN) != 0:
            reason = lib.pcap_geterr(handle).decode(errors="replace")
            raise CaptureError(f"cannot compile filter {expression!r}: {reason}")
        insns = [program.bf_insns[i] for i in range(program.bf_len)]
        result = [(i.code, i.jt, i.jf, i.k) for i in insns]
        lib.pcap_freecode(ctypes.byref(program))
        return result
    finally:
        lib.pcap_close(handle)


def pack_program(insns: list[tuple[int, int, int, int]]) -> bytes:
    return b"".join(struct.pack("HBBI", *insn) for insn in insns)


# Linux's BPF extensions (linux/filter.h): loads of packet metadata libpcap cannot name for a
# program compiled without a live handle. Hand-assembled, and only this prologue.
_SKF_AD_OFF = 0xFFFFF000  # -0x1000 as an unsigned 32-bit offset
_SKF_AD_PKTTYPE = 4
_SKF_AD_IFINDEX = 8
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_RET_K = 0x06
_PACKET_HOST = 0
_LOOPBACK_IFINDEX = 1  # lo is always the first device of a network namespace


def host_only_prologue() -> list[tuple[int, int, int, int]]:
    """Drop, before the compiled filter runs, packets not addressed to this host at the link
    layer (broadcast, multicast, other hosts', our own outgoing) and packets on loopback."""
    return [
        (_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_PKTTYPE),
        (_JEQ_K, 1, 0, _PACKET_HOST),
        (_RET_K, 0, 0, 0),
        (_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_IFINDEX),
        (_JEQ_K, 0, 1, _LOOPBACK_IFINDEX),
        (_RET_K, 0, 0, 0),
    ]
