"""The port knock kind: TCP and UDP packets to a port, TCP with a pattern of flags.

Accepted forms (case-insensitive):

- ``tcp:PORT`` — a SYN, exactly what ``connect()`` sends;
- ``tcp:PORT:LETTERS`` — tportknockd's letters ``f s r p a u`` (these flags set, the others
  clear), ``x`` (all six set), ``n`` (none set), ``i`` (ignore flags);
- ``tcp:PORT:syn,!ack`` — knockd's words: listed flags set, ``!`` flags clear, others free;
- ``udp:PORT``;
- knockd's client syntax ``PORT`` and ``PORT:tcp`` / ``PORT:udp``.

The kernel matches these frames itself (``nft_match``); captured ones pass the BPF clause
``bpf_clause``, and core/decode.py reads their port and flags.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from knockgate.errors import FrameError
from knockgate.model import ALL_FLAGS, Frame, PortSpec, TcpFlag

PROTOCOLS: tuple[str, ...] = ("tcp", "udp")
# IANA protocol numbers of the transports this kind decodes (core/decode.py).
IP_PROTOCOLS: dict[int, str] = {6: "tcp", 17: "udp"}
_LETTERS = {flag.letter: flag for flag in TcpFlag}
_WORDS = {flag.word: flag for flag in TcpFlag}
FRAME_HINT = "write tcp:PORT[:FLAGS] or udp:PORT, e.g. 'tcp:7000'"
FLAGS_HINT = (
    "use tportknockd letters f s r p a u, or x (all), n (none), i (ignore), "
    "or knockd words like 'syn,!ack'"
)


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_port(text: str) -> int:
    if not is_number(text):
        raise FrameError(f"port {text!r} is not a number", hint="ports are 1-65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise FrameError(f"port {port} is out of range", hint="ports are 1-65535")
    return port


def parse_flags(text: str) -> tuple[int, int]:
    """Return (mask, value) for a flags field."""
    spec = text.strip().lower()
    if not spec:
        raise FrameError("empty TCP flags", hint=FLAGS_HINT)
    if "," in spec or "!" in spec or spec in _WORDS:
        return _parse_flag_words(spec)
    return _parse_flag_letters(spec)


def _parse_flag_words(spec: str) -> tuple[int, int]:
    return _flag_bits([word.strip() for word in spec.split(",")], _WORDS, "TCP flag", "")


def _parse_flag_letters(spec: str) -> tuple[int, int]:
    if spec in ("i", "x", "n"):
        return {"i": (0, 0), "x": (ALL_FLAGS, ALL_FLAGS), "n": (ALL_FLAGS, 0)}[spec]
    return ALL_FLAGS, _flag_bits(spec, _LETTERS, "TCP flag letter", f" in {spec!r}")[1]


def _flag_bits(tokens: Iterable[str], names: Mapping[str, TcpFlag], what: str, where: str
               ) -> tuple[int, int]:
    """(mask, value) of flag tokens; a token with a leading ``!`` must be clear."""
    mask = value = 0
    for token in tokens:
        negated = token.startswith("!")
        name = token[1:] if negated else token
        flag = names.get(name)
        if flag is None:
            raise FrameError(f"unknown {what} {token!r}{where}", hint=FLAGS_HINT)
        if mask & flag:
            raise FrameError(f"{what} {name!r} given twice", hint=FLAGS_HINT)
        mask |= flag
        if not negated:
            value |= flag
    return mask, value


def parse_frame(text: str) -> Frame:
    parts = text.strip().lower().split(":")
    if is_number(parts[0]):
        return _parse_knockd_client_frame(parts, text)
    if parts[0] not in PROTOCOLS or len(parts) < 2:
        raise FrameError(f"bad frame {text!r}", hint=FRAME_HINT)
    proto, port = parts[0], parse_port(parts[1])
    if proto == "udp":
        if len(parts) != 2:
            raise FrameError(f"bad frame {text!r}: UDP has no flags", hint="write udp:PORT")
        return Frame("udp", port)
    if len(parts) == 2:
        return Frame("tcp", port, ALL_FLAGS, TcpFlag.SYN)
    if len(parts) > 3:
        raise FrameError(f"bad frame {text!r}", hint="write tcp:PORT[:FLAGS]")
    mask, value = parse_flags(parts[2])
    return Frame("tcp", port, mask, value)


def _parse_knockd_client_frame(parts: list[str], text: str) -> Frame:
    port = parse_port(parts[0])
    if len(parts) == 1 or parts[1:] == ["tcp"]:
        return Frame("tcp", port, ALL_FLAGS, TcpFlag.SYN)
    if parts[1:] == ["udp"]:
        return Frame("udp", port)
    raise FrameError(f"bad frame {text!r}", hint="knockd style is PORT or PORT:udp")


def parse_port_spec(text: str) -> PortSpec:
    parts = text.strip().lower().split(":")
    if len(parts) != 2 or parts[0] not in PROTOCOLS:
        raise FrameError(f"bad port {text!r}", hint="write tcp:PORT or udp:PORT, e.g. 'tcp:22'")
    return PortSpec(parts[0], parse_port(parts[1]))


def format_flags(mask: int, value: int) -> str:
    if mask == 0:
        return "i"
    if mask == ALL_FLAGS:
        if value == ALL_FLAGS:
            return "x"
        if value == 0:
            return "n"
        return "".join(flag.letter for flag in TcpFlag if value & flag)
    return flag_words(mask, value)


def flag_words(mask: int, value: int) -> str:
    """knockd's words for a flag pattern: ``syn,!ack``."""
    return ",".join(flag.word if value & flag else f"!{flag.word}"
                    for flag in TcpFlag if mask & flag)


