"""The SPA replay cache when its disk fails, its file breaks and the config changes under it.

Whatever happens, each captured packet opens at most once: these tests replay one packet
across a full disk, a read-only directory, a corrupt file, a deleted file, and reloads that
change ``max_age`` or ``state_dir``, from the sender and from another address.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from knockgate.core.spa import SpaRequest
from knockgate.io.store import FILE_NAME
from tests.e2e.conftest import SECRET, sealed, send_raw
from tests.support.testbed import CLIENT_V4, CLIENT_V4_OTHER, SERVER_V4

SSH = SpaRequest(ports=(("tcp", 22),))
OPENED = "spa: key alice: opened tcp:22 for "


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def spa_config(tmp_path: Path, state: Path):
    secret_file = tmp_path / "alice.key"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)

    def config(max_age: float = 60, state_dir: Path = state) -> str:
        return f"""
[daemon]
state_dir = "{state_dir}"

[spa]
max_age = {max_age}

[[spa.key]]
name = "alice"
secret_file = "{secret_file}"
open = ["tcp:22"]
open_for = 30
"""
    return config


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def mounted(*argv: str, at: Path) -> Iterator[None]:
    sh("mount", *argv, str(at))
    try:
        yield
    finally:
        sh("umount", "-l", str(at))


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the file system is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    with pytest.raises(OSError) as caught, open(folder / "probe", "wb", buffering=0) as probe:
        probe.write(b"\0" * 4096)
    assert caught.value.errno == errno.ENOSPC
    return filler


def reload(daemon, config_path: Path, text: str) -> None:
    mark = daemon.mark()
    config_path.write_text(text)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("reloaded spa on udp:62201", after=mark)


def outcome(bed, daemon, packet: bytes, source: str = CLIENT_V4) -> str:
    """Send ``packet`` from ``source``: the daemon's log line about it, opened or refused."""
    mark = daemon.mark()
    send_raw(bed, packet, source=source)
    return daemon.wait_for(f"{source} ", after=mark)


def opened_count(daemon, source: str) -> int:
    return sum(f"{OPENED}{source} " in f"{line} " for line in daemon.lines)


def test_a_full_disk_grants_nothing_and_no_reload_or_restart_grants_twice(
        bed, serve, spa_config, state: Path, tmp_path: Path) -> None:
    bed.listen(22)
    with mounted("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", at=state):
        daemon = serve(spa_config())
        filler = fill(state)
        packet = sealed(SSH)
        assert outcome(bed, daemon, packet).endswith(  # no record, no grant
            f"packet from {CLIENT_V4} refused, the replay store failed: cannot record an "
            "SPA nonce: database or disk is full")

        reload(daemon, tmp_path / "knockgate.toml", spa_config())
        assert outcome(bed, daemon, packet, CLIENT_V4_OTHER).endswith("refused: replay")
        filler.unlink()
        assert outcome(bed, daemon, packet, CLIENT_V4_OTHER).endswith("refused: replay")
        for source in (CLIENT_V4, CLIENT_V4_OTHER):
            assert not bed.can_connect(SERVER_V4, 22, source=source)
        fresh = sealed(SSH)
        assert OPENED in outcome(bed, daemon, fresh)  # the store works again: so does SPA
        assert bed.wait_until_open(SERVER_V4, 22) is not None
        daemon.stop()

        restarted = serve(spa_config())
        assert outcome(bed, restarted, fresh, CLIENT_V4_OTHER).endswith("refused: replay")
        assert opened_count(daemon, CLIENT_V4_OTHER) + opened_count(restarted,
                                                                    CLIENT_V4_OTHER) == 0
        assert opened_count(daemon, CLIENT_V4) == 1


def test_a_read_only_state_dir_refuses_spa_and_serves_once_it_is_writable(
        bed, serve, spa_config, state: Path, tmp_path: Path) -> None:
    first = serve(spa_config())
    used = sealed(SSH)
    send_raw(bed, used)
    first.wait_for(OPENED + CLIENT_V4)
    first.stop()

    with mounted("--bind", "-o", "ro", str(state), at=state):
        daemon = serve(spa_config())  # the doors serve; SPA refuses what it cannot record
        daemon.wait_for(f"cannot open the replay store {state / FILE_NAME}")
        assert "refused, the replay store failed" in outcome(bed, daemon, used,
                                                             CLIENT_V4_OTHER)
        assert "refused, the replay store failed" in outcome(bed, daemon, sealed(SSH))
        # `ip netns exec` gave the daemon its own copy of the mount: remove that one too.
        sh("nsenter", f"--target={daemon.process.pid}", "--mount", "umount", str(state))
    reload(daemon, tmp_path / "knockgate.toml", spa_config())  # now writable again
    assert outcome(bed, daemon, used, CLIENT_V4_OTHER).endswith("refused: replay")
    assert OPENED in outcome(bed, daemon, sealed(SSH))
    assert opened_count(daemon, CLIENT_V4_OTHER) == 0, daemon.log


