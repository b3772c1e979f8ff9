from collections.abc import Iterable

import pytest

from knockgate.core.replay import ReplayWindow
from knockgate.core.spa import SpaKey, SpaRequest, VerifiedRequest, make_keyring, open_at, seal_at
from knockgate.errors import InvalidMessage, KnockgateError

NOW = 1_700_000_000
MAX_AGE = 30
MARGIN = 10
ALICE = SpaKey("alice", bytes(32))
SSH = SpaRequest(None, (("tcp", 22),))


class DictStore:
    """A ReplayStore in a dict, with a switch to make writes fail."""

    def __init__(self) -> None:
        self.rows: dict[tuple[bytes, bytes], int] = {}
        self.broken = False

    def load(self, not_before: float) -> Iterable[tuple[bytes, bytes, int]]:
        return [(k, n, ts) for (k, n), ts in self.rows.items() if ts >= not_before]

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        if self.broken:
            raise KnockgateError("disk full")
        if (key_id, nonce) in self.rows:
            return False
        self.rows[key_id, nonce] = timestamp
        return True

    def prune(self, older_than: float) -> int:
        old = [entry for entry, ts in self.rows.items() if ts < older_than]
        for entry in old:
            del self.rows[entry]
        return len(old)


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
    assert rejected(w, verified(), NOW + 1) == "replay"  # refused before any save
    assert store.rows == {}
    assert w.save() == 0
    assert store.rows == {(b"k" * 8, (1).to_bytes(12, "big")): NOW}
    assert w.save() == 0  # nothing left to write


def test_nonce_is_per_key() -> None:
    w = window(DictStore())
    w.admit(verified(key_id=b"a" * 8), NOW)
    w.admit(verified(key_id=b"b" * 8), NOW)
    assert len(w) == 2


def test_a_restart_does_not_reopen_the_window() -> None:
    store = DictStore()
    first = window(store)
    first.admit(verified(), NOW)
    first.save()
    assert rejected(window(store, now=NOW + 5), verified(), NOW + 5) == "replay"


def test_load_skips_entries_past_the_horizon() -> None:
    store = DictStore()
    store.rows = {(b"k" * 8, b"old"): NOW - MAX_AGE - MARGIN - 1, (b"k" * 8, b"new"): NOW}
    assert len(window(store)) == 1


def test_store_is_the_second_line_of_defence() -> None:
    store = DictStore()
    fresh = window(store)
    store.rows[(b"k" * 8, (1).to_bytes(12, "big"))] = NOW  # written behind the window's back
    fresh.admit(verified(), NOW)
    assert fresh.save() == 1  # the caller logs it
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
    w.save()
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


def test_a_failed_save_refuses_every_packet_until_the_store_works() -> None:
    store = DictStore()
    w = window(store)
    w.admit(verified(1), NOW)
    store.broken = True
    with pytest.raises(KnockgateError, match="disk full"):
        w.save()
    with pytest.raises(KnockgateError, match="disk full"):
        w.admit(verified(2), NOW)  # retries the save first, and fails closed
    assert w.seen(b"k" * 8, (1).to_bytes(12, "big"))  # in memory all along
    store.broken = False
    w.admit(verified(2), NOW)  # the retry succeeds: entry 1 is written, 2 admitted
    assert list(store.rows) == [(b"k" * 8, (1).to_bytes(12, "big"))]
    w.save()
    assert len(store.rows) == 2


def test_window_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(DictStore(), now=NOW, max_age=-1)
    with pytest.raises(ValueError):
        ReplayWindow(DictStore(), now=NOW, max_age=30, max_entries=0)