def format_frame(frame: Frame) -> str:
    if frame.proto == "udp":
        return f"udp:{frame.port}"
    if (frame.flags_mask, frame.flags_value) == (ALL_FLAGS, TcpFlag.SYN):
        return f"tcp:{frame.port}"
    return f"tcp:{frame.port}:{format_flags(frame.flags_mask, frame.flags_value)}"


def knock_port(frame: Frame) -> tuple[str, int]:
    """What a frame is keyed on by the engine, the capture filter and the scan guard."""
    return frame.proto, frame.port


def _nft_flags(bits: int) -> str:
    return "|".join(flag.word for flag in TcpFlag if bits & flag) or "0x0"


def nft_match(frame: Frame) -> str:
    """The nftables match for a packet that is ``frame``."""
    if frame.proto == "udp":
        return f"udp dport {frame.port}"
    if not frame.flags_mask:
        return f"tcp dport {frame.port}"
    return (f"tcp dport {frame.port} tcp flags & ({_nft_flags(frame.flags_mask)}) == "
            f"{_nft_flags(frame.flags_value)}")


def nft_mismatches(frame: Frame) -> list[str]:
    """nftables matches that each catch part of "not ``frame``"; together they catch all of
    it (for TCP and UDP packets)."""
    # Two plain matches, not "meta l4proto . th dport != { tcp . N }": nft makes an anonymous
    # set of that, and each one slows a large table's transaction (1000 doors: 20 s -> 8 s).
    conditions = [f"meta l4proto != {frame.proto}", f"{frame.proto} dport != {frame.port}"]
    if frame.proto == "tcp" and frame.flags_mask:
        conditions.append(f"tcp dport {frame.port} tcp flags & "
                          f"({_nft_flags(frame.flags_mask)}) != "
                          f"{_nft_flags(frame.flags_value)}")
    return conditions


def bpf_clause(frame: Frame) -> str:
    """The pcap filter clause that lets a captured ``frame`` through (flags are checked in
    Python: a door ignores packets whose flags match none of its frames)."""
    return f"{frame.proto} dst port {frame.port}"


def decode_transport(proto: int, body: memoryview
                     ) -> tuple[str, int, int, int, bytes] | None:
    """(proto, source port, destination port, flags, payload) of the TCP segment or UDP
    datagram ``body``, IP protocol ``proto``; None if it is cut short or lies about its
    length. core/decode.py reads the same fields in place on its IPv4 fast path."""
    if IP_PROTOCOLS.get(proto) == "tcp":
        if len(body) < 20:
            return None
        sport, dport = struct.unpack_from("!HH", body, 0)
        data_offset = (body[12] >> 4) * 4
        if data_offset < 20 or data_offset > len(body):
            return None
        return "tcp", sport, dport, body[13], bytes(body[data_offset:])
    if len(body) < 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", body, 0)
    if length < 8 or length > len(body):
        return None
    return "udp", sport, dport, 0, bytes(body[8:length])
