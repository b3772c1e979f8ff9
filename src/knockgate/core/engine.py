"""Routes decoded packets to the door state machines that care about them."""

from __future__ import annotations

from collections.abc import Iterable

from knockgate.core.sequence import DoorSequence
from knockgate.model import Decision, Door, Packet

DEFAULT_MAX_PENDING = 65536


class Engine:
    """Pure: ``handle(packet, now)`` returns decisions; no sockets, no clocks."""

    def __init__(self, doors: Iterable[Door], max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.doors = {door.name: DoorSequence(door, max_pending) for door in doors}
        self._by_port: dict[tuple[str, int], tuple[DoorSequence, ...]] = {}
        for machine in self.doors.values():
            for key in {(f.proto, f.port) for f in machine.door.sequence}:
                self._by_port[key] = (*self._by_port.get(key, ()), machine)

    def watched_ports(self) -> frozenset[tuple[str, int]]:
        return frozenset(self._by_port)

    def handle(self, packet: Packet, now: float) -> list[Decision]:
        machines = self._by_port.get((packet.proto, packet.dport))
        if not machines:
            return []
        decisions: list[Decision] = []
        for machine in machines:
            decisions += machine.handle(packet.src, packet.proto, packet.dport, packet.flags, now)
        return decisions

    def pending(self) -> int:
        return sum(len(machine) for machine in self.doors.values())
