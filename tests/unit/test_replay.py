from __future__ import annotations

import math
from collections.abc import Iterable

import pytest

from knockgate.core.replay import ReplayWindow, Row, StoreMoved
from knockgate.core.spa import SpaKey, SpaRequest, VerifiedRequest, make_keyring, open_at, seal_at
from knockgate.errors import InvalidMessage, KnockgateError

NOW = 1_700_000_000
MAX_AGE = 30
MARGIN = 10
ALICE = SpaKey("alice", bytes(32))
SSH = SpaRequest(None, (("tcp", 22),))


class DictStore:
    """A ReplayStore in a dict, with switches to make writes fail, or the file go away."""

    def __init__(self, vouch: float | None = -math.inf) -> None:
        self.rows: dict[tuple[bytes, bytes], int] = {}
        self.vouch = vouch
        self.broken = False
        self.deleted = False

    def load(self, not_before: float) -> Iterable[Row]:
        return [(k, n, ts) for (k, n), ts in self.rows.items() if ts >= not_before]

    def vouches_from(self) -> float | None:
        return self.vouch

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        if self.deleted:
            raise StoreMoved("gone")
        if self.broken:
            raise KnockgateError("disk full")
        if (key_id, nonce) in self.rows:
            return False
        self.rows[key_id, nonce] = timestamp
        return True

    def remember_all(self, rows: Iterable[Row], vouches_from: float) -> None:
        if self.broken:
            raise KnockgateError("disk full")
        self.rows.update(((k, n), ts) for k, n, ts in rows)
        self.vouch = vouches_from

    def prune(self, older_than: float) -> int:
        if self.deleted:
            raise StoreMoved("gone")
        old = [entry for entry, ts in self.rows.items() if ts < older_than]
        for entry in old:
            del self.rows[entry]
        self.vouch = max(older_than, -math.inf if self.vouch is None else self.vouch)
        return len(old)

    def reopened(self) -> DictStore:
        return DictStore()  # a new, empty file


def verified(nonce: int = 1, timestamp: int = NOW, key_id: bytes = b"k" * 8) -> VerifiedRequest:
    return VerifiedRequest(key_id, "alice", timestamp, nonce.to_bytes(12, "big"), SSH)


def window(store: DictStore, now: float = NOW, **kwargs: int) -> ReplayWindow:
    return ReplayWindow(store, now=now, max_age=MAX_AGE, margin=MARGIN, **kwargs)


def rejected(w: ReplayWindow, packet: VerifiedRequest, now: float = NOW) -> str:
    with pytest.raises(InvalidMessage) as caught:
        w.admit(packet, now)
    return caught.value.reason


def test_accepted_once_then_rejected() -> None:
    store = DictStore()
    w = window(store)
    w.admit(verified(), NOW)
    assert store.rows == {(b"k" * 8, (1).to_bytes(12, "big")): NOW}  # on disk before the grant
    assert rejected(w, verified(), NOW + 1) == "replay"


def test_nonce_is_per_key() -> None:
    w = window(DictStore())
    w.admit(verified(key_id=b"a" * 8), NOW)
    w.admit(verified(key_id=b"b" * 8), NOW)
    assert len(w) == 2


def test_a_restart_does_not_reopen_the_window() -> None:
    store = DictStore()
    first = window(store)
    first.admit(verified(), NOW)
    assert rejected(window(store, now=NOW + 5), verified(), NOW + 5) == "replay"


def test_load_skips_entries_past_the_horizon() -> None:
    store = DictStore()
    store.rows = {(b"k" * 8, b"old"): NOW - MAX_AGE - MARGIN - 1, (b"k" * 8, b"new"): NOW}
    assert len(window(store)) == 1


def test_store_is_the_second_line_of_defence() -> None:
    store = DictStore()
    fresh = window(store)
    store.rows[(b"k" * 8, (1).to_bytes(12, "big"))] = NOW  # written behind the window's back
    assert rejected(fresh, verified()) == "replay (the store knew it, memory did not)"
    assert rejected(fresh, verified()) == "replay"


