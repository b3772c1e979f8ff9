"""Knock kinds: each module here is one way of knocking, and the only place that knows it.

A kind says, for its frames:

- how they are written in a config and on the command line (``parse_frame``, ``format_frame``;
  the word before the first colon, ``PROTOCOLS``, picks the kind);
- how the kernel matches them (``nft_match`` and ``nft_mismatches``, for kernel doors, the
  first stage of userspace doors and the scan guard);
- which packets the capture must let through when the daemon reads them (``bpf_clause``);
- how a captured packet becomes a knock: ``decode_transport`` reads the transport header of
  the IP protocols in ``IP_PROTOCOLS`` (core/decode.py has stripped the IP layer), and
  ``knock_port`` is what the engine keys a frame on.

Adding a kind is adding a module that implements ``KnockKind`` and listing it in ``KINDS``.
"""

from __future__ import annotations

from typing import Protocol

from knockgate.core.kinds import ports
from knockgate.errors import FrameError
from knockgate.model import Frame


class KnockKind(Protocol):
    """What a knock kind module provides (a module satisfies this protocol)."""

    PROTOCOLS: tuple[str, ...]
    IP_PROTOCOLS: dict[int, str]

    def parse_frame(self, text: str) -> Frame: ...
    def format_frame(self, frame: Frame) -> str: ...
    def knock_port(self, frame: Frame) -> tuple[str, int]: ...
    def nft_match(self, frame: Frame) -> str: ...
    def nft_mismatches(self, frame: Frame) -> list[str]: ...
    def bpf_clause(self, frame: Frame) -> str: ...
    def decode_transport(self, proto: int, body: memoryview
                         ) -> tuple[str, int, int, int, bytes] | None: ...


KINDS: tuple[KnockKind, ...] = (ports,)
_BY_PROTOCOL = {proto: kind for kind in KINDS for proto in kind.PROTOCOLS}


def kind_of(frame: Frame) -> KnockKind:
    return _BY_PROTOCOL[frame.proto]


def parse_frame(text: str) -> Frame:
    """A frame in any kind's syntax; knockd's client syntax (a bare port) is a port knock."""
    word = text.strip().lower().split(":", 1)[0]
    kind = _BY_PROTOCOL.get(word, ports if ports.is_number(word) else None)
    if kind is None:
        raise FrameError(f"bad frame {text!r}", hint=ports.FRAME_HINT)
    return kind.parse_frame(text)


def format_frame(frame: Frame) -> str:
    return kind_of(frame).format_frame(frame)


def nft_match(frame: Frame) -> str:
    return kind_of(frame).nft_match(frame)


def nft_mismatches(frame: Frame) -> list[str]:
    return kind_of(frame).nft_mismatches(frame)


def bpf_clause(frame: Frame) -> str:
    return kind_of(frame).bpf_clause(frame)


def knock_port(frame: Frame) -> tuple[str, int]:
    return kind_of(frame).knock_port(frame)
