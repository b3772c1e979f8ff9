"""Routes decoded packets to the door state machines that care about them."""

from __future__ import annotations

from collections.abc import Iterable

from knockgate.core.kinds import knock_port
from knockgate.core.sequence import DoorSequence
from knockgate.model import Decision, Door, IPAddress


class Engine:
    """Pure: ``handle_knock(..., now)`` returns decisions; no sockets, no clocks."""

    def __init__(self, doors: Iterable[Door], max_pending: int) -> None:
        self.max_pending = max_pending
        # A one-time door whose file is used up has no sequence: it is closed for good.
        self.doors = {door.name: DoorSequence(door, max_pending) for door in doors
                      if door.sequence}
        self._index()

    def _index(self) -> None:
        self._by_port: dict[tuple[str, int], tuple[DoorSequence, ...]] = {}
        for machine in self.doors.values():
            for key in {knock_port(frame) for frame in machine.door.sequence}:
                self._by_port[key] = (*self._by_port.get(key, ()), machine)
        self.targets = frozenset(m.door.target.packed for m in self.doors.values()
                                 if m.door.target)

    def replace_door(self, door: Door) -> None:
        """Swap in a door's new definition (a one-time door's next sequence); its progress
        is forgotten, the other doors keep theirs."""
        self.doors.pop(door.name, None)
        if door.sequence:
            self.doors[door.name] = DoorSequence(door, self.max_pending)
        self._index()

    def forget(self, source: IPAddress) -> None:
        """``source`` loses its progress on every door (it scanned while knocking)."""
        for machine in self.doors.values():
            machine.forget(source.packed)

    def handle_knock(self, source: bytes, destination: bytes, proto: str, port: int,
                     flags: int, now: float) -> list[Decision]:
        """The hot path: addresses as packed bytes; decisions name the source as bytes too."""
        machines = self._by_port.get((proto, port))
        if not machines:
            return []
        decisions: list[Decision] = []
        for machine in machines:
            target = machine.door.target
            if target is not None and destination != target.packed:
                continue
            decisions += machine.handle(source, proto, port, flags, now)
        return decisions

    def vouch_first(self, source: bytes, door: str, started: float, now: float
                    ) -> list[Decision]:
        """The kernel kept ``door``'s first stage and saw ``source`` (packed) pass it no
        earlier than ``started``."""
        machine = self.doors.get(door)
        return machine.vouch_first(source, started, now) if machine is not None else []

    def counts_for(self, destination: bytes) -> bool:
        """Knocks to a door's target (packed) count even when it is not one of this host's
        addresses."""
        return destination in self.targets
