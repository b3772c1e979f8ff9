"""The gate: every decision the daemon takes about knocks, pure. Packets, kernel events and the
time go in; decisions come out. The daemon only reads, and applies what it is told.

Two engines run userspace doors (core/engine.py): ``captured`` reads every knock of its doors
from the capture socket; ``staged`` reads the knocks of doors whose first stage the kernel keeps
(core/nft/first_stage.py), handed over through NFLOG. Kernel doors need no engine: the gate
only turns their NFLOG openings into ``OpenedInKernel``.

The scan guard (core/nft/scan_guard.py) reports, over NFLOG, sources that touched another port
while knocking. That report races the capture socket: for one packet the kernel queues its NFLOG
event before any later packet reaches the capture socket, but the daemon reads the two sockets
in turns. These rules keep that race fail closed (tests/unit/test_gate.py has one table row each):

1. A captured knock that completes a door does not open it yet: the gate holds the opening and
   says ``SyncKernel``; the daemon reads every NFLOG event queued by then into ``on_kernel`` and
   calls ``release``.
2. A scan reset forgets its source on both engines (``Forgotten``) and drops the openings held
   for it (``NotOpened``).
3. A handed knock that completes a door opens it (``Granted``), unless a scan reset of that
   source comes later in the same batch of events: NFLOG keeps the kernel's order, so nothing
   logged earlier can still be unread.
4. A hand-over counts the door's first knock as sent one stage ago (``earliest_first_knock``).
5. A kernel opening becomes ``OpenedInKernel`` for a kernel door, and is ignored for any other
   name (a door removed by a reload).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from ipaddress import ip_address
from typing import NamedTuple

from knockgate.core.decode import Knock, decode_datagram, decode_knock
from knockgate.core.engine import Engine
from knockgate.core.kernel_events import (
    HandedKnock,
    Handover,
    KernelEvent,
    KernelOpened,
    ScanReset,
)
from knockgate.core.kinds import bpf_clause
from knockgate.core.nft.first_stage import earliest_first_knock, staged_doors
from knockgate.model import Decision, Door, IPAddress, Open, Packet, Progress, Reset


class SyncKernel(NamedTuple):
    """Read every NFLOG event queued so far, hand them to ``on_kernel``, then call
    ``release``: an opening waits for the scan guard's word on its source."""


class NotOpened(NamedTuple):
    door: str
    source: IPAddress
    reason: str


class Forgotten(NamedTuple):
    """``source`` touched another port while knocking and lost its progress on every door."""

    source: IPAddress


class OpenedInKernel(NamedTuple):
    """A kernel door opened for ``source``: log it and run the door's commands."""

    door: Door
    source: IPAddress


class Granted(NamedTuple):
    """Open ``door`` for ``source`` (userspace engines), and run its commands."""

    door: Door
    source: IPAddress


class VerifySpa(NamedTuple):
    """A datagram to an SPA port: the SPA services decide."""

    packet: Packet


GateDecision = (Progress | Reset | NotOpened | Forgotten | Granted | OpenedInKernel | SyncKernel
                | VerifySpa)


class Gate:
    """The userspace engines and the rules between them and the kernel's events."""

    def __init__(self, doors: Iterable[Door], max_pending: int,
                 spa_ports: frozenset[int] = frozenset()) -> None:
        doors = list(doors)
        staged = staged_doors(doors)
        self.doors = {door.name: door for door in doors}
        self.captured = Engine([door for door in doors
                                if door.engine == "userspace" and door not in staged],
                               max_pending)
        self.staged = Engine(staged, max_pending)
        self.spa_ports = spa_ports
        self._held: dict[bytes, list[str]] = {}  # packed source -> doors it completed

    def capture_clauses(self) -> list[str]:
        """pcap filter clauses for the knocks the captured engine reads."""
        frames = {frame for machine in self.captured.doors.values()
                  for frame in machine.door.sequence}
        return sorted({bpf_clause(frame) for frame in frames})

    def replace_door(self, door: Door) -> None:
        """A one-time door's next sequence; the door's progress is forgotten."""
        self.doors[door.name] = door
        self.captured.replace_door(door)

    # --- the capture socket --------------------------------------------------------------

    def on_capture(self, data: bytes, now: float, local: Container[bytes]
                   ) -> list[GateDecision]:
        """One captured IP packet; ``local``: this host's addresses, packed."""
        knock = decode_knock(data)
        if knock is None:
            return []
        if knock.dst not in local and not self.captured.counts_for(knock.dst):
            return []
        if knock.proto == "udp" and knock.dport in self.spa_ports:
            packet = decode_datagram(data, knock)
            return [VerifySpa(packet)] if packet is not None else []
        return self._hold_openings(self._knock(self.captured, knock, now))

    def _hold_openings(self, decisions: list[Decision]) -> list[GateDecision]:
        out: list[GateDecision] = [d for d in decisions if not isinstance(d, Open)]
        openings = [d for d in decisions if isinstance(d, Open)]
        for opening in openings:
            assert isinstance(opening.source, bytes)  # the engine's hot path names sources packed
            self._held.setdefault(opening.source, []).append(opening.door)
        return [*out, SyncKernel()] if openings else out

    def release(self) -> list[GateDecision]:
        """The openings held for ``SyncKernel`` that no scan reset cancelled."""
        held, self._held = self._held, {}
        return [Granted(self.doors[door], ip_address(source))
                for source, doors in held.items() for door in doors if door in self.doors]

    # --- NFLOG -----------------------------------------------------------------------------

    def on_kernel(self, events: Sequence[KernelEvent], now: float) -> list[GateDecision]:
        """The events of one NFLOG read, in the order the kernel logged them."""
        out: list[GateDecision] = []
        for index, event in enumerate(events):
            if isinstance(event, ScanReset):
                out += self._scan_reset(event.source)
            elif isinstance(event, HandedKnock):
                knock = decode_knock(event.packet)
                if knock is not None:
                    out += self._handed(self._knock(self.staged, knock, now), events[index + 1:])
            elif isinstance(event, Handover):
                door = self.doors.get(event.door)
                if door is not None:
                    out += self._handed(self.staged.vouch_first(
                        event.source.packed, door.name, earliest_first_knock(door, now), now),
                        events[index + 1:])
            elif isinstance(event, KernelOpened):
                door = self.doors.get(event.door)
                if door is not None and door.engine == "kernel":
                    out.append(OpenedInKernel(door, event.source))
        return out

    def _scan_reset(self, source: IPAddress) -> list[GateDecision]:
        self.captured.forget(source)
        self.staged.forget(source)
        out: list[GateDecision] = [Forgotten(source)]
        for door in self._held.pop(source.packed, []):
            out.append(NotOpened(door, source, "it touched another port while knocking"))
        return out

    def _handed(self, decisions: list[Decision], later: Sequence[KernelEvent]
                ) -> list[GateDecision]:
        out: list[GateDecision] = []
        for decision in decisions:
            if not isinstance(decision, Open):
                out.append(decision)
                continue
            source = ip_address(decision.source)
            if ScanReset(source) in later:
                out.append(NotOpened(decision.door, source,
                                     "it touched another port while knocking"))
            elif decision.door in self.doors:
                out.append(Granted(self.doors[decision.door], source))
        return out

    @staticmethod
    def _knock(engine: Engine, knock: Knock, now: float) -> list[Decision]:
        return engine.handle_knock(knock.src, knock.dst, knock.proto, knock.dport, knock.flags,
                                   now)
