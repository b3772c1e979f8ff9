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

Failures. The files are created 0600 (the WAL inherits the database's mode). A file that is
not a database, or fails SQLite's quick check, is set aside as ``<file>.corrupt`` and a new
one is made that says it lost its history (core/replay.py then refuses every packet that the
old file might have held). A file deleted, replaced or found corrupt while open is noticed at
the next write or prune (``StoreMoved``): the window writes a new one from memory. A file
that cannot be opened at all is an ``UnavailableStore``, which refuses every write with the
reason, until a reload opens the real one.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from types import TracebackType

from knockgate.core.replay import Row, StoreMoved
from knockgate.errors import ConfigError, KnockgateError

FILE_NAME = "replay.sqlite3"
FWKNOP_FILE_NAME = "fwknop-replay.sqlite3"  # its own file: its own age window and pruning
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replay (
    key_id BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_ts ON replay (ts);
CREATE TABLE IF NOT EXISTS vouch (only INTEGER PRIMARY KEY CHECK (only = 0), since REAL);
"""


class SqliteReplayStore:
    """A ``ReplayStore`` (core/replay.py) in ``<state_dir>/replay.sqlite3``."""

    def __init__(self, state_dir: str | os.PathLike[str],
                 file_name: str = FILE_NAME) -> None:
        # os.path, not pathlib: pathlib (with urllib.parse) held ~0.7 MB of the daemon's memory.
        directory = os.fspath(state_dir)
        _prepare_state_dir(directory)
        self.path = os.path.join(directory, file_name)
        self.set_aside: str | None = None  # where a corrupt file went, for the daemon's log
        self._corrupt = False  # SQLite found it damaged: the next write makes a new file
        with self._errors(f"cannot open the replay store {self.path}"):
            try:
                self._db = _connect(self.path)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorcode", None) not in _CORRUPT:
                    raise
                self.set_aside = _set_aside(self.path)
                self._db = _connect(self.path)
        self._identity = _identity(self.path)

    def load(self, not_before: float) -> list[Row]:
        with self._errors("cannot read the replay store"):
            return self._db.execute(
                "SELECT key_id, nonce, ts FROM replay WHERE ts >= ?", (not_before,)).fetchall()

    def vouches_from(self) -> float | None:
        if self.set_aside is not None:
            return None
        with self._errors("cannot read the replay store"):
            row = self._db.execute("SELECT since FROM vouch").fetchone()
        return -math.inf if row is None else float(row[0])

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        self._check_identity()
        with self._errors("cannot record an SPA nonce"):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO replay (key_id, nonce, ts) VALUES (?, ?, ?)",
                (key_id, nonce, timestamp))
        return cursor.rowcount == 1

    def remember_all(self, rows: Iterable[Row], vouches_from: float) -> None:
        with self._errors(f"cannot write the replay cache to {self.path}"), self._db:
            self._db.execute("BEGIN")  # one transaction
            self._db.executemany(
                "INSERT OR IGNORE INTO replay (key_id, nonce, ts) VALUES (?, ?, ?)", rows)
            self._set_vouch(vouches_from)
        self.set_aside = None

    def prune(self, older_than: float) -> int:
        self._check_identity()
        with self._errors("cannot prune the replay store"):
            with self._db:
                self._db.execute("BEGIN")
                pruned = self._db.execute("DELETE FROM replay WHERE ts < ?",
                                          (older_than,)).rowcount
                # Forgotten entries could be young again under a larger max_age.
                vouched = self.vouches_from()
                self._set_vouch(older_than if vouched is None else max(older_than, vouched))
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return pruned

    def reopened(self) -> SqliteReplayStore:
        self.close()
        directory, file_name = os.path.split(self.path)
        return SqliteReplayStore(directory, file_name)

    def stale(self) -> bool:
        """Deleted, replaced or found corrupt: the file to use is a new one."""
        return self._corrupt or _identity(self.path) != self._identity

    def close(self) -> None:
        self._db.close()

    def _check_identity(self) -> None:
        """Writes to a deleted or damaged file would be lost at the next start: say so."""
        if self.stale():
            raise StoreMoved(f"the replay store {self.path} was deleted, replaced or corrupt")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) in _CORRUPT:
                self._corrupt = True
            raise KnockgateError(f"{what}: {exc}") from exc

    def _set_vouch(self, since: float) -> None:
        # -inf (a store that never forgot anything) is stored as NULL's absence: no row.
        if math.isinf(since):
            self._db.execute("DELETE FROM vouch")
        else:
            self._db.execute("INSERT OR REPLACE INTO vouch (only, since) VALUES (0, ?)",
                             (since,))

    def __enter__(self) -> SqliteReplayStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class UnavailableStore:
    """A ``ReplayStore`` for a file that could not be opened: it lost its history and every
    write fails with the reason, so the window refuses every packet (fail closed)."""

    def __init__(self, path: str, error: KnockgateError) -> None:
        self.path = path
        self.error = error

    def load(self, not_before: float) -> list[Row]:
        return []

    def vouches_from(self) -> None:
        return None

    def remember(self, key_id: bytes, nonce: bytes, timestamp: int) -> bool:
        raise self.error

    def remember_all(self, rows: Iterable[Row], vouches_from: float) -> None:
        raise self.error

    def prune(self, older_than: float) -> int:
        raise self.error

    def reopened(self) -> UnavailableStore:
        return self

    def close(self) -> None:
        pass


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
    _make_private(path)
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
        (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if verdict != "ok":
            error = sqlite3.DatabaseError(f"quick_check: {verdict}")
            error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
            raise error
        _make_private(path + "-wal")  # SQLite made it with the database's mode; make sure
    except sqlite3.Error:
        db.close()
        raise
    return db


def _make_private(path: str) -> None:
    """Create ``path`` 0600 if missing (the -wal one only if present); never through a link."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    if not path.endswith("-wal"):
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise sqlite3.OperationalError(f"{path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _set_aside(path: str) -> str:
    """Move a corrupt database (and its log) out of the way, kept for a post-mortem."""
    aside = path + ".corrupt"
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    return aside


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
