import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from knockgate.core.replay import ReplayWindow, StoreMoved
from knockgate.core.spa import SpaRequest, VerifiedRequest
from knockgate.errors import ConfigError, InvalidMessage, KnockgateError
from knockgate.io.store import FILE_NAME, SqliteReplayStore, UnavailableStore

NOW = 1_700_000_000
KEY_ID = b"k" * 8
SSH_REQUEST = SpaRequest(None, (("tcp", 22),))


def nonce(n: int) -> bytes:
    return n.to_bytes(12, "big")


def test_creates_a_private_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "lib" / "knockgate"
    with SqliteReplayStore(state):
        pass
    assert (state / FILE_NAME).is_file()
    assert state.stat().st_mode & 0o777 == 0o700


def test_wal_mode_without_fsync_per_commit(tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path) as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_remember_reports_duplicates(tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path) as store:
        assert store.remember(KEY_ID, nonce(1), NOW)
        assert not store.remember(KEY_ID, nonce(1), NOW + 1)
        assert store.remember(b"j" * 8, nonce(1), NOW)


def test_entries_survive_reopening(tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path) as store:
        store.remember(KEY_ID, nonce(1), NOW)
    with SqliteReplayStore(tmp_path) as store:
        assert store.load(NOW - 60) == [(KEY_ID, nonce(1), NOW)]


