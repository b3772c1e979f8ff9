"""Replay protection for SPA: each authenticated (key id, nonce) is admitted once.

Why the window may forget. A packet's timestamp is authenticated, so a copy of it carries the
same timestamp ``ts`` and ``open_at`` rejects it once ``now - ts > max_age``. An entry is only
forgotten when ``ts < now - max_age - margin``: by then every copy of that packet is already
stale, and stays stale unless the clock is stepped back by more than ``margin`` seconds. The
window re-checks the age itself, so this holds even if the caller opened the packet with a
larger ``max_age`` than the window was given.

What the window vouches for. Forgetting is only safe while ``max_age`` stays what it was when
the entry was forgotten: raise it, and a forgotten packet is young enough again. So a window
knows the oldest timestamp it can vouch for (``vouches_from``): every packet ever admitted
with a timestamp at or after it is in memory. It refuses any packet older than that, whatever
``max_age`` says. The store keeps that point on disk too (raised by each prune), so a restart
with a larger ``max_age`` is as safe as a reload. A window built on a store that lost its
history (a corrupt file set aside, a file that cannot be opened) vouches for nothing stamped
before ``now + max_age``: any older packet might have been admitted by the lost file.

Across reloads (``carried``): a new window starts from the old window's entries and vouch
point, and, on a new store, writes them all to it (``sync``) before it admits anything, so a
new ``state_dir`` knows every packet the old one did, and a new ``max_age`` reopens nothing.

Record, then grant. ``admit`` writes the entry to the store before it returns, so nothing is
granted that a restart could forget; if the write fails the packet is refused, and it stays
used in memory (it was never granted, so at most one later copy could be admitted, after a
restart). Memory is bounded by ``max_entries``; when it is full of unexpired entries, new
packets are refused (fail closed), never admitted unrecorded. Only authenticated packets get
here, so filling it takes a valid key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from knockgate.core.spa import VerifiedRequest
from knockgate.errors import InvalidMessage, KnockgateError

DEFAULT_MARGIN = 60.0
DEFAULT_MAX_ENTRIES = 100_000

Row = tuple[bytes, bytes, int]  # key id, nonce, timestamp


class StoreMoved(KnockgateError):
    """The store's file was deleted, replaced or found corrupt: ``reopened`` makes a new one."""


class ReplayStore(Protocol):
    """Where admitted nonces outlive the process (io/store.py has the SQLite one)."""

    def load(self, not_before: float) -> Iterable[Row]:
        """Every remembered (key id, nonce, timestamp) with timestamp >= ``not_before``."""
        ...

    def vouches_from(self) -> float | None:
        """The oldest timestamp from which the store holds every entry it was given;
        ``-inf`` for a new store, None for one that lost its history."""
        ...

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        """Record durably before returning; False if (key id, nonce) was already recorded.
        Raises StoreMoved if the file is no longer where it was opened."""
        ...

    def remember_all(self, rows: Iterable[Row], vouches_from: float) -> None:
        """Record ``rows`` and the vouch point, in one transaction."""
        ...

    def prune(self, older_than: float) -> int:
        """Forget entries with timestamp < ``older_than`` (and vouch from there on).
        Raises StoreMoved like ``remember``."""
        ...

    def reopened(self) -> ReplayStore:
        """A store on a new file where this one was opened (this one is closed)."""
        ...


