"""The SPA replay cache on disk: one SQLite file under the state directory.

Durability without an fsync on the packet path. The database runs in WAL mode with
``synchronous=NORMAL``: a commit appends to the write-ahead log with write(2) and returns; the
fsync happens at checkpoints, off the per-packet path. What that guarantees:

* once ``remember`` returns, the entry survives the daemon crashing or being killed, because
  the data is in the kernel's page cache, which a process death does not lose;
* a power loss or kernel crash may lose the last commits (never corrupts the file).

The cost of that last case: after such a crash, a packet admitted in the final moments before
it could be admitted once more, and only while ``|now - its timestamp| <= max_age``. The host
must reboot and the daemon restart inside that window (tens of seconds), and the replayed
request asks for the same thing for the same user. We take that over an fsync (milliseconds on
many disks) stalling every grant. ``synchronous=FULL`` would close it, at that price.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from types import TracebackType

from knockgate.errors import ConfigError, KnockgateError

FILE_NAME = "replay.sqlite3"
FWKNOP_FILE_NAME = "fwknop-replay.sqlite3"  # its own file: its own age window and pruning

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replay (
    key_id BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_ts ON replay (ts);
"""


class SqliteReplayStore:
    """A ``ReplayStore`` (core/replay.py) in ``<state_dir>/replay.sqlite3``."""

    def __init__(self, state_dir: str | os.PathLike[str],
                 file_name: str = FILE_NAME) -> None:
        # os.path, not pathlib: pathlib (with urllib.parse) held ~0.7 MB of the daemon's memory.
        directory = os.fspath(state_dir)
        _prepare_state_dir(directory)
        self.path = os.path.join(directory, file_name)
        with _errors(f"cannot open the replay store {self.path}"):
            self._db = _connect(self.path)

    def load(self, not_before: float) -> list[tuple[bytes, bytes, int]]:
        with _errors("cannot read the replay store"):
            return self._db.execute(
                "SELECT key_id, nonce, ts FROM replay WHERE ts >= ?", (not_before,)).fetchall()

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        with _errors("cannot record an SPA nonce"):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO replay (key_id, nonce, ts) VALUES (?, ?, ?)",
                (key_id, nonce, timestamp))
        return cursor.rowcount == 1

    def prune(self, older_than: float) -> int:
        with _errors("cannot prune the replay store"):
            pruned = self._db.execute("DELETE FROM replay WHERE ts < ?", (older_than,)).rowcount
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return pruned

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteReplayStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _prepare_state_dir(directory: str) -> None:
    """Create the directory (mode 0700) if needed; refuse one that anybody may write to."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        mode = os.stat(directory).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot use state_dir {directory}: {exc.strerror}",
                          hint="set state_dir to a directory the daemon can create") from exc
    if mode & stat.S_IWOTH:
        # Anyone could replace or delete the replay cache and so replay recent packets.
        raise ConfigError(f"state_dir {directory} is world-writable",
                          hint=f"run 'chmod o-w {directory}' or choose a directory only "
                               "root can write to")


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: one transaction per call
    try:
        (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise sqlite3.OperationalError(f"the file system refused WAL mode ({mode})")
        db.execute("PRAGMA synchronous=NORMAL")
        # One process owns the file: no per-transaction file locks, the WAL index on the heap.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        # Checkpoints fsync; they run from prune() on a timer, never on the packet path.
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise KnockgateError(f"{what}: {exc}") from exc