def test_window_checks_age_itself() -> None:
    w = window(DictStore())
    assert rejected(w, verified(timestamp=NOW - MAX_AGE - 1)) == "outside replay window"
    assert rejected(w, verified(timestamp=NOW + MAX_AGE + 1)) == "outside replay window"


def test_prune_forgets_only_past_the_horizon() -> None:
    store = DictStore()
    w = window(store)
    w.admit(verified(1, timestamp=NOW - MAX_AGE), NOW)
    w.admit(verified(2, timestamp=NOW), NOW)
    later = NOW + MARGIN  # entry 1 is now exactly at the horizon: kept
    assert w.prune(later) == 0
    assert w.prune(later + 1) == 1
    assert len(w) == 1
    assert list(store.rows.values()) == [NOW]


def test_a_pruned_packet_is_already_stale() -> None:
    """The safety argument of replay.py, end to end through open_at."""
    keyring = make_keyring([ALICE])
    packet = seal_at(key=ALICE, now=NOW, nonce=bytes(12), request=SSH)
    w = window(DictStore())
    w.admit(open_at(unverified_packet=packet, now=NOW, max_age=MAX_AGE, keyring=keyring), NOW)
    horizon_passed = NOW + MAX_AGE + MARGIN + 1
    w.prune(horizon_passed)
    assert len(w) == 0
    with pytest.raises(InvalidMessage, match="invalid message") as caught:
        open_at(unverified_packet=packet, now=horizon_passed, max_age=MAX_AGE, keyring=keyring)
    assert caught.value.reason == "stale"


def test_full_window_prunes_then_fails_closed() -> None:
    w = window(DictStore(), max_entries=2)
    w.admit(verified(1, timestamp=NOW - MAX_AGE), NOW - MAX_AGE)
    w.admit(verified(2, timestamp=NOW), NOW)
    assert rejected(w, verified(3), NOW) == "replay cache full"
    w.admit(verified(3, timestamp=NOW + MARGIN + 1), NOW + MARGIN + 1)  # entry 1 expired
    assert len(w) == 2


def test_a_failed_write_refuses_the_packet_and_uses_it_up() -> None:
    store = DictStore()
    w = window(store)
    store.broken = True
    with pytest.raises(KnockgateError, match="disk full"):
        w.admit(verified(1), NOW)  # nothing was granted: the record comes first
    assert w.seen(b"k" * 8, (1).to_bytes(12, "big"))
    store.broken = False
    assert rejected(w, verified(1), NOW + 1) == "replay"  # no second try for that packet
    w.admit(verified(2), NOW + 1)
    assert list(store.rows) == [(b"k" * 8, (2).to_bytes(12, "big"))]


# --- what the window vouches for, across reloads and lost stores ------------------------------


def test_raising_max_age_on_a_reload_reopens_no_forgotten_packet() -> None:
    store = DictStore()
    old = window(store)
    old.admit(verified(1, timestamp=NOW), NOW)
    later = NOW + MAX_AGE + MARGIN + 5
    old.prune(later)  # entry 1 forgotten: no copy could be fresh under max_age 30
    assert len(old) == 0
    wide = ReplayWindow(store, now=later, max_age=600, margin=MARGIN, carried=old)
    assert wide.vouches_from(later) == later - MAX_AGE - MARGIN
    assert rejected(wide, verified(1, timestamp=NOW), later) == (
        "older than the replay cache can vouch for")
    wide.admit(verified(2, timestamp=later - 2), later)  # newer than the reload: fine


def test_raising_max_age_across_a_restart_uses_the_stored_vouch_point() -> None:
    store = DictStore()
    old = window(store)
    old.admit(verified(1, timestamp=NOW), NOW)
    later = NOW + MAX_AGE + MARGIN + 5
    old.prune(later)
    assert store.vouch == later - MAX_AGE - MARGIN
    restarted = ReplayWindow(store, now=later, max_age=600, margin=MARGIN)
    assert rejected(restarted, verified(1, timestamp=NOW), later) == (
        "older than the replay cache can vouch for")


