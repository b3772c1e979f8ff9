"""The knock state machine of one door, for every source at once.

Rules, for a packet from source S on a port that matters to the door:

1. S's progress expires ``timeout`` seconds after S's *first* knock (not the latest one).
2. A packet matching the next expected frame advances S; the last frame opens the door and
   forgets S.
3. A packet matching the frame S matched last is a retransmission (a SYN retransmitted by the
   client's stack) and changes nothing.
4. A packet matching some *other* frame of the door is out of order: S loses its progress. If
   it matches the first frame, S starts over from step 1.
5. A packet on a door's port whose flags match none of the door's frames is ignored.

State is bounded, in two tiers. Sources that matched only the first frame (all a spoofed
first-knock flood can produce) live in one table of at most ``max_pending``; sources further
along live in another of at most ``max_pending // 4``, which such a flood never touches. When a
table is full its oldest attempt is evicted. Each table is a dict in the order its entries
arrived, so expired entries are pruned from the front, and every packet costs O(1) however
many sources are mid-sequence.
"""

from __future__ import annotations

from knockgate.model import Decision, Door, IPAddress, Open, Progress, Reset


class DoorSequence:
    """Tracks every source's progress on one door."""

    def __init__(self, door: Door, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.door = door
        self.max_pending = max_pending
        self.evicted = 0
        # source -> time of its first knock; arrival order == start order
        self._first: dict[IPAddress, float] = {}
        # source -> (frames matched, time of first knock), for sources past the first frame
        self._later: dict[IPAddress, tuple[int, float]] = {}
        self._later_cap = max(1, max_pending // 4)

    def __len__(self) -> int:
        return len(self._first) + len(self._later)

    def handle(
        self, source: IPAddress, proto: str, port: int, flags: int, now: float
    ) -> list[Decision]:
        self._prune(now)
        frames = self.door.sequence
        steps, started = self._progress(source, now)
        if frames[steps].matches(proto, port, flags):
            return [self._advance(source, steps + 1, started)]
        if steps and frames[steps - 1].matches(proto, port, flags):
            return []
        if steps == 0 or not any(f.matches(proto, port, flags) for f in frames):
            return []
        self.forget(source)
        decisions: list[Decision] = [Reset(self.door.name, source, "knock out of order")]
        if frames[0].matches(proto, port, flags):
            decisions.append(self._advance(source, 1, now))
        return decisions

    def forget(self, source: IPAddress) -> None:
        self._first.pop(source, None)
        self._later.pop(source, None)

    def _progress(self, source: IPAddress, now: float) -> tuple[int, float]:
        """(frames matched, first knock time); (0, now) for none or an expired attempt."""
        if source in self._first:
            steps, started = 1, self._first[source]
        else:
            steps, started = self._later.get(source, (0, now))
        if steps and now - started > self.door.timeout:
            self.forget(source)
            return 0, now
        return steps, started

    def _advance(self, source: IPAddress, steps: int, started: float) -> Decision:
        total = len(self.door.sequence)
        self.forget(source)
        if steps == total:
            return Open(self.door.name, source)
        if steps == 1:
            self._make_room(self._first, self.max_pending)
            self._first[source] = started
        else:
            self._make_room(self._later, self._later_cap)
            self._later[source] = (steps, started)
        return Progress(self.door.name, source, steps, total)

    def _make_room(self, table: dict[IPAddress, float] | dict[IPAddress, tuple[int, float]],
                   cap: int) -> None:
        if len(table) >= cap:
            del table[next(iter(table))]
            self.evicted += 1

    def _prune(self, now: float) -> None:
        deadline = now - self.door.timeout
        first = self._first
        while first and first[next(iter(first))] < deadline:
            del first[next(iter(first))]
        later = self._later
        while later and later[next(iter(later))][1] < deadline:
            del later[next(iter(later))]