class ReplayWindow:
    """Admits each verified packet once; the storage is passed in, the time too."""

    def __init__(self, store: ReplayStore, *, now: float, max_age: float,
                 margin: float = DEFAULT_MARGIN, max_entries: int = DEFAULT_MAX_ENTRIES,
                 carried: ReplayWindow | None = None, store_history: bool = False) -> None:
        """``carried``: the window this one replaces on a reload; its entries carry over, and
        so does its vouch point, unless ``store_history``: the carried window never had this
        store's file (it could not be opened), so the file's own vouch point holds, the
        carried entries covering the time since."""
        if max_age < 0 or margin < 0 or max_entries < 1:
            raise ValueError("max_age and margin must be >= 0 and max_entries >= 1")
        self.max_age = max_age
        self.margin = margin
        self.max_entries = max_entries
        self._store = store
        self._seen: dict[tuple[bytes, bytes], int] = {}
        stored = store.vouches_from()
        if carried is not None:
            self._seen.update(carried._seen)
            history = store_history and stored is not None
            self._vouch = stored if history and stored is not None else carried.vouches_from(now)
        else:
            self._vouch = now + max_age if stored is None else stored
        self._seen.update(((key_id, nonce), timestamp)
                          for key_id, nonce, timestamp in store.load(self._horizon(now)))
        # A lost store lacks the vouch point; a new store lacks the carried entries. The
        # same store has every entry ever granted (record, then grant) and a vouch point no
        # later than the carried one, so a reload on a full disk need not write.
        self._unsynced: bool = stored is None or (carried is not None and (
            carried._unsynced or carried.store is not store))

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def store(self) -> ReplayStore:
        """The store in use: a new one after the old file was deleted, replaced or damaged."""
        return self._store

    def vouches_from(self, now: float) -> float:
        """Every packet ever admitted with a timestamp at or after this is in memory."""
        return max(self._vouch, self._horizon(now))

    def sync(self, now: float) -> None:
        """Write what the store does not know yet (after a reload or a lost store); store
        errors propagate, and every ``admit`` retries it first."""
        if self._unsynced:
            self._store.remember_all(self._rows(), self.vouches_from(now))
            self._unsynced = False

    def admit(self, verified: VerifiedRequest, now: float) -> None:
        """Record ``verified`` as used, durably, or raise: InvalidMessage for a packet that is
        refused, KnockgateError if the store failed. Grant only after it returns."""
        self.admit_entry(verified.key_id, verified.nonce, verified.timestamp, now)

    def seen(self, key_id: bytes, nonce: bytes) -> bool:
        """A cheap look before any crypto (fwknop's rule: replay digest first)."""
        return (key_id, nonce) in self._seen

    def admit_entry(self, key_id: bytes, nonce: bytes, timestamp: int, now: float) -> None:
        """``admit`` for any authenticated (key id, nonce, timestamp), e.g. fwknop digests."""
        try:
            self.sync(now)  # first: a lost store learns the vouch point even from a refusal
            unsynced: KnockgateError | None = None
        except KnockgateError as exc:
            unsynced = exc
        if abs(now - timestamp) > self.max_age:
            raise InvalidMessage("outside replay window")
        entry = (key_id, nonce)
        if entry in self._seen:
            raise InvalidMessage("replay")
        if len(self._seen) >= self.max_entries:
            self._forget_before(self._horizon(now))
            if len(self._seen) >= self.max_entries:
                raise InvalidMessage("replay cache full")
        # Used from here on, even if it is refused below: an authentic packet refused because
        # the cache could not vouch for its time or record its use must not open later, once
        # the store works again (a reload carries this memory over).
        self._seen[entry] = timestamp
        if unsynced is not None:
            raise unsynced
        if timestamp < self._vouch:
            raise InvalidMessage("older than the replay cache can vouch for")
        if not self._record(key_id, nonce, timestamp, now):
            raise InvalidMessage("replay (the store knew it, memory did not)")

    def prune(self, now: float) -> int:
        """Drop entries too old to matter, in memory and in the store: call it periodically.

        Returns how many the store forgot.
        """
        horizon = self._horizon(now)
        self._forget_before(horizon)
        try:
            return self._store.prune(horizon)
        except StoreMoved:
            self._rewrite_store(now)
            return 0

    def _record(self, key_id: bytes, nonce: bytes, timestamp: int, now: float) -> bool:
        try:
            return self._store.remember(key_id, nonce, timestamp)
        except StoreMoved:
            self._rewrite_store(now)  # this entry is in memory already, so written too
            return True

    def _rewrite_store(self, now: float) -> None:
        """The file was deleted, replaced or damaged: a new one gets everything memory knows."""
        self._store = self._store.reopened()
        self._unsynced = True
        self.sync(now)

    def _rows(self) -> list[Row]:
        return [(key_id, nonce, ts) for (key_id, nonce), ts in self._seen.items()]

    def _horizon(self, now: float) -> float:
        return now - self.max_age - self.margin

    def _forget_before(self, horizon: float) -> None:
        self._seen = {entry: ts for entry, ts in self._seen.items() if ts >= horizon}