def test_a_corrupt_file_is_set_aside_and_nothing_it_held_is_granted_again(
        bed, serve, spa_config, state: Path) -> None:
    first = serve(spa_config(max_age=10))
    used = sealed(SSH)
    send_raw(bed, used)
    first.wait_for(OPENED + CLIENT_V4)
    first.stop()
    (state / FILE_NAME).write_bytes(os.urandom(8192))
    with contextlib.suppress(FileNotFoundError):
        (state / f"{FILE_NAME}-wal").unlink()

    started = time.time()
    daemon = serve(spa_config(max_age=10))
    daemon.wait_for(f"the replay store {state / FILE_NAME} was corrupt: set aside as "
                    f"{state / FILE_NAME}.corrupt")
    assert outcome(bed, daemon, used, CLIENT_V4_OTHER).endswith(
        "refused: older than the replay cache can vouch for")
    # Any packet stamped before start + max_age might be in the lost file: refused too.
    assert outcome(bed, daemon, sealed(SSH)).endswith(
        "refused: older than the replay cache can vouch for")
    time.sleep(max(0.0, started + 13 - time.time()))
    assert OPENED in outcome(bed, daemon, sealed(SSH))
    assert opened_count(daemon, CLIENT_V4_OTHER) == 0, daemon.log


def test_a_deleted_file_is_rewritten_from_memory_and_a_restart_still_refuses(
        bed, serve, spa_config, state: Path) -> None:
    daemon = serve(spa_config())
    used = sealed(SSH)
    send_raw(bed, used)
    daemon.wait_for(OPENED + CLIENT_V4)
    for name in (FILE_NAME, f"{FILE_NAME}-wal"):
        with contextlib.suppress(FileNotFoundError):
            (state / name).unlink()
    later = sealed(SSH)
    assert OPENED in outcome(bed, daemon, later, CLIENT_V4_OTHER)
    daemon.stop()

    restarted = serve(spa_config())
    assert outcome(bed, restarted, used, CLIENT_V4_OTHER).endswith("refused: replay")
    assert outcome(bed, restarted, later).endswith("refused: replay")
    daemon.wait_for("spa: the replay store file was deleted, replaced or corrupt; wrote a "
                    "new one from memory (2 entries)")


def test_a_reload_that_moves_state_dir_carries_every_used_packet(
        bed, serve, spa_config, state: Path, tmp_path: Path) -> None:
    daemon = serve(spa_config())
    used = sealed(SSH)
    send_raw(bed, used)
    daemon.wait_for(OPENED + CLIENT_V4)
    moved = tmp_path / "moved"
    reload(daemon, tmp_path / "knockgate.toml", spa_config(state_dir=moved))
    assert outcome(bed, daemon, used, CLIENT_V4_OTHER).endswith("refused: replay")
    for name in (FILE_NAME, f"{FILE_NAME}-wal"):  # item 7: private files
        assert (moved / name).stat().st_mode & 0o777 == 0o600, name
    daemon.stop()

    restarted = serve(spa_config(state_dir=moved))
    assert outcome(bed, restarted, used, CLIENT_V4_OTHER).endswith("refused: replay")


def test_raising_max_age_on_a_reload_reopens_no_packet_used_minutes_ago(
        bed, serve, spa_config, tmp_path: Path) -> None:
    """The daemon prunes every 60 s what max_age 5 no longer needs; a reload to 600 must not
    bring it back. Slow: it waits for the first prune (a minute)."""
    first = serve(spa_config(max_age=5))
    used = sealed(SSH, skew=-4)  # as old as max_age 5 allows, to be pruned at the first tick
    send_raw(bed, used)
    first.wait_for(OPENED + CLIENT_V4)
    first.stop()
    time.sleep(2)  # its timestamp is now older than the next daemon's start - max_age

    started = time.time()
    daemon = serve(spa_config(max_age=5))
    time.sleep(max(0.0, started + 64 - time.time()))  # the first prune forgot it
    reload(daemon, tmp_path / "knockgate.toml", spa_config(max_age=600))
    assert outcome(bed, daemon, used, CLIENT_V4_OTHER).endswith(
        "refused: older than the replay cache can vouch for")
    assert OPENED in outcome(bed, daemon, sealed(SSH))  # new packets are welcome