def test_lowering_max_age_keeps_every_young_entry() -> None:
    store = DictStore()
    old = ReplayWindow(store, now=NOW, max_age=600, margin=MARGIN)
    old.admit(verified(1, timestamp=NOW), NOW)
    narrow = ReplayWindow(store, now=NOW + 1, max_age=5, margin=MARGIN, carried=old)
    assert rejected(narrow, verified(1, timestamp=NOW), NOW + 1) == "replay"


def test_a_new_store_on_reload_gets_every_carried_entry_before_any_admission() -> None:
    old_store, new_store = DictStore(), DictStore()
    old = window(old_store)
    old.admit(verified(1), NOW)
    moved = window(new_store, now=NOW + 1, carried=old)
    assert new_store.rows == {}
    moved.sync(NOW + 1)
    assert list(new_store.rows) == [(b"k" * 8, (1).to_bytes(12, "big"))]
    assert rejected(moved, verified(1), NOW + 1) == "replay"
    restarted = window(new_store, now=NOW + 2)  # a restart on the new state_dir
    assert rejected(restarted, verified(1), NOW + 2) == "replay"


def test_a_carried_window_whose_store_fails_refuses_until_it_syncs() -> None:
    old = window(DictStore())
    old.admit(verified(1), NOW)
    full = DictStore()
    full.broken = True
    moved = window(full, now=NOW + 1, carried=old)
    with pytest.raises(KnockgateError, match="disk full"):
        moved.sync(NOW + 1)
    with pytest.raises(KnockgateError, match="disk full"):
        moved.admit(verified(2), NOW + 1)  # retries the sync first
    full.broken = False
    # Refused because its use could not be recorded, yet used up: a replay must not open.
    assert rejected(moved, verified(2), NOW + 2) == "replay"
    moved.sync(NOW + 2)
    assert set(full.rows) == {(b"k" * 8, n.to_bytes(12, "big")) for n in (1, 2)}


def test_a_lost_store_vouches_for_nothing_before_now_plus_max_age() -> None:
    lost = DictStore(vouch=None)
    w = window(lost)
    assert w.vouches_from(NOW) == NOW + MAX_AGE
    assert rejected(w, verified(1, timestamp=NOW + MAX_AGE - 1)) == (
        "older than the replay cache can vouch for")
    assert lost.vouch == NOW + MAX_AGE  # written, so a restart knows it too
    w.admit(verified(2, timestamp=NOW + MAX_AGE), NOW + MAX_AGE)


def test_a_deleted_store_is_rewritten_from_memory() -> None:
    store = DictStore()
    w = window(store)
    w.admit(verified(1), NOW)
    store.deleted = True
    w.admit(verified(2), NOW + 1)
    new_store = w._store
    assert isinstance(new_store, DictStore) and new_store is not store
    assert set(new_store.rows) == {(b"k" * 8, n.to_bytes(12, "big")) for n in (1, 2)}
    assert new_store.vouch == w.vouches_from(NOW + 1)
    assert rejected(window(new_store, now=NOW + 2), verified(1), NOW + 2) == "replay"


def test_window_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(DictStore(), now=NOW, max_age=-1)
    with pytest.raises(ValueError):
        ReplayWindow(DictStore(), now=NOW, max_age=30, max_entries=0)


def test_a_deleted_store_is_rewritten_at_the_next_prune_too() -> None:
    store = DictStore()
    w = window(store)
    w.admit(verified(1), NOW)
    store.deleted = True
    assert w.prune(NOW + 1) == 0
    assert w.store is not store
    assert isinstance(w.store, DictStore) and list(w.store.rows) == [
        (b"k" * 8, (1).to_bytes(12, "big"))]
