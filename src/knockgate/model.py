"""Frozen values shared by every layer: packets, frames, doors and the engine's decisions.

They are NamedTuples, which every command can afford: `knockgate knock` imports this module,
and importing dataclasses (inspect, ast, dis, tokenize) cost it ~5 ms. Their annotations are
objects, not strings (no ``from __future__ import annotations``): typing.NamedTuple compiles
each string annotation, and the first compile() of a process costs ~0.9 ms (Python sets up
its AST types).
"""

import enum
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the model is imported by every layer: it imports none of them at run time
    from knockgate.core.spa import SpaKey as _SpaKey
else:
    _SpaKey = object  # what SpaKeyConfig.key's annotation is at run time: not a string

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
# The UDP port SPA clients send to and the daemon listens on unless told otherwise (fwknop's).
DEFAULT_SPA_PORT = 62201
# fwknopd's defaults, which knockgate's [fwknop] keeps: where its access.conf lives and how
# many seconds a packet stays valid.
FWKNOP_ACCESS_PATH = "/etc/fwknop/access.conf"
FWKNOP_MAX_AGE = 120.0
# A decision's source is an address, or its packed bytes on the daemon's hot path
# (Engine.handle_knock), where building address objects per packet would cost too much.
Source = IPAddress | bytes


class TcpFlag(enum.IntFlag):
    """The six classic TCP flags. Their names, lower-cased, are knockd's and nftables' words
    (``syn``); their first letters are tportknockd's (``s``): the one vocabulary of flags."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20

    @property
    def word(self) -> str:
        return str(self.name).lower()

    @property
    def letter(self) -> str:
        return self.word[0]


# ECE and CWR are left out on purpose: an ECN-capable stack sets them on a plain SYN.
ALL_FLAGS = 0x3F


class Packet(NamedTuple):
    """One captured IP packet, already decoded. ``flags`` is 0 for UDP.

    Packets and decisions are NamedTuples, not frozen dataclasses: one is built per packet,
    and a frozen dataclass's __init__ costs several times as much."""

    src: IPAddress
    dst: IPAddress
    proto: str
    sport: int
    dport: int
    flags: int = 0
    payload: bytes = b""


class Frame(NamedTuple):
    """One knock: a protocol, a destination port and, for TCP, which flags must be set.

    A packet matches when ``packet.flags & flags_mask == flags_value``; a mask of 0 ignores flags.
    """

    proto: str
    port: int
    flags_mask: int = 0
    flags_value: int = 0

    def matches(self, proto: str, port: int, flags: int) -> bool:
        return (
            port == self.port
            and proto == self.proto
            and flags & self.flags_mask == self.flags_value
        )


class PortSpec(NamedTuple):
    """A port a door opens: ``tcp:22``. Ordered by protocol, then port (sorted port lists)."""

    proto: str
    port: int

    def __str__(self) -> str:
        return f"{self.proto}:{self.port}"


class OneTimeSource(NamedTuple):
    """A door whose sequence is the next unused line of a knockd One_Time_Sequences file.

    ``offset`` is where the current line starts in the file (None: the file is used up and the
    door is closed for good); TCP knocks read from the file get ``flags_mask``/``flags_value``.
    """

    path: str
    flags_mask: int
    flags_value: int
    offset: int | None


# "kernel": nftables matches a door's knocks itself; "userspace": the daemon does.
ENGINES = ("kernel", "userspace")


class Door(NamedTuple):
    """A door as configured. Its field defaults are the [[door]] options' defaults:
    config/schema.py reads them from here."""

    name: str
    sequence: tuple[Frame, ...]
    timeout: float = 10.0
    open: tuple[PortSpec, ...] = ()
    open_for: float = 30.0
    command: tuple[str, ...] = ()
    stop_command: tuple[str, ...] = ()
    command_delay: float = 10.0
    line: int = 0
    # knockd's _6 variants: run instead of command / stop_command for IPv6 sources.
    command_6: tuple[str, ...] = ()
    stop_command_6: tuple[str, ...] = ()
    # knockd's Target: only knocks addressed to this address count.
    target: IPv4Address | IPv6Address | None = None
    one_time: OneTimeSource | None = None
    shell: bool = False
    # One of ENGINES; where the kernel cannot run a door, the config falls back to userspace.
    engine: str = "kernel"
    engine_reason: str = ""
    # Seconds a source that breaks the sequence (or scans) is ignored; kernel engine only.
    penalty: float = 0.0

    def commands_for(self, source: IPv4Address | IPv6Address) -> tuple[tuple[str, ...],
                                                                       tuple[str, ...]]:
        """(command, stop_command) for a source of this address family."""
        if source.version == 6 and (self.command_6 or self.stop_command_6):
            return self.command_6, self.stop_command_6
        return self.command, self.stop_command


class SpaKeyConfig(NamedTuple):
    """One SPA user: the key and what it may do. Its field defaults are the [[spa.key]]
    options' defaults: config/schema.py reads them from here."""

    key: _SpaKey
    open: tuple[PortSpec, ...] = ()
    open_for: float = 30.0
    # Read-only: a NamedTuple's default is one object, shared by every key that takes it.
    actions: Mapping[int, tuple[str, ...]] = MappingProxyType({})
    sources: tuple[IPNetwork, ...] = ()
    allow_nat: bool = False
    line: int = 0


# --- decisions returned by the engine -------------------------------------------------------


class Progress(NamedTuple):
    """A source matched step ``step`` (1-based) of ``total`` of a door's sequence."""

    door: str
    source: Source
    step: int
    total: int


class Reset(NamedTuple):
    """A source lost its progress on a door; ``reason`` says why, for the log."""

    door: str
    source: Source
    reason: str


class Open(NamedTuple):
    """A source completed a door's sequence: grant it the door's ports."""

    door: str
    source: Source


Decision = Progress | Reset | Open