def test_entries_survive_a_killed_process(tmp_path: Path) -> None:
    child = (
        "import os, signal, sys\n"
        "from knockgate.io.store import SqliteReplayStore\n"
        "store = SqliteReplayStore(sys.argv[1])\n"
        f"store.remember(b'k' * 8, bytes(12), {NOW})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path)], check=False)
    assert result.returncode == -9
    with SqliteReplayStore(tmp_path) as store:
        assert store.load(0) == [(KEY_ID, bytes(12), NOW)]


def test_load_and_prune_by_timestamp(tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path) as store:
        for n, ts in enumerate((NOW - 100, NOW - 50, NOW)):
            store.remember(KEY_ID, nonce(n), ts)
        assert [ts for _, _, ts in store.load(NOW - 50)] == [NOW - 50, NOW]
        assert store.prune(NOW - 50) == 1
        assert store.prune(NOW - 50) == 0
        assert len(store.load(0)) == 2


def test_a_restarted_window_still_rejects_replays(tmp_path: Path) -> None:
    packet = VerifiedRequest(KEY_ID, "alice", NOW, nonce(7), SpaRequest(None, (), 1))
    with SqliteReplayStore(tmp_path) as store:
        first = ReplayWindow(store, now=NOW, max_age=30)
        first.admit(packet, NOW)
    with SqliteReplayStore(tmp_path) as store:
        restarted = ReplayWindow(store, now=NOW + 20, max_age=30)
        with pytest.raises(InvalidMessage) as caught:
            restarted.admit(packet, NOW + 20)
    assert caught.value.reason == "replay"


def test_refuses_a_world_writable_state_dir(tmp_path: Path) -> None:
    tmp_path.chmod(0o1777)
    with pytest.raises(ConfigError, match="world-writable") as caught:
        SqliteReplayStore(tmp_path)
    assert f"chmod o-w {tmp_path}" in str(caught.value)
    assert not (tmp_path / FILE_NAME).exists()


def test_refuses_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot use state_dir"):
        SqliteReplayStore(tmp_path / "file")


@pytest.mark.parametrize("damage", ["not a database", "a damaged page"])
def test_a_corrupt_file_is_set_aside_and_the_new_one_vouches_for_nothing(
        tmp_path: Path, damage: str) -> None:
    path = tmp_path / FILE_NAME
    if damage == "not a database":
        path.write_bytes(b"this is not a database" * 100)
    else:
        with SqliteReplayStore(tmp_path) as store:
            for n in range(300):
                store.remember(KEY_ID, nonce(n), NOW)
            store.prune(0)  # checkpoint: the rows are in the main file now
        data = bytearray(path.read_bytes())
        data[4096:8192] = b"\xff" * 4096  # the second page
        path.write_bytes(bytes(data))
    with SqliteReplayStore(tmp_path) as store:
        assert store.set_aside == f"{path}.corrupt"
        assert store.vouches_from() is None  # core/replay.py: refuse what it might have held
        assert store.load(0) == []
        window = ReplayWindow(store, now=NOW, max_age=30)
        with pytest.raises(InvalidMessage) as caught:
            window.admit(VerifiedRequest(KEY_ID, "alice", NOW, nonce(1), SSH_REQUEST), NOW)
        assert caught.value.reason == "older than the replay cache can vouch for"
        assert store.vouches_from() == NOW + 30
    assert (tmp_path / f"{FILE_NAME}.corrupt").exists()
    with SqliteReplayStore(tmp_path) as reopened:  # a restart keeps the vouch point
        assert reopened.vouches_from() == NOW + 30


def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()
    with pytest.raises(KnockgateError, match="cannot open the replay store"):
        SqliteReplayStore(tmp_path)


def test_files_are_private_even_if_they_were_not(tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path) as store:
        store.remember(KEY_ID, nonce(1), NOW)
        assert (tmp_path / f"{FILE_NAME}-wal").exists()
        for name in (FILE_NAME, f"{FILE_NAME}-wal"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
            (tmp_path / name).chmod(0o644)  # as an older version made them
    with SqliteReplayStore(tmp_path):
        for name in (FILE_NAME, f"{FILE_NAME}-wal"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    assert not list(tmp_path.glob("*-shm"))  # exclusive locking: the WAL index is on the heap


def test_a_symlinked_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / FILE_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KnockgateError, match="cannot open the replay store"):
        SqliteReplayStore(tmp_path)


def test_the_vouch_point_only_rises_by_pruning(tmp_path: Path) -> None:
    with SqliteReplayStore(tmp_path) as store:
        assert store.vouches_from() == -math.inf  # new: it has never forgotten anything
        store.prune(NOW)
        store.prune(NOW - 100)
        assert store.vouches_from() == NOW
        store.remember_all([(KEY_ID, nonce(1), NOW - 50)], NOW - 60)  # a reload's carry-over
        assert store.vouches_from() == NOW - 60
        assert store.load(0) == [(KEY_ID, nonce(1), NOW - 50)]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_file_deleted_or_replaced_is_noticed_at_the_next_write(tmp_path: Path,
                                                                 how: str) -> None:
    with SqliteReplayStore(tmp_path) as store:
        store.remember(KEY_ID, nonce(1), NOW)
        assert not store.stale()
        (tmp_path / FILE_NAME).unlink()
        if how == "replaced":
            (tmp_path / FILE_NAME).write_bytes(b"")
        assert store.stale()
        with pytest.raises(StoreMoved, match="was deleted, replaced or corrupt"):
            store.remember(KEY_ID, nonce(2), NOW)
        with store.reopened() as fresh:
            assert fresh.load(0) == []
            assert fresh.remember(KEY_ID, nonce(2), NOW)


def test_unavailable_store_refuses_every_write() -> None:
    error = KnockgateError("cannot open the replay store x: read-only file system")
    store = UnavailableStore("x", error)
    assert store.load(0) == [] and store.vouches_from() is None
    for write in (lambda: store.remember(KEY_ID, nonce(1), NOW),
                  lambda: store.remember_all([], NOW), lambda: store.prune(NOW)):
        with pytest.raises(KnockgateError) as caught:
            write()
        assert caught.value is error


def test_errors_after_close_are_knockgate_errors(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path)
    store.close()
    with pytest.raises(KnockgateError, match="cannot record") as caught:
        store.remember(KEY_ID, nonce(1), NOW)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


class _DamagedDb:
    """Stands in for a connection whose file SQLite finds damaged mid-run (a real one keeps
    its pages cached under exclusive locking, so it rarely notices before the next open)."""

    def execute(self, *args: object) -> None:
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
        raise error

    def close(self) -> None:
        pass


def test_a_file_found_corrupt_while_open_is_replaced_at_the_next_write(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path)
    window = ReplayWindow(store, now=NOW, max_age=30)
    window.admit(VerifiedRequest(KEY_ID, "alice", NOW, nonce(1), SSH_REQUEST), NOW)
    real_db, store._db = store._db, _DamagedDb()  # type: ignore[assignment]
    with pytest.raises(KnockgateError, match="malformed"):
        window.admit(VerifiedRequest(KEY_ID, "alice", NOW, nonce(2), SSH_REQUEST), NOW)
    assert store.stale()
    real_db.close()
    (tmp_path / FILE_NAME).write_bytes(b"damaged" * 1000)
    window.admit(VerifiedRequest(KEY_ID, "alice", NOW, nonce(3), SSH_REQUEST), NOW)
    assert window.store is not store
    assert (tmp_path / f"{FILE_NAME}.corrupt").exists()
    window.store.close()  # type: ignore[attr-defined]
    with SqliteReplayStore(tmp_path) as reopened:  # every entry memory had, 2 included
        assert sorted(n for _, n, _ in reopened.load(0)) == [nonce(1), nonce(2), nonce(3)]
