"""Replay protection for SPA: each authenticated (key id, nonce) is admitted once.

Why the window may forget. A packet's timestamp is authenticated, so a copy of it carries the
same timestamp ``ts`` and ``open_at`` rejects it once ``now - ts > max_age``. An entry is only
forgotten when ``ts < now - max_age - margin``: by then every copy of that packet is already
stale, and stays stale unless the clock is stepped back by more than ``margin`` seconds. The
window re-checks the age itself, so this holds even if the caller opened the packet with a
larger ``max_age`` than the window was given.

The store persists entries so a restart does not reopen the window; the in-memory dict in front
of it answers "seen?" in O(1) with no I/O. Memory is bounded by ``max_entries``; when it is full
of unexpired entries, new packets are refused (fail closed), never admitted unrecorded. Only
authenticated packets get here, so filling it takes a valid key.

Admit in memory, save right after acting. ``admit`` records the entry in memory only, so a
grant does not wait for the store (a SQLite commit is the slowest step of an SPA packet's path
after idle, about 0.13 ms); the caller acts, then calls ``save`` before it reads the next
packet. While the daemon runs, a replay is refused from the moment of ``admit``. What the
order gives up: if the daemon dies in the fraction of a millisecond between the grant and the
save, that one packet could be admitted once more after a restart, only while it is younger
than ``max_age``, and only for what it asked (the same source unless its key allows NAT). A
store that fails is never skipped twice: ``save`` raises, and until a save succeeds every
``admit`` first retries it and refuses the packet if it fails again (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from knockgate.core.spa import VerifiedRequest
from knockgate.errors import InvalidMessage

DEFAULT_MARGIN = 60.0
DEFAULT_MAX_ENTRIES = 100_000


class ReplayStore(Protocol):
    """Where admitted nonces outlive the process (io/store.py has the SQLite one)."""

    def load(self, not_before: float) -> Iterable[tuple[bytes, bytes, int]]:
        """Every remembered (key id, nonce, timestamp) with timestamp >= ``not_before``."""
        ...

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        """Record durably before returning; False if (key id, nonce) was already recorded."""
        ...

    def prune(self, older_than: float) -> int:
        """Forget entries with timestamp < ``older_than``; returns how many."""
        ...


class ReplayWindow:
    """Admits each verified packet once; the storage is passed in, the time too."""

    def __init__(self, store: ReplayStore, *, now: float, max_age: float,
                 margin: float = DEFAULT_MARGIN,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_age < 0 or margin < 0 or max_entries < 1:
            raise ValueError("max_age and margin must be >= 0 and max_entries >= 1")
        self.max_age = max_age
        self.margin = margin
        self.max_entries = max_entries
        self._store = store
        self._unsaved: list[tuple[bytes, bytes, int]] = []
        self._save_failed = False
        self._seen: dict[tuple[bytes, bytes], int] = {
            (key_id, nonce): timestamp
            for key_id, nonce, timestamp in store.load(self._horizon(now))
        }

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, verified: VerifiedRequest, now: float) -> None:
        """Record ``verified`` as used, or raise InvalidMessage: call it before granting, and
        ``save`` after acting on it.

        After a failed save, store errors propagate from here: nothing is granted until the
        store works again.
        """
        self.admit_entry(verified.key_id, verified.nonce, verified.timestamp, now)

    def seen(self, key_id: bytes, nonce: bytes) -> bool:
        """A cheap look before any crypto (fwknop's rule: replay digest first)."""
        return (key_id, nonce) in self._seen

    def admit_entry(self, key_id: bytes, nonce: bytes, timestamp: int, now: float) -> None:
        """``admit`` for any authenticated (key id, nonce, timestamp), e.g. fwknop digests."""
        if self._save_failed:
            self.save()
        if abs(now - timestamp) > self.max_age:
            raise InvalidMessage("outside replay window")
        entry = (key_id, nonce)
        if entry in self._seen:
            raise InvalidMessage("replay")
        if len(self._seen) >= self.max_entries:
            self._forget_before(self._horizon(now))
            if len(self._seen) >= self.max_entries:
                raise InvalidMessage("replay cache full")
        self._seen[entry] = timestamp
        self._unsaved.append((key_id, nonce, timestamp))

    def save(self) -> int:
        """Write what ``admit`` recorded since the last save to the store. Store errors
        propagate and the entries wait for the next try. Returns how many entries the store
        already held: a second line of defence that should always say 0 (the window loads the
        store at start), so a caller logs anything else."""
        already = 0
        while self._unsaved:
            try:
                recorded = self._store.remember(*self._unsaved[0])
            except Exception:
                self._save_failed = True
                raise
            self._unsaved.pop(0)
            already += not recorded
        self._save_failed = False
        return already

    def prune(self, now: float) -> int:
        """Drop entries too old to matter, in memory and in the store: call it periodically.

        Returns how many the store forgot.
        """
        horizon = self._horizon(now)
        self._forget_before(horizon)
        return self._store.prune(horizon)

    def _horizon(self, now: float) -> float:
        return now - self.max_age - self.margin

    def _forget_before(self, horizon: float) -> None:
        self._seen = {entry: ts for entry, ts in self._seen.items() if ts >= horizon}
