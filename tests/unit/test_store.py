import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from knockgate.core.replay import ReplayWindow
from knockgate.core.spa import SpaRequest, VerifiedRequest
from knockgate.errors import ConfigError, InvalidMessage, KnockgateError
from knockgate.io.store import FILE_NAME, SqliteReplayStore

NOW = 1_700_000_000
KEY_ID = b"k" * 8


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
        first.save()
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


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(KnockgateError, match="cannot open the replay store"):
        SqliteReplayStore(tmp_path)


def test_errors_after_close_are_knockgate_errors(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path)
    store.close()
    with pytest.raises(KnockgateError, match="cannot record") as caught:
        store.remember(KEY_ID, nonce(1), NOW)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
