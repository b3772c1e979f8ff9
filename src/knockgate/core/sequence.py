"""The knock state machine of one door, for every source at once.

Rules, for a packet from source S on a port that matters to the door:

1. S's progress expires ``timeout`` seconds after S's *first* knock (not the latest one).
2. A packet matching the next expected frame advances S; the last frame opens the door and
   forgets S.
3. A packet matching the frame S matched last is a retransmission (a SYN retried by the
   client's stack) and changes nothing.
4. A packet matching some *other* frame of the door is out of order: S loses its progress. If
   it matches the first frame, S starts over from step 1.
5. A packet on a door's port whose flags match none of the door's frames is ignored.

State is bounded: at most ``max_pending`` sources are remembered; the oldest attempt is evicted
first. Entries live in a dict in the order their attempts started, so expired ones are pruned
from the front and every packet costs O(1) however many sources are mid-sequence.
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
        # source -> (steps matched, time of first knock); insertion order == start order
        self._pending: dict[IPAddress, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def handle(
        self, source: IPAddress, proto: str, port: int, flags: int, now: float
    ) -> list[Decision]:
        self._prune(now)
        frames = self.door.sequence
        steps, started = self._pending.get(source, (0, now))
        if frames[steps].matches(proto, port, flags):
            return [self._advance(source, steps + 1, started)]
        if steps and frames[steps - 1].matches(proto, port, flags):
            return []
        if steps == 0 or not any(f.matches(proto, port, flags) for f in frames):
            return []
        del self._pending[source]
        decisions: list[Decision] = [Reset(self.door.name, source, "knock out of order")]
        if frames[0].matches(proto, port, flags):
            decisions.append(self._advance(source, 1, now))
        return decisions

    def forget(self, source: IPAddress) -> None:
        self._pending.pop(source, None)

    def _advance(self, source: IPAddress, steps: int, started: float) -> Decision:
        total = len(self.door.sequence)
        if steps == total:
            self._pending.pop(source, None)
            return Open(self.door.name, source)
        if source not in self._pending and len(self._pending) >= self.max_pending:
            del self._pending[next(iter(self._pending))]
            self.evicted += 1
        self._pending[source] = (steps, started)
        return Progress(self.door.name, source, steps, total)

    def _prune(self, now: float) -> None:
        deadline = now - self.door.timeout
        pending = self._pending
        while pending:
            oldest = next(iter(pending))
            if pending[oldest][1] >= deadline:
                return
            del pending[oldest]
