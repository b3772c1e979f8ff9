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
table is full its oldest attempt is evicted. Each table is an OrderedDict in the order its
entries arrived, so expired entries are pruned from the front, and every packet costs O(1)
however many sources are mid-sequence.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from knockgate.model import Decision, Door, Open, Progress, Reset, Source


class DoorSequence:
    """Tracks every source's progress on one door."""

    def __init__(self, door: Door, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.door = door
        self.max_pending = max_pending
        self.evicted = 0
        # OrderedDicts, not dicts: a dict that keeps losing its oldest entries makes every
        # next(iter()) step over the holes left at its front, O(n) per packet under a flood.
        # source -> time of its first knock; arrival order == start order
        self._first: OrderedDict[Source, float] = OrderedDict()
        # source -> (frames matched, time of first knock), for sources past the first frame
        self._later: OrderedDict[Source, tuple[int, float]] = OrderedDict()
        self._later_cap = max(1, max_pending // 4)

    def __len__(self) -> int:
        return len(self._first) + len(self._later)

    def handle(
        self, source: Source, proto: str, port: int, flags: int, now: float
    ) -> list[Decision]:
        self._prune(now)
        frames = self.door.sequence
        steps, started = self._progress(source, now)
        if frames[steps].matches(proto, port, flags):
            return [self._advance(source, steps, steps + 1, started)]
        if steps and frames[steps - 1].matches(proto, port, flags):
            return []
        if steps == 0 or not any(f.matches(proto, port, flags) for f in frames):
            return []
        self._remove(source, steps)
        decisions: list[Decision] = [Reset(self.door.name, source, "knock out of order")]
        if frames[0].matches(proto, port, flags):
            decisions.append(self._advance(source, 0, 1, now))
        return decisions

    def vouch_first(self, source: Source, started: float, now: float) -> list[Decision]:
        """The kernel saw ``source`` send the first frame, no earlier than ``started``
        (core/nft/first_stage.py): count it, unless the source is already further along. Such a
        start is up to one stage older than its neighbours in ``_first``; pruning from the
        front may leave it a little longer, but ``_progress`` checks expiry on every access."""
        self._prune(now)
        if self._progress(source, now)[0]:
            return []
        return [self._advance(source, 0, 1, started)]

    def forget(self, source: Source) -> None:
        self._first.pop(source, None)
        self._later.pop(source, None)

    def _progress(self, source: Source, now: float) -> tuple[int, float]:
        """(frames matched, first knock time); (0, now) for none or an expired attempt.
        Every dict operation hashes an address object, which is not cheap: few of them."""
        started = self._first.get(source)
        if started is not None:
            steps = 1
        else:
            steps, started = self._later.get(source, (0, now))
        if steps and now - started > self.door.timeout:
            self._remove(source, steps)
            return 0, now
        return steps, started

    def _remove(self, source: Source, steps: int) -> None:
        if steps == 1:
            del self._first[source]
        elif steps:
            del self._later[source]

    def _advance(self, source: Source, steps: int, new_steps: int, started: float
                 ) -> Decision:
        total = len(self.door.sequence)
        self._remove(source, steps)
        if new_steps == total:
            return Open(self.door.name, source)
        if new_steps == 1:
            self._make_room(self._first, self.max_pending)
            self._first[source] = started
        else:
            self._make_room(self._later, self._later_cap)
            self._later[source] = (new_steps, started)
        return Progress(self.door.name, source, new_steps, total)

    def _make_room(self, table: OrderedDict[Source, Any], cap: int) -> None:
        if len(table) >= cap:
            table.popitem(last=False)
            self.evicted += 1

    def _prune(self, now: float) -> None:
        deadline = now - self.door.timeout
        first = self._first
        while first and first[next(iter(first))] < deadline:
            first.popitem(last=False)
        later = self._later
        while later and later[next(iter(later))][1] < deadline:
            later.popitem(last=False)
